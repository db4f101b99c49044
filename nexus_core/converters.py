"""The one cattrs converter: models to and from JSON-ready dicts (jobs, the store, the CLI).

Datetimes travel as ISO-8601 strings with their offset, bytes as base64, tuples as lists.
Runtime-only fields (a context's ``http`` session and ``log``) are never serialized.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, TypeVar

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from nexus_core.models import ConnectorContext

T = TypeVar("T")

converter = cattrs.Converter()


def _dt_unstructure(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _dt_structure(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float):
        parsed = datetime.fromtimestamp(value, UTC)
    else:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


converter.register_unstructure_hook(datetime, _dt_unstructure)
converter.register_structure_hook(datetime, _dt_structure)
converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
converter.register_structure_hook(
    bytes, lambda v, _: v if isinstance(v, bytes) else base64.b64decode(v)
)
converter.register_unstructure_hook(tuple, list)

converter.register_unstructure_hook(
    ConnectorContext,
    make_dict_unstructure_fn(
        ConnectorContext, converter, http=override(omit=True), log=override(omit=True)
    ),
)
converter.register_structure_hook(
    ConnectorContext,
    make_dict_structure_fn(
        ConnectorContext, converter, http=override(omit=True), log=override(omit=True)
    ),
)


def unstructure(obj: Any) -> Any:
    """A model (or list/dict of models) as plain JSON-ready data."""
    return converter.unstructure(obj)


def structure(data: Any, cls: type[T]) -> T:
    return converter.structure(data, cls)


def to_json(obj: Any) -> str:
    return json.dumps(converter.unstructure(obj), separators=(",", ":"), sort_keys=True)


def from_json(text: str | bytes, cls: type[T]) -> T:
    return converter.structure(json.loads(text), cls)
