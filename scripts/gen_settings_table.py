"""Rewrite the configuration table in README.md from nexus_core.config.SETTINGS.

    python scripts/gen_settings_table.py        # or: make docs
"""

from __future__ import annotations

import re
from pathlib import Path

from nexus_core.config import SETTINGS

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render() -> str:
    rows = ["| Variable | Default | Meaning | Accepts |", "|---|---|---|---|"]
    rows += [f"| `{s.env}` | {s.default or ''} | {s.help} | {s.accepts} |" for s in SETTINGS]
    return "\n".join(rows)


def updated(text: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{render()}\n{END}", text)


if __name__ == "__main__":
    README.write_text(updated(README.read_text()))
