"""Settings: the seed's variable names, .env support, one typed object, and errors that name the
variable — never a traceback, never a silent default."""

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_core.config import SETTINGS, Number, Settings, load_settings, parse_setting
from nexus_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    s = load_settings({}, env_file=None)
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.worker_concurrency, s.max_retries, s.backoff_delay_ms) == (5, 3, 2000)
    assert s.database_url == "sqlite:///nexus.db" and s.log_level == "INFO"
    assert s.load_plugins is None and s.disable_plugins == ()
    assert s.webhook_tolerance == 300.0 and s.webhook_dedupe_ttl == 259200
    assert s.webhook_max_body == 1048576 and s.public_url is None


def test_every_default_parses_to_the_settings_class_default():
    """The table's defaults and the dataclass's defaults are one truth."""
    parsed = load_settings({}, env_file=None)
    bare = Settings()
    for setting in SETTINGS:
        assert getattr(parsed, setting.field) == getattr(bare, setting.field), setting.env


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


def test_empty_value_means_the_default():
    s = load_settings({"NEXUS_WEBHOOK_TOLERANCE": "", "INTEGRATION_MAX_RETRIES": "  "},
                      env_file=None)
    assert s.webhook_tolerance == 300.0 and s.max_retries == 3


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("INTEGRATION_MAX_RETRIES", "three",
         "INTEGRATION_MAX_RETRIES must be an integer >= 0 and <= 100, got 'three'"),
        ("INTEGRATION_WORKER_CONCURRENCY", "0",
         "INTEGRATION_WORKER_CONCURRENCY must be an integer >= 1"),
        ("INTEGRATION_BACKOFF_DELAY", "-5", "INTEGRATION_BACKOFF_DELAY must be an integer"),
        ("REDIS_PORT", "x", "REDIS_PORT must be an integer"),
        ("REDIS_URL", "http://h", "REDIS_URL must be a redis://, rediss:// or unix:// URL"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL must be one of"),
        ("NEXUS_LOG_FORMAT", "xml", "NEXUS_LOG_FORMAT must be one of pretty, json"),
        ("NEXUS_DATABASE_URL", "mysql://u:pw@h/db", "NEXUS_DATABASE_URL must be a sqlite"),
        ("NEXUS_ENV", "prod", "NEXUS_ENV must be one of"),
        # Defect 4: non-finite numbers were accepted.
        ("NEXUS_WEBHOOK_TOLERANCE", "nan", "NEXUS_WEBHOOK_TOLERANCE must be a number of seconds"),
        ("NEXUS_WEBHOOK_TOLERANCE", "inf", "NEXUS_WEBHOOK_TOLERANCE must be a number of seconds"),
        ("NEXUS_WEBHOOK_TOLERANCE", "1e999", "NEXUS_WEBHOOK_TOLERANCE must be a number"),
        ("NEXUS_WEBHOOK_DEDUPE_TTL", "nan", "NEXUS_WEBHOOK_DEDUPE_TTL must be an integer"),
        ("NEXUS_WEBHOOK_DEDUPE_TTL", "0.5", "NEXUS_WEBHOOK_DEDUPE_TTL must be an integer"),
        ("NEXUS_WEBHOOK_MAX_BODY", "inf", "NEXUS_WEBHOOK_MAX_BODY must be an integer of bytes"),
        ("NEXUS_BREAKER_COOLDOWN", "-inf", "NEXUS_BREAKER_COOLDOWN must be a number"),
        ("NEXUS_OAUTH_STATE_TTL", "0", "NEXUS_OAUTH_STATE_TTL must be a number of seconds > 0"),
        # Defect 5: the port of REDIS_URL was never validated.
        ("REDIS_URL", "redis://localhost:abc/0", "REDIS_URL has an invalid port"),
        ("REDIS_URL", "redis://localhost:99999/0", "REDIS_URL has an invalid port"),
        ("REDIS_URL", "redis://localhost:6379/x", "REDIS_URL has database 'x'"),
        ("REDIS_URL", "redis://:6379/0", "REDIS_URL has no host"),
        ("NEXUS_PUBLIC_URL", "hooks.example.com", "NEXUS_PUBLIC_URL must be an http"),
        ("NEXUS_PUBLIC_URL", "https://h.example/?x=1", "without ?query"),
        ("NEXUS_SINK", "s3", "NEXUS_SINK must be one or more of jsonl, sql, http, null"),
        ("NEXUS_SINK", "sql,nope", "NEXUS_SINK must be one or more of"),
        ("NEXUS_SINK_DIR", "a\nb", "NEXUS_SINK_DIR must be a directory path without control"),
    ],
)
def test_bad_value_is_a_clear_error_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_settings({name: value}, env_file=None)
    assert "pw" not in str(err.value)
    assert "\n" not in str(err.value)


