"""`pip install plugins/nexus-salesforce` alone works: in a fresh virtualenv that has only
nexus-core, the one command brings its dependency (defusedxml), `nexus providers list` shows
the provider from its distribution, and an Outbound Message is read — no test extra needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1]
ROOT = PLUGIN.parents[1]

pytestmark = pytest.mark.slow


def test_the_plugin_installs_alone_and_is_listed(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, nexus = venv / "bin" / "python", venv / "bin" / "nexus"

    def pip(*args):
        done = subprocess.run([str(python), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *args],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]

    pip(str(ROOT))  # the SDK, as a user has it
    pip(str(PLUGIN))  # then the plugin, alone
    listed = subprocess.run([str(nexus), "providers", "list"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("salesforce"))
    assert row.split()[:4] == ["salesforce", "Salesforce", "0.1.0", "nexus-salesforce"]
    assert "Account, Contact, Opportunity" in row
    plugins = subprocess.run([str(nexus), "plugins", "list"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert "salesforce" in plugins.stdout and "skipped" not in plugins.stdout, plugins.stdout
    sample = (PLUGIN / "tests" / "test_parsers.py").read_text().split('SAMPLE = b"""')[1] \
        .split('"""')[0]
    check = subprocess.run(
        [str(python), "-c", "import sys; from nexus_salesforce import outbound; "
         "m = outbound.parse(sys.stdin.buffer.read()); print(m.organization_id)"],
        input=sample.encode(), capture_output=True, timeout=60)
    assert check.returncode == 0 and check.stdout.decode().strip() == "00D8c000002JHMDEA4", \
        check.stderr.decode()[-2000:]
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True,
                            text=True, timeout=120).stdout.lower()
    assert "defusedxml==" in freeze and "pytest" not in freeze and "hypothesis" not in freeze
