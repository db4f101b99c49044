"""docs/models.md is generated from the attrs classes (`make docs`) and every public model field
is documented — the same discipline as the hooks reference and the settings table."""

import runpy
from pathlib import Path

import attrs
import pytest

from nexus_core import models

ROOT = Path(__file__).resolve().parents[2]
GEN = runpy.run_path(str(ROOT / "scripts" / "gen_model_docs.py"))


def test_the_models_reference_is_current():
    assert (ROOT / "docs" / "models.md").read_text() == GEN["render"](), "run `make docs`"


def test_every_public_model_is_in_the_reference():
    import nexus_core

    public = {n for n in nexus_core.__all__
              if attrs.has(getattr(models, n, None) or object)}
    assert public <= set(GEN["CLASSES"]), public - set(GEN["CLASSES"])


@pytest.mark.parametrize("name", GEN["CLASSES"])
def test_every_field_is_documented(name):
    cls = getattr(models, name)
    docs = GEN["field_docs"](cls)
    undocumented = [f.name for f in attrs.fields(cls) if not docs.get(f.name, ("", ""))[1]]
    assert not undocumented, f"{name}: add a `#:` comment above {undocumented}"
