"""The CLI's contract: fast help, clear errors, exit codes."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from nexus_core.cli import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "nexus_core.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})


def test_version():
    from nexus_core import __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_command_groups():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "plugins" in result.output and "providers" in result.output


def test_cli_import_pulls_no_heavy_modules():
    code = (
        "import sys, nexus_core.cli; "
        "from click.testing import CliRunner; "
        "CliRunner().invoke(nexus_core.cli.cli, ['--help']); "
        "CliRunner().invoke(nexus_core.cli.cli, ['plugins', 'list']); "
        "heavy = [m for m in ('requests', 'rq', 'sqlalchemy', 'redis', 'falcon', 'cryptography') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_provider_exits_nonzero_listing_known_ids():
    result = run("providers", "show", "nope")
    assert result.returncode == 1
    assert "unknown provider 'nope'" in result.stderr
    assert "known providers: example" in result.stderr


def test_providers_show_json():
    result = run("providers", "show", "example", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["id"] == "example" and data["supports_webhooks"] is True
    assert data["distribution"] == "nexus-example" and data["streams"] == ["widgets", "gadgets"]


def test_bad_setting_is_a_clear_startup_error():
    result = subprocess.run([sys.executable, "-m", "nexus_core.cli", "plugins", "list"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "INTEGRATION_MAX_RETRIES": "lots"})
    assert result.returncode == 1
    assert "INTEGRATION_MAX_RETRIES must be an integer >= 0 and <= 100, got 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