def test_a_long_bad_value_is_shown_shortened():
    with pytest.raises(ConfigError) as err:
        load_settings({"INTEGRATION_MAX_RETRIES": "9" * 10_000}, env_file=None)
    assert len(str(err.value)) < 200


def test_log_levels_documented_as_valid_are_valid():
    for level in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"):
        assert load_settings({"LOG_LEVEL": level.lower()}, env_file=None).log_level == level


def test_plugin_allow_and_deny_lists():
    s = load_settings({"NEXUS_LOAD_PLUGINS": "hubspot, slack", "NEXUS_DISABLE_PLUGINS": "x"},
                      env_file=None)
    assert s.load_plugins == ("hubspot", "slack") and s.disable_plugins == ("x",)


def test_every_documented_setting_is_unique():
    names = [s.env for s in SETTINGS]
    assert len(names) == len(set(names))
    fields = [s.field for s in SETTINGS]
    assert len(fields) == len(set(fields))


def _code() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "nexus_core").rglob("*.py"))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_read_by_the_code(setting):
    """A documented setting nobody reads is a lie in the README (INTEGRATION_WORKER_CONCURRENCY
    was one); modules read the typed field, never the variable by name."""
    assert re.search(rf"\.{setting.field}\b", _code()), f"nothing reads settings.{setting.field}"


def test_no_module_parses_a_core_variable_by_name():
    code = _code()
    assert "get_parsed(" not in code
    for setting in SETTINGS:
        for match in re.finditer(rf"\.get\(\s*[\"']{setting.env}[\"']", code):
            pytest.fail(f"{setting.env} read by name: {match.group(0)}")


# -- property-based: operator input never gives a traceback or a silent default ------------------

_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[+-]?[0-9]{0,400}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-0", "0x10", "1_000",
                     "١٢٣", " 12 ", "redis://h:abc/0", "redis://[::1", "unix://", "\x00"]),
)


@settings(max_examples=150, deadline=None)
@given(setting=st.sampled_from(SETTINGS), raw=_text)
def test_any_text_is_accepted_within_bounds_or_refused_in_one_line(setting, raw):
    try:
        value = parse_setting(setting.env, raw)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(setting.env) and "\n" not in text
        return
    if isinstance(setting.parse, Number):
        assert isinstance(value, int if setting.parse.integer else float)
        assert math.isfinite(value)
        assert setting.parse.low <= value <= setting.parse.high


@settings(max_examples=60, deadline=None)
@given(port=st.one_of(st.integers(-10, 70000).map(str), st.text(max_size=6)))
def test_redis_url_port_is_validated(port):
    url = f"redis://localhost:{port}/0"
    try:
        s = load_settings({"REDIS_URL": url}, env_file=None)
    except ConfigError as exc:
        assert str(exc).startswith("REDIS_URL")
        return
    # Accepted: redis-py must be able to use it as is.
    import redis

    pool = redis.ConnectionPool.from_url(s.redis_url)
    assert 1 <= int(pool.connection_kwargs.get("port", 6379)) <= 65535


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(st.text(max_size=120),
                     st.lists(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789-_=", min_size=0, max_size=50),
                              max_size=3).map(",".join)))
def test_encryption_keys_load_or_refuse_in_one_line(raw, tmp_path_factory):
    from nexus_core.crypto import keyring_from_settings

    env = {"NEXUS_ENCRYPTION_KEYS": raw, "NEXUS_KEY_FILE": str(tmp_path_factory.mktemp("k") / "k")}
    try:
        settings_ = load_settings(env, env_file=None)
        ring = keyring_from_settings(settings_)
    except ConfigError as exc:
        assert str(exc).startswith("NEXUS_ENCRYPTION_KEYS") and "\n" not in exc.message
        return
    assert ring.decrypt(ring.encrypt(b"x", b"ad"), b"ad") == b"x"
