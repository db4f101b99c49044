"""The README stays true: every setting is in its configuration table."""

from pathlib import Path

import pytest

from nexus_core.config import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_documented_in_the_readme(setting):
    assert f"| `{setting.env}` |" in README
