"""Regenerate plugins/nexus-example from the scaffold template (``nexus new-provider example``):
the example plugin IS the template, so what an author starts from is what CI runs.

    python scripts/gen_example_plugin.py        # or: make docs
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nexus_core.scaffold import render

TARGET = Path(__file__).resolve().parents[1] / "plugins" / "nexus-example"
KEEP = {"nexus_example.egg-info", "__pycache__", ".pytest_cache"}


def main() -> None:
    files = render("example")
    for child in TARGET.iterdir():
        if child.name in KEEP:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    for rel, text in files.items():
        path = TARGET / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    main()
