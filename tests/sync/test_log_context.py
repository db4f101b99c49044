"""Logs of real work: a full OAuth connect, backfill (with a token refresh), delta and webhook of
the Example connector against its simulator, through the web app and RQ workers.

* JSON mode: every line logged while a job runs carries provider, tenant_id, install_id, job_id
  and run_id (a sync's run id is the one `nexus runs list` shows).
* LOG_LEVEL=TRACE: no access or refresh token, client secret, webhook secret or authorization
  code appears anywhere in what the test process, the web app and the forked work-horses wrote.
"""

import base64
import io
import json
import re

import pytest
from loguru import logger
from nexus_example.simulator import ExampleSimulator

from nexus_core.log import configure_logging
from nexus_core.testing.suite import PUBLIC_URL, Harness

CLIENT_SECRET = "CLIENTSECRET-q8Zr4vX2mK7p"
WEBHOOK_KEY = b"WEBHOOKKEY-d3Fh9sL1wQ6n-32-bytes-or-more"


class LoudSecrets(ExampleSimulator):
    """The Example simulator with secrets no test could confuse with anything else."""

    oauth_options = {**ExampleSimulator.oauth_options, "client_secret": CLIENT_SECRET}
    webhook_secret = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()


@pytest.fixture
def sim():
    with LoudSecrets() as simulator:
        simulator.add_account()
        yield simulator


@pytest.fixture
def nexus(sim, redis_url, tmp_path, monkeypatch):
    harness = Harness("example", sim, redis_url, tmp_path, monkeypatch,
                      env={"LOG_LEVEL": "TRACE", "NEXUS_LOG_FORMAT": "json"})
    try:
        yield harness
    finally:
        harness.close()
        logger.remove()


def post_webhook(nexus, sim, inst):
    body = sim.webhook_body(sim.webhook_events(sim.default_account, 2))
    path = f"/webhooks/example/{inst.webhook_key}"
    resp = nexus.client.simulate_post(path, body=body,
                                      headers=sim.sign_webhook(body, PUBLIC_URL + path))
    assert resp.status_code == 200, resp.text
    return resp


def work_all(nexus):
    """Every queue until empty, in this process, with RQ's own lines at DEBUG too."""
    from nexus_core.worker import NexusSimpleWorker, resolve_queues

    NexusSimpleWorker(resolve_queues(None), connection=nexus.redis).work(
        burst=True, logging_level="DEBUG", with_scheduler=False)


#: RQ's announcement of the job it dequeued, logged before the job starts.
_DEQUEUE = re.compile(r"dequeued job|Worker [^ ]+: \S*integration-[a-z]+\S*: (?!.*Job OK)")


def lines_of_work(lines):
    """Every line but the worker's own housekeeping: RQ's and redis-py's lines count when they
    are about one of the jobs (``Job OK (<id>)``, ``performing job <id>``), the SDK's,
    requests' and urllib3's lines always."""
    job_ids = {line["job_id"] for line in lines if line.get("job_id")}
    assert job_ids

    def of_work(line):
        if line["logger"].startswith(("rq.", "redis.")):
            return any(j in line["message"] for j in job_ids) and \
                not _DEQUEUE.search(line["message"])
        return True

    return [line for line in lines if of_work(line)]


def test_every_line_of_a_sync_and_a_webhook_carries_its_context(nexus, sim):
    sink = io.StringIO()
    configure_logging("DEBUG", "json", sink=sink)
    inst = nexus.connect("tenant-1", "main", sim.default_account)
    sim.oauth.expire_after(3)  # a refresh inside the backfill
    backfill_job = nexus.service.start_backfill("example", "tenant-1", "main")
    sink.seek(0)
    sink.truncate()
    work_all(nexus)
    assert nexus.failed_jobs() == [] and sim.oauth.refreshes == 1
    sync_lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    (run,) = nexus.store.list_runs("tenant-1", "main")

    sink.seek(0)
    sink.truncate()
    nexus.service.start_delta("example", "tenant-1", "main")
    post_webhook(nexus, sim, inst)
    sink.seek(0)
    sink.truncate()
    work_all(nexus)
    assert nexus.failed_jobs() == []
    later_lines = [json.loads(line) for line in sink.getvalue().splitlines()]

    fields = ("provider", "tenant_id", "install_id", "job_id", "run_id")
    work = lines_of_work(sync_lines + later_lines)
    missing = [line for line in work if not all(line.get(f) for f in fields)]
    assert not missing, json.dumps(missing[:5], indent=1)
    assert all((line["provider"], line["tenant_id"], line["install_id"])
               == ("example", "tenant-1", "main") for line in work)

    backfill_lines = [line for line in sync_lines if line in work]
    assert {line["run_id"] for line in backfill_lines} == {run.run_id}
    assert backfill_job in {line["job_id"] for line in backfill_lines}
    messages = " | ".join(line["message"] for line in backfill_lines)
    for expected in ("GET /v1/widgets", "refreshed", "Job OK", "backfill done"):
        assert expected in messages, expected

    webhook = [line for line in later_lines if line in work
               and line["job_id"].startswith("nexus__webhook__")]
    assert webhook and "Job OK" in " | ".join(line["message"] for line in webhook)
    assert len({line["run_id"] for line in webhook}) == 1
    delta = [line for line in later_lines if line in work
             and line["job_id"].startswith("nexus__delta__")]
    assert delta and len({line["run_id"] for line in delta}) == 1
    delta_runs = {r.run_id for r in nexus.store.list_runs("tenant-1", "main")} - {run.run_id}
    assert {line["run_id"] for line in delta} == delta_runs  # the run the delta recorded


