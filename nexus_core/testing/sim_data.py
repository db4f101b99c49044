"""Seeded, deterministic data sets for provider simulators: any number of records per account
and stream, changed, created and deleted on demand for delta tests, on a simulated clock so that
"modified since" queries are reproducible.

Records are produced by a ``make(stream, index, version, account)`` function the simulator gives
(its provider's shape); the data set keeps only versions and timestamps, so a million records
cost a few dicts of ints, not a million dicts.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

#: The simulated clock starts here; every change moves it forward one second.
SIM_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

MakeRecord = Callable[[str, int, int, str], dict[str, Any]]


def default_record(stream: str, index: int, version: int, account: str) -> dict[str, Any]:
    return {"id": f"{stream[:3]}-{account}-{index:07d}", "name": f"{stream} {index}",
            "version": version}


class DataSet:
    """Records per (account, stream): ``sizes`` records each at the start, created at
    ``SIM_EPOCH + index`` seconds. ``make`` shapes a record; the data set adds nothing to it
    but what a simulator asks for (``updated_at`` / ``created_at`` through :meth:`row`)."""

    def __init__(self, sizes: dict[str, int], *, seed: int = 0,
                 make: MakeRecord = default_record) -> None:
        self.sizes = dict(sizes)
        self.make = make
        self._rng = random.Random(seed)  # noqa: S311 - deterministic test data
        self._lock = threading.Lock()
        #: (account, stream) -> {index: (version, updated second)}
        self._changed: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
        self._deleted: dict[tuple[str, str], dict[int, int]] = {}
        self._created: dict[tuple[str, str], int] = {}
        self._clock = max(self.sizes.values(), default=0) + 1  # seconds after SIM_EPOCH

    # -- reading -----------------------------------------------------------------------------

    def count(self, account: str, stream: str) -> int:
        key = (account, stream)
        return self.sizes[stream] + self._created.get(key, 0)

    def version(self, account: str, stream: str, index: int) -> tuple[int, int]:
        """(version, updated second) of one record."""
        return self._changed.get((account, stream), {}).get(index, (0, index))

    def deleted(self, account: str, stream: str) -> dict[int, int]:
        """Deleted records: index -> the simulated second of the deletion."""
        return dict(self._deleted.get((account, stream), {}))

    def is_deleted(self, account: str, stream: str, index: int) -> bool:
        return index in self._deleted.get((account, stream), {})

    def row(self, account: str, stream: str, index: int) -> dict[str, Any]:
        version, second = self.version(account, stream, index)
        record = self.make(stream, index, version, account)
        record.setdefault("updated_at", iso(second))
        record.setdefault("created_at", iso(index))
        return record

    def indexes(self, account: str, stream: str, *, deleted: bool = False) -> Iterator[int]:
        """Live record indexes in id order (``deleted=True``: the deleted ones)."""
        gone = self._deleted.get((account, stream), {})
        if deleted:
            yield from sorted(gone)
            return
        for index in range(self.count(account, stream)):
            if index not in gone:
                yield index

    def ids(self, account: str, stream: str, id_field: str = "id") -> set[str]:
        return {str(self.row(account, stream, i)[id_field])
                for i in self.indexes(account, stream)}

    def changed_since(self, account: str, stream: str, second: int) -> list[int]:
        """Indexes of live records updated at or after ``second``, oldest change first (ties by
        index), as a "modified since" search answers."""
        hits = [(self.version(account, stream, i)[1], i)
                for i in self.indexes(account, stream)]
        return [i for s, i in sorted(hits) if s >= second]

    @property
    def now(self) -> int:
        """The simulated clock (seconds after :data:`SIM_EPOCH`)."""
        return self._clock

    # -- changing ---------------------------------------------------------------------------

    def mutate(self, account: str, stream: str, n: int, *, same_second: bool = False
               ) -> list[int]:
        """Change ``n`` random live records (a new version, a new updated time; with
        ``same_second`` they all share one timestamp). Returns their indexes."""
        with self._lock:
            live = list(self.indexes(account, stream))
            picked = sorted(self._rng.sample(live, min(n, len(live))))
            changes = self._changed.setdefault((account, stream), {})
            if same_second:
                self._clock += 1
            for index in picked:
                if not same_second:
                    self._clock += 1
                version = changes.get(index, (0, index))[0] + 1
                changes[index] = (version, self._clock)
            return picked

    def change_at(self, account: str, stream: str, indexes: list[int], second: int
                  ) -> list[int]:
        """Give live records a new version changed at ``second`` rather than now — a change
        committed late with a timestamp that changes read before already have (what a
        ``> cursor`` delta loses). Returns the indexes changed."""
        with self._lock:
            changes = self._changed.setdefault((account, stream), {})
            gone = self._deleted.get((account, stream), {})
            done = []
            for index in indexes:
                if 0 <= index < self.count(account, stream) and index not in gone:
                    changes[index] = (changes.get(index, (0, index))[0] + 1, second)
                    done.append(index)
            return done

    def create(self, account: str, stream: str, n: int) -> list[int]:
        with self._lock:
            key = (account, stream)
            start = self.count(account, stream)
            self._created[key] = self._created.get(key, 0) + n
            changes = self._changed.setdefault(key, {})
            for index in range(start, start + n):
                self._clock += 1
                changes[index] = (0, self._clock)
            return list(range(start, start + n))

    def delete(self, account: str, stream: str, n: int) -> list[int]:
        with self._lock:
            live = list(self.indexes(account, stream))
            picked = sorted(self._rng.sample(live, min(n, len(live))))
            gone = self._deleted.setdefault((account, stream), {})
            for index in picked:
                self._clock += 1
                gone[index] = self._clock
            return picked


def iso(second: int) -> str:
    """A simulated second as an ISO-8601 UTC timestamp with milliseconds."""
    at = SIM_EPOCH + timedelta(seconds=second)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> int:
    """The simulated second of an ISO-8601 timestamp (the inverse of :func:`iso`)."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int((at - SIM_EPOCH).total_seconds())
