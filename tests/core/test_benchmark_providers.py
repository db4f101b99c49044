"""The providers the benchmarks register are valid plugins: a benchmark that the core's plugin
validation refuses would only fail when someone runs `make bench`."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _plugin_source(source):
    namespace = {"__name__": "nexus_bench_e2e"}
    exec(compile(source, "nexus_bench_e2e.py", "exec"), namespace)  # the file it writes
    return namespace


@pytest.mark.parametrize("name, factory", [
    ("webhook_ingress", lambda m: m._bench_provider()),
    ("webhook_e2e", lambda m: _plugin_source(m.PLUGIN)["BenchHubSpot"]),
])
def test_a_benchmark_provider_loads(nexus_registry, name, factory):
    info = nexus_registry.register(factory(_module(name)), f"bench-{name}")
    assert info.status == "ok", info.reason