def test_no_secret_is_ever_logged_at_trace(nexus, sim, capfd):
    """Connect (OAuth state, authorization code, token exchange), backfill in forked work-horses with a
    token refresh inside it, an explicit refresh, a delta, a webhook (ingress and job), a
    health check and a revoked grant, all at LOG_LEVEL=TRACE; then every secret is looked for
    in everything the process and its children wrote to stdout and stderr."""
    from nexus_core import oauth

    configure_logging("TRACE", "json")  # stderr, which capfd reads at the file descriptor
    path, query = nexus.consent("tenant-1", "main", sim.default_account)
    assert nexus.client.simulate_get(path, params=query).status_code == 200
    inst = nexus.store.get_installation("tenant-1", "main")
    sim.oauth.expire_after(3)
    nexus.service.start_backfill("example", "tenant-1", "main")
    nexus.run(fork=True)
    stale = nexus.store.get_credentials("tenant-1", "main")
    oauth.refresh_credentials(nexus.store, nexus.redis, nexus.registry, "tenant-1", "main",
                              stale=stale, settings=nexus.settings)
    nexus.service.start_delta("example", "tenant-1", "main")
    post_webhook(nexus, sim, inst)
    nexus.run(fork=True)
    assert nexus.service.health_check_immediate("example", "tenant-1", "main").healthy
    assert nexus.failed_jobs() == [] and sim.oauth.refreshes == 2
    sim.oauth.revoke(sim.default_account)
    nexus.service.start_delta("example", "tenant-1", "main")
    nexus.run(fork=True)

    out = capfd.readouterr()
    captured = out.out + out.err
    assert '"level": "TRACE"' in captured or '"level": "DEBUG"' in captured
    assert "tenant-1" in captured and "GET /v1/widgets" in captured
    # The backfill's requests were made in forked work-horses: their lines carry the job too.
    horse = [json.loads(line) for line in captured.splitlines()
             if line.startswith("{") and '"GET /v1/widgets -> 200' in line]
    assert horse and all(line.get("job_id", "").startswith("nexus__backfill__")
                         and line.get("run_id") for line in horse)
    secrets = {CLIENT_SECRET, sim.webhook_secret, sim.webhook_secret.removeprefix("whsec_"),
               WEBHOOK_KEY.decode(), query["code"], query["state"]}
    secrets |= set(sim.oauth._tokens) | set(sim.oauth._grants) | set(sim.oauth._retired)
    assert len(secrets) >= 6 + 3 + 3  # three access tokens, three refresh tokens at least
    leaked = sorted(s for s in secrets if s in captured)
    assert not leaked, [(s, captured[max(0, captured.index(s) - 200):captured.index(s) + 50])
                        for s in leaked]


@pytest.mark.parametrize("line", [
    '127.0.0.1 "GET /integrations/example/callback?code=code-abc123&state=st4te HTTP/1.1" 302',
    "redirect to https://auth.example/authorize?client_id=x&state=st4te&code=code-abc123#f",
])
def test_oauth_state_and_code_in_a_url_are_redacted(line):
    from nexus_core.log import redact

    cleaned = redact(line)
    assert "st4te" not in cleaned and "code-abc123" not in cleaned
    assert "state=***" in cleaned and "code=***" in cleaned
    assert ("client_id=x" in cleaned) == ("client_id=x" in line)


def test_words_like_state_outside_a_query_string_are_kept():
    from nexus_core.log import redact

    assert redact("breaker state=open for example/t1") == "breaker state=open for example/t1"
