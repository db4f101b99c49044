"""Settings: the seed's variable names, .env support, and errors that name the variable."""

import pytest

from nexus_core.config import SETTINGS, load_settings
from nexus_core.errors import ConfigError


def test_defaults():
    s = load_settings({}, env_file=None)
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.worker_concurrency, s.max_retries, s.backoff_delay_ms) == (5, 3, 2000)
    assert s.database_url == "sqlite:///nexus.db" and s.log_level == "INFO"
    assert s.load_plugins is None and s.disable_plugins == ()


def test_redis_parts_build_a_url_and_redis_url_wins():
    parts = {"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_DB": "2", "REDIS_PASSWORD": "p@ss"}
    assert load_settings(parts, env_file=None).redis_url == "redis://:p%40ss@cache:6380/2"
    both = {**parts, "REDIS_URL": "redis://other:1/0"}
    assert load_settings(both, env_file=None).redis_url == "redis://other:1/0"


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    env = tmp_path / ".env"
    env.write_text("INTEGRATION_MAX_RETRIES=7\nLOG_LEVEL=debug\nHUBSPOT_CLIENT_ID=abc\n")
    s = load_settings({"LOG_LEVEL": "warning"}, env_file=env)
    assert s.max_retries == 7 and s.log_level == "WARNING" and s.get("HUBSPOT_CLIENT_ID") == "abc"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("INTEGRATION_MAX_RETRIES", "three", "INTEGRATION_MAX_RETRIES must be an integer, got 'three'"),
        ("INTEGRATION_WORKER_CONCURRENCY", "0", "INTEGRATION_WORKER_CONCURRENCY must be >= 1"),
        ("INTEGRATION_BACKOFF_DELAY", "-5", "INTEGRATION_BACKOFF_DELAY must be >= 0"),
        ("REDIS_PORT", "x", "REDIS_PORT must be an integer"),
        ("REDIS_URL", "http://h", "REDIS_URL must start with redis://"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL must be one of"),
        ("NEXUS_LOG_FORMAT", "xml", "NEXUS_LOG_FORMAT must be one of pretty, json"),
        ("NEXUS_DATABASE_URL", "mysql://u:pw@h/db", "NEXUS_DATABASE_URL must be a sqlite"),
        ("NEXUS_ENV", "prod", "NEXUS_ENV must be one of"),
    ],
)
def test_bad_value_is_a_clear_error_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        load_settings({name: value}, env_file=None)
    assert "pw" not in str(err.value)


def test_plugin_allow_and_deny_lists():
    s = load_settings({"NEXUS_LOAD_PLUGINS": "hubspot, slack", "NEXUS_DISABLE_PLUGINS": "x"},
                      env_file=None)
    assert s.load_plugins == ("hubspot", "slack") and s.disable_plugins == ("x",)


def test_every_documented_setting_is_unique():
    names = [s.env for s in SETTINGS]
    assert len(names) == len(set(names))
