"""What a worker sets up, and when: only what its jobs need, once per process, before the fork."""

import json
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import json, sys
    from nexus_core import WebhookEvent, hookimpl
    from nexus_core.plugins import load_plugins
    from nexus_core.testing.simulator import paged_provider

    class Hooks:
        @hookimpl
        def handle_webhook(self, ctx, request):
            assert not ctx.http.session_built
            return [WebhookEvent(id="e1", type="x", provider="sim")]

    registry = load_plugins()
    registry.register(paged_provider(), "sim")
    registry.register(Hooks(), "hooks")
    from nexus_core.worker import NexusSimpleWorker, NexusWorker
    cls = NexusWorker if sys.argv[1] == "fork" else NexusSimpleWorker
    before = set(sys.modules)
    worker = cls(sys.argv[2:], connection=__import__("nexus_core").runtime.get_redis())
    at_start = set(sys.modules)
    worker.work(burst=True, logging_level="WARNING")
    print(json.dumps({"at_start": sorted(at_start - before), "after": sorted(sys.modules)}))
""")


def _run_worker(sync_env, mode, *queue_names):
    from nexus_core.config import get_settings

    settings = get_settings()
    env = {**os.environ, "REDIS_URL": settings.redis_url,
           "NEXUS_DATABASE_URL": settings.database_url, "LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", WORKER, mode, *queue_names], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_webhook_worker_never_loads_the_http_stack_or_the_sync_engine(sync_env):
    from nexus_core import WebhookRequest

    sync_env.install()
    request = WebhookRequest("POST", "http://x/webhooks/sim/i1", {}, b"[]")
    job_id = sync_env.service().schedule_webhook_job("sim", "t1", "i1", request)
    for mode in ("simple", "fork"):
        sync_env.redis.delete(f"rq:job:{job_id}", "nexus:webhook:seen:" + job_id)
        sync_env.service().schedule_webhook_job("sim", "t1", "i1", request)
        modules = _run_worker(sync_env, mode, "integration-webhook")
        # nothing job-specific at start: not even the store
        assert "sqlalchemy" not in modules["at_start"]
        assert "nexus_core.sync.webhook" not in modules["at_start"]
        # after a webhook job: its code and the store, never requests or the sync engine
        assert "nexus_core.sync.webhook" in modules["after"]
        assert "sqlalchemy" in modules["after"]
        for heavy in ("requests", "nexus_core.http", "nexus_core.oauth", "nexus_core.sync.engine"):
            assert heavy not in modules["after"], (mode, heavy)
        queue = __import__("nexus_core").queues.queue("integration-webhook", sync_env.redis)
        assert queue.finished_job_registry.get_job_ids() == [job_id]


def test_a_delta_worker_sets_up_the_http_stack_before_its_first_fork(sync_env):
    sync_env.install()
    sync_env.store.commit_page("t1", "i1", "records", "delta", "0", seq=1)
    sync_env.service().start_delta("sim", "t1", "i1")
    modules = _run_worker(sync_env, "fork", "integration-delta")
    assert "requests" not in modules["at_start"]
    # imported in the worker itself (before forking the horse), so every horse inherits it
    assert "nexus_core.http" in modules["after"] and "nexus_core.sync.engine" in modules["after"]
    assert sync_env.store.list_runs("t1", "i1")[0].status in ("succeeded", "cancelled")
