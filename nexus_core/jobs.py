"""The job functions under the dotted names RQ stores in Redis — a wire format.

Every enqueued job names its function (``nexus_core.jobs.run_backfill``, ``run_delta``,
``run_webhook``, ``run_health_check``) and its failure callback
(``nexus_core.jobs.on_job_failure``) by these paths: jobs written by any release, including
those before the engine moved to :mod:`nexus_core.sync`, must run on any other, so these names
never change (``queues.JOB_*``). The code lives in :mod:`nexus_core.sync`; this module only
resolves the names, lazily, so a worker imports the engine, webhook or health code only when
one of its jobs needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_TARGETS = {
    "run_backfill": "nexus_core.sync.engine",
    "run_delta": "nexus_core.sync.engine",
    "run_webhook": "nexus_core.sync.webhook",
    "webhook_request_of": "nexus_core.sync.webhook",
    "run_health_check": "nexus_core.sync.health",
    "on_job_failure": "nexus_core.sync.harness",
    "is_permanent": "nexus_core.sync.harness",
    "request_stop": "nexus_core.sync.harness",
}

__all__ = sorted(_TARGETS)


def __getattr__(name: str) -> Any:
    module = _TARGETS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
