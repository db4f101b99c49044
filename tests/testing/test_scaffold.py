"""`nexus new-provider`: the scaffold generates a distribution that installs, loads and passes the
standard connector suite in a fresh virtualenv — and plugins/nexus-example is that scaffold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nexus_core.cli import cli
from nexus_core.scaffold import render, tokens

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plugins" / "nexus-example"


def test_the_example_plugin_is_the_template_rendered():
    """What an author starts from is what CI runs: `python scripts/gen_example_plugin.py`
    (`make docs`) regenerates plugins/nexus-example after a template change."""
    rendered = render("example")
    for rel, text in rendered.items():
        path = EXAMPLE / rel
        assert path.is_file(), f"missing {rel}: run `make docs`"
        assert path.read_text() == text, f"{rel} differs from the template: run `make docs`"
    tracked = subprocess.run(["git", "ls-files", "plugins/nexus-example"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    extra = {t.removeprefix("plugins/nexus-example/") for t in tracked} - set(rendered)
    assert not extra, f"files in plugins/nexus-example the template lacks: {extra}"


def test_names_become_valid_python_and_distribution_names():
    t = tokens("acme-crm")
    assert (t["package"], t["dist"], t["Class"], t["ENV"], t["Title"]) == \
        ("nexus_acme_crm", "nexus-acme-crm", "AcmeCrm", "ACME_CRM", "Acme Crm")
    for bad in ("Acme", "1acme", "acme_crm", "acme--crm", "-acme", "", "a" * 41, "acme/../x"):
        result = CliRunner().invoke(cli, ["new-provider", "-o", "/nonexistent", "--", bad])
        assert result.exit_code == 1 and "must be a lower-case slug" in result.output, bad


def test_an_existing_directory_is_not_overwritten(tmp_path):
    assert CliRunner().invoke(cli, ["new-provider", "acme", "-o", str(tmp_path)]).exit_code == 0
    (tmp_path / "nexus-acme" / "mine.txt").write_text("keep")
    again = CliRunner().invoke(cli, ["new-provider", "acme", "-o", str(tmp_path)])
    assert again.exit_code == 1 and "--force" in again.output
    assert (tmp_path / "nexus-acme" / "mine.txt").read_text() == "keep"
    forced = CliRunner().invoke(cli, ["new-provider", "acme", "-o", str(tmp_path), "--force"])
    assert forced.exit_code == 0


@pytest.mark.slow
def test_a_generated_provider_passes_the_standard_suite_in_a_fresh_virtualenv(tmp_path):
    generated = CliRunner().invoke(cli, ["new-provider", "acme-crm", "-o", str(tmp_path)])
    assert generated.exit_code == 0, generated.output
    plugin = tmp_path / "nexus-acme-crm"
    assert {p.relative_to(plugin).as_posix() for p in plugin.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "CHANGELOG.md", "nexus_acme_crm/__init__.py",
        "nexus_acme_crm/connector.py", "nexus_acme_crm/simulator.py",
        "tests/test_connector.py"}
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff:  # the generated code is as clean as ours
        lint = subprocess.run([ruff, "check", "--config", str(ROOT / "pyproject.toml"),
                               str(plugin)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(ROOT), f"{plugin}[test]"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                           cwd=plugin, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "12 passed" in tests.stdout, tests.stdout[-500:]
    listed = subprocess.run([str(venv / "bin" / "nexus"), "providers", "list"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "acme-crm" in listed.stdout, listed.stderr
    assert "nexus-acme-crm" in listed.stdout
