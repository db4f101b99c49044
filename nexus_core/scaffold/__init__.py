"""``nexus new-provider NAME``: generate a provider plugin distribution ``nexus-NAME``.

The template (``nexus_core/scaffold/template/``) is a complete, working connector with its own
simulator and the standard suite — ``plugins/nexus-example`` is exactly this template rendered
for the name ``example`` (a test keeps the two identical), so what an author starts from is
what the SDK's own CI runs.

Tokens in file contents and paths: ``{{slug}}`` (``acme-crm``), ``{{package}}``
(``nexus_acme_crm``), ``{{dist}}`` (``nexus-acme-crm``), ``{{Title}}`` (``Acme Crm``),
``{{ENV}}`` (``ACME_CRM``: the environment-variable prefix), ``{{Class}}`` (``AcmeCrm``),
``{{core_requirement}}`` (the nexus-core range the plugin supports).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from nexus_core.__about__ import __version__
from nexus_core.errors import NexusError

_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def tokens(name: str) -> dict[str, str]:
    """The substitutions for provider ``name`` (a lower-case slug: ``acme``, ``acme-crm``)."""
    if not _NAME.fullmatch(name) or len(name) > 40:
        raise NexusError(
            f"provider name {name!r} must be a lower-case slug: letters, digits and single "
            "hyphens, starting with a letter, at most 40 characters (e.g. acme or acme-crm)")
    words = name.split("-")
    major = int(__version__.split(".")[0])
    minor = int(__version__.split(".")[1])
    return {
        "slug": name,
        "package": "nexus_" + name.replace("-", "_"),
        "dist": "nexus-" + name,
        "Title": " ".join(w.title() for w in words),
        "ENV": name.replace("-", "_").upper(),
        "Class": "".join(w.title() for w in words),
        "core_requirement": f"nexus-core>={major}.{minor},<{major + 1}"
        if major else f"nexus-core>=0.{minor},<1",
    }


def _render(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def template_files() -> Iterator[tuple[str, bytes]]:
    """(relative path with tokens, content) of every template file."""
    root = resources.files("nexus_core.scaffold") / "template"

    def walk(node: object, prefix: str) -> Iterator[tuple[str, bytes]]:
        for child in sorted(node.iterdir(), key=lambda c: c.name):  # type: ignore[attr-defined]
            if child.name in ("__pycache__",) or child.name.endswith(".pyc"):
                continue
            path = f"{prefix}{child.name}"
            if child.is_dir():
                yield from walk(child, path + "/")
            else:
                yield path.removesuffix(".tmpl"), child.read_bytes()

    yield from walk(root, "")


def render(name: str) -> dict[str, str]:
    """The generated distribution for ``name``: relative path -> text."""
    subs = tokens(name)
    return {_render(path, subs): _render(data.decode(), subs) for path, data in template_files()}


def generate(name: str, output: Path, *, force: bool = False) -> Path:
    """Write ``nexus-NAME/`` under ``output``; returns its path. Refuses to overwrite an
    existing directory unless ``force``."""
    files = render(name)
    target = output / tokens(name)["dist"]
    if target.exists() and any(target.iterdir()) and not force:
        raise NexusError(f"{target} exists and is not empty",
                         hint="choose another --output, or pass --force to overwrite")
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target
