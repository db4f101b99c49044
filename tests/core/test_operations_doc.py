"""docs/operations.md stays true to the code: every variable it names is a setting the core
reads, and every `nexus ...` command line it shows names a real command, subcommand and
options."""

import re
import shlex
from pathlib import Path

import click
import pytest

from nexus_core.cli import cli
from nexus_core.config import SETTINGS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
#: Named in the doc but read by the test suite or a provider plugin, not the core.
NOT_CORE = {"NEXUS_TEST_POSTGRES_URL"}


def test_every_variable_the_operations_guide_names_is_a_setting():
    named = set(re.findall(r"\b(?:NEXUS|REDIS|INTEGRATION)_[A-Z_]*[A-Z]\b", DOC))
    assert named, "the guide names no setting?"
    unknown = named - {s.env for s in SETTINGS} - NOT_CORE
    assert not unknown, f"docs/operations.md names settings that do not exist: {sorted(unknown)}"


def _command_lines():
    spans = re.findall(r"`(nexus [^`\n]+)`", DOC)
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", DOC, re.S | re.M)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("nexus ")]
    for text in spans + lines:
        text = text.split("#")[0].strip()
        yield text


def _resolve(words):
    command: click.Command = cli
    ctx = click.Context(cli, info_name="nexus")
    path = []
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command `nexus {' '.join([*path, name])}`"
        path.append(name)
        command = sub
    return command, path


@pytest.mark.parametrize("line", sorted(set(_command_lines())))
def test_every_command_line_in_the_operations_guide_exists(line):
    try:
        words = shlex.split(re.sub(r"[|\[\]]", " ", line))[1:]
    except ValueError:
        words = line.split()[1:]
    command, _path = _resolve(list(words))
    options = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for word in words:
        if word.startswith("-") and word not in ("-", "--"):
            flag = word.split("=")[0]
            assert flag in options, f"`{line}`: `{flag}` is not an option of that command"
