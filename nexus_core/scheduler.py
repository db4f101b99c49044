"""Periodic deltas: moved to :mod:`nexus_core.sync.cron` (these names keep working)."""

from nexus_core.sync.cron import (
    DEFAULT_INTERVAL,
    DeltaScheduler,
    FanOut,
    build_scheduler,
    enqueue_slot,
    fan_out,
    run_scheduler,
    start_in_background,
)

__all__ = ["DEFAULT_INTERVAL", "DeltaScheduler", "FanOut", "build_scheduler", "enqueue_slot",
           "fan_out", "run_scheduler", "start_in_background"]
