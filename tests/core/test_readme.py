"""The README stays true: its configuration table is generated from SETTINGS (`make docs`)."""

import runpy
from pathlib import Path

import pytest

from nexus_core.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
GEN = runpy.run_path(str(ROOT / "scripts" / "gen_settings_table.py"))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_documented_in_the_readme(setting):
    assert f"| `{setting.env}` |" in README


def test_readme_table_matches_settings():
    assert GEN["updated"](README) == README, "run `make docs`"
