"""Every `nexus` command turns an expected error — a bad setting, Redis or the database
unreachable, production without keys, an unknown provider or installation — into one line and a
non-zero exit, without a traceback (`--debug` shows it). Real subprocesses, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nexus_core.testing import free_port


@pytest.fixture
def base_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEXUS_", "REDIS_", "INTEGRATION_", "LOG_"))}
    env.update(NEXUS_DATABASE_URL=f"sqlite:///{tmp_path / 'n.db'}",
               NEXUS_KEY_FILE=str(tmp_path / "key"), NEXUS_SINK_DIR=str(tmp_path / "sink"),
               NO_COLOR="1")
    return env


def nexus(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "nexus_core.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_line_error(result, *needles):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


COMMANDS = [("stats",), ("sync", "backfill", "example", "-t", "t", "-i", "i"),
            ("run-worker", "--burst", "--workers", "1"), ("serve", "--port", "1"),
            ("dlq", "list")]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_redis_url_with_a_bad_port_is_one_line(base_env, args):
    """Defect 5: the port was never validated; every command gave a traceback."""
    env = {**base_env, "REDIS_URL": "redis://localhost:abc/0"}
    one_line_error(nexus(env, *args), "REDIS_URL has an invalid port")


@pytest.mark.parametrize("args", [("stats",), ("sync", "backfill", "example", "-t", "t", "-i",
                                                       "i"), ("dlq", "list")],
                         ids=lambda a: a[0])
def test_unreachable_redis_is_one_line_and_debug_shows_the_traceback(base_env, args):
    env = {**base_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    one_line_error(nexus(env, *args), "Redis at redis://127.0.0.1:", "is unreachable",
                   "check REDIS_URL")
    debug = nexus(env, "--debug", *args)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_redis_password_never_appears_in_the_error(base_env):
    env = {**base_env, "REDIS_URL": f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"}
    line = one_line_error(nexus(env, "stats"), "is unreachable")
    assert "hunter2" not in line and "***" in line


def test_an_unreachable_database_is_one_line(base_env):
    env = {**base_env,
           "NEXUS_DATABASE_URL": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"}
    one_line_error(nexus(env, "installs", "list"), "is unreachable", "NEXUS_DATABASE_URL")


def test_an_unknown_installation_is_one_line(base_env, redis_url):
    env = {**base_env, "REDIS_URL": redis_url}
    one_line_error(nexus(env, "sync", "backfill", "example", "-t", "t", "-i", "nope"),
                   "installation 'nope' not found for tenant 't'")
    one_line_error(nexus(env, "sync", "backfill", "nope", "-t", "t", "-i", "i"),
                   "unknown provider 'nope'")


@pytest.mark.parametrize("args", [("serve", "--port", "{port}"),
                                  ("run-worker", "--burst", "--workers", "1"),
                                  ("scheduler",)], ids=lambda a: a[0])
def test_production_without_encryption_keys_refuses_to_start(base_env, redis_url, args):
    """Defect 6: `nexus serve` and `nexus run-worker` started anyway."""
    env = {**base_env, "REDIS_URL": redis_url, "NEXUS_ENV": "production"}
    args = tuple(a.replace("{port}", str(free_port())) for a in args)
    one_line_error(nexus(env, *args, timeout=30),
                   "NEXUS_ENCRYPTION_KEYS is not set and NEXUS_ENV=production")


def test_malformed_encryption_keys_stop_a_worker_at_start(base_env, redis_url):
    env = {**base_env, "REDIS_URL": redis_url, "NEXUS_ENCRYPTION_KEYS": "not-a-key"}
    one_line_error(nexus(env, "run-worker", "--burst", "--workers", "1"),
                   "NEXUS_ENCRYPTION_KEYS must hold base64url-encoded 32-byte keys")


def test_an_infinite_body_cap_stops_serve_with_one_line(base_env):
    """Defect 4: NEXUS_WEBHOOK_MAX_BODY=inf crashed `nexus serve` with a traceback."""
    env = {**base_env, "NEXUS_WEBHOOK_MAX_BODY": "inf"}
    one_line_error(nexus(env, "serve", "--port", str(free_port())), "NEXUS_WEBHOOK_MAX_BODY")


@pytest.mark.parametrize("how", ["env", "flag"])
@pytest.mark.parametrize("level", ["SUCCESS", "CRITICAL", "trace"])
def test_every_documented_log_level_is_accepted(base_env, how, level):
    """Defect 7: LOG_LEVEL=SUCCESS / CRITICAL, documented as valid, were a usage error."""
    if how == "env":
        result = nexus({**base_env, "LOG_LEVEL": level}, "plugins", "list")
    else:
        result = nexus(base_env, "--log-level", level, "plugins", "list")
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout


def test_log_level_from_dotenv_applies_to_the_cli(base_env, tmp_path):
    (tmp_path / ".env").write_text("LOG_LEVEL=ERROR\n")
    result = subprocess.run([sys.executable, "-m", "nexus_core.cli", "keys", "status"],
                            capture_output=True, text=True, timeout=60, env=base_env,
                            cwd=tmp_path)
    # the development key warning is a WARNING: hidden at ERROR
    assert "generated a development key" not in result.stderr


def test_library_use_honours_log_level(base_env, tmp_path):
    """Library use (IntegrationService from Python) printed DEBUG lines at LOG_LEVEL=WARNING;
    an application's own loguru set-up is left alone."""
    code = (
        "from loguru import logger\n"
        "from nexus_core import IntegrationService\n"
        "IntegrationService().initialize()\n"
        "logger.debug('DEBUG-PROBE'); logger.warning('WARNING-PROBE')\n"
    )
    env = {**base_env, "LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "WARNING-PROBE" in out.stderr and "DEBUG-PROBE" not in out.stderr
    own = ("import sys\nfrom loguru import logger\nlogger.remove()\n"
           "logger.add(sys.stderr, format='APP {message}', level='DEBUG')\n") + code
    out = subprocess.run([sys.executable, "-c", own], capture_output=True, text=True,
                         env=env, timeout=60)
    assert "APP DEBUG-PROBE" in out.stderr  # the application's choice wins
