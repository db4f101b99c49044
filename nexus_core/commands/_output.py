"""Small output helpers shared by the commands: JSON for machines, aligned tables for people."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from nexus_core.errors import NexusError


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if n == 0 else line)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the SDK's errors into a one-paragraph message and exit status 1 (no traceback)."""
    try:
        yield
    except NexusError as exc:
        raise click.ClickException(exc.one_line()) from None
