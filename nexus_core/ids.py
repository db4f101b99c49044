"""Identifiers: what a tenant or installation id may be, and the encodings of ids into RQ job
ids, Redis keys and file names.

Every encoding here is injective — two different inputs never give one output — because a
collision is a security bug: two tenants would share a job id, an "active sync" marker, a
rate-limit bucket, a webhook replay mark or a sink file. The property-based tests in
``tests/core/test_ids.py`` check it, adversarial inputs (an id spelled like another id's
encoding) included.

Two alphabets:

* **Key parts** (:func:`key_part`, :func:`join_key`) — RQ 3 accepts only ``[A-Za-z0-9_-]`` in
  job ids, and Redis keys reuse the job-id form. A part that is a plain slug (``acme``,
  ``install-1``, ``a_b``: no ``__``, no ``_`` at either end, <= 64 characters) stays as it is,
  so ordinary ids read naturally in ``rq info`` and ``redis-cli``. Anything else becomes ``_x`` +
  the hex of its UTF-8 bytes, or ``_h`` + its SHA-256 when that would be longer than 66
  characters. Parts are joined with ``__``. A plain part never starts or ends with ``_`` and
  an encoded one always starts with ``_x``/``_h`` and contains no ``__``, so the joined string
  splits back into its parts one way only.
* **File-name parts** (:func:`file_part`) — for case-insensitive file systems too (macOS,
  Windows): ``[a-z0-9_-]`` stay, an upper-case letter becomes ``!`` + its lower case (the Go
  module cache's rule), every other byte ``%XX``; longer than 120 characters or empty:
  ``~`` + SHA-256 (``~`` is never produced by the escaping). ``.`` is escaped, so no part is
  ``.``/``..`` or hidden.
"""

from __future__ import annotations

import hashlib
import re

from nexus_core.errors import NexusError

#: Longest tenant or installation id (characters); the store's columns hold 200.
MAX_ID_LENGTH = 200

#: Separator of key parts.
SEP = "__"
_PLAIN = re.compile(r"[A-Za-z0-9-](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9-])?", re.ASCII)
_MAX_ENCODED = 66
_FILE_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_FILE_PART = 120


class InvalidId(NexusError, ValueError):
    """A tenant or installation id that cannot be stored (empty, too long, control
    characters)."""


def check_id(kind: str, value: object) -> str:
    """``value`` if it is a usable ``kind`` id (``tenant_id``, ``install_id``): a non-empty
    string of at most :data:`MAX_ID_LENGTH` characters without control characters or lone
    surrogates. Any other printable text is fine: ids are encoded wherever they become keys or
    file names."""
    if not isinstance(value, str) or not value:
        raise InvalidId(f"{kind} must be a non-empty string, got {value!r:.60}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}",
                        hint="use a shorter, stable id (a UUID or your database key)")
    for ch in value:
        code = ord(ch)
        if code < 32 or 127 <= code < 160 or 0xD800 <= code <= 0xDFFF:
            raise InvalidId(f"{kind} contains a control character ({code:#04x}): {value!r:.60}")
    if value != value.strip():
        raise InvalidId(f"{kind} starts or ends with whitespace: {value!r:.60}")
    return value


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def key_part(value: str) -> str:
    """``value`` in the job-id alphabet ``[A-Za-z0-9_-]``, injectively (module docstring)."""
    if _PLAIN.fullmatch(value) and SEP not in value:
        return value
    raw = _utf8(value)
    if 2 + 2 * len(raw) <= _MAX_ENCODED:
        return "_x" + raw.hex()
    return "_h" + hashlib.sha256(raw).hexdigest()


def join_key(*parts: str) -> str:
    """The parts, each :func:`key_part`-encoded, joined with ``__``."""
    return SEP.join(key_part(p) for p in parts)


def split_key(key: str) -> list[str]:
    """The encoded parts of a :func:`join_key` result (the inverse of the join; tests and
    tools use it to read a job id)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        if key.startswith(SEP, i):
            # "___x..." is a separator followed by an encoded part.
            parts.append("".join(current))
            current = []
            i += len(SEP)
            continue
        current.append(key[i])
        i += 1
    parts.append("".join(current))
    return parts


def decode_part(part: str) -> str | None:
    """The original of an encoded part; None for a hashed one (``_h``…)."""
    if part.startswith("_x"):
        return bytes.fromhex(part[2:]).decode("utf-8", "surrogatepass")
    if part.startswith("_h"):
        return None
    return part


def file_part(value: str) -> str:
    """``value`` as one file or directory name, injectively, also on case-insensitive file
    systems (module docstring)."""
    out: list[str] = []
    for ch in value:
        if ch in _FILE_SAFE:
            out.append(ch)
        elif "A" <= ch <= "Z":
            out.append("!" + ch.lower())
        else:
            out.extend(f"%{b:02X}" for b in _utf8(ch))
    name = "".join(out)
    if not name or len(name) > _MAX_FILE_PART:
        return "~" + hashlib.sha256(_utf8(value)).hexdigest()
    return name
