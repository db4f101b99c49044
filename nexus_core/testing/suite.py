"""The standard connector suite: one line in a plugin's tests proves the connector end to end.

::

    # plugins/nexus-acme/tests/test_connector.py
    from nexus_core.testing.suite import connector_suite
    from nexus_acme.simulator import AcmeSimulator

    TestAcme = connector_suite("acme", simulator=AcmeSimulator)

Every test runs the real path — the plugin loaded from its entry point, a real Redis (the
``redis_url`` fixture: a throwaway ``redis-server``), a SQLite store, RQ workers (in-process, or
forking a work-horse where a kill is part of the test), the web app for OAuth and webhooks —
against the plugin's own simulator (:class:`~nexus_core.testing.provider_sim.ProviderSimulator`).
What is covered, beyond what Singer's and Airbyte's standard tests cover:

* metadata is valid and the entry point loads;
* authorize with a good and a bad code, through the connect link and the OAuth routes;
* refresh, with rotation (the old refresh token is never reused) and a revoked grant →
  ``needs_reauth`` without retries;
* a backfill of every stream across pages delivers every record id exactly once, and resumes
  from its checkpoint after its work-horse is killed;
* a delta delivers only the changed records, and nothing when nothing changed;
* a 429 with ``Retry-After`` is obeyed, with no second 429;
* an access token that expires mid-backfill is refreshed transparently;
* webhooks: a genuine delivery is accepted (with the provider's own acknowledgement when it
  declares one), normalized and routed to the right installation; a tampered (signed
  providers), stale (timestamped ones) or replayed one is not;
* health: healthy, and unhealthy with revoked credentials or the provider down.

Tests a provider does not support are skipped, with the reason taken from its metadata (no
OAuth2, no webhooks, no ``delta`` or ``health_check`` hook). ``skip={"test_name": "why"}`` skips
more, with the author's reason.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from nexus_core.hookspecs import hookimpl
from nexus_core.testing.provider_sim import ProviderSimulator

PUBLIC_URL = "http://nexus.test"
_KILL_ENV = "NEXUS_SUITE_KILL_FILE"


class FileRecorder:
    """A sink plugin that appends what it receives to a file — visible across the fork of a
    work-horse. Armed with a kill file, it SIGKILLs the work-horse when it is about to take page
    N (once), so the suite can prove a killed job resumes from its checkpoint."""

    name = "suite-recorder"

    def __init__(self, path: Path, kill_file: Path) -> None:
        self.path = path
        self.kill_file = kill_file
        self.parent = os.getpid()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    @hookimpl
    def process_records(self, ctx: Any, stream: str, records: list[Any]) -> None:
        if os.getpid() != self.parent and self.kill_file.exists():
            pages = int(self.kill_file.read_text() or 0) - 1
            if pages <= 0:
                self.kill_file.unlink()
                os.kill(os.getpid(), signal.SIGKILL)
            self.kill_file.write_text(str(pages))
        self._write([{"kind": "record", "tenant": ctx.tenant_id, "install": ctx.install_id,
                      "stream": stream, "id": r.id, "deleted": r.deleted, "data": r.data}
                     for r in records]
                    + [{"kind": "page", "tenant": ctx.tenant_id, "install": ctx.install_id,
                        "stream": stream, "n": len(records)}])

    @hookimpl
    def process_events(self, ctx: Any, events: list[Any]) -> None:
        self._write([{"kind": "event", "tenant": ctx.tenant_id, "install": ctx.install_id,
                      "id": e.id, "type": e.type, "provider": e.provider} for e in events])

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        return [r for r in rows if kind is None or r["kind"] == kind]

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class Harness:
    """One test's world: settings, registry, store, Redis, the service and the web app, all
    pointed at the simulator (``env``: more variables, or other values for the defaults).
    A plugin's own tests use it too."""

    def __init__(self, provider_id: str, sim: ProviderSimulator, redis_url: str, tmp: Path,
                 monkeypatch: pytest.MonkeyPatch, plugin: Any = None,
                 env: dict[str, str] | None = None) -> None:
        from nexus_core import runtime
        from nexus_core.config import get_settings, reset_settings
        from nexus_core.plugins import PluginRegistry, set_registry

        self.provider_id = provider_id
        self.sim = sim
        overrides = env
        env = {
            "REDIS_URL": redis_url, "NEXUS_DATABASE_URL": f"sqlite:///{tmp / 'nexus.db'}",
            "NEXUS_KEY_FILE": str(tmp / "encryption.key"), "NEXUS_SINK": "null",
            "NEXUS_PUBLIC_URL": PUBLIC_URL, "INTEGRATION_MAX_RETRIES": "2",
            "INTEGRATION_BACKOFF_DELAY": "0", "NEXUS_HTTP_BACKOFF_BASE": "0",
            "NEXUS_ENV": "test", "LOG_LEVEL": "WARNING",
            **sim.env(), **(overrides or {}),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp)
        reset_settings()
        runtime.reset()
        self.settings = get_settings()
        self.registry = PluginRegistry()
        self.registry.load_entry_points(self.settings.load_plugins, self.settings.disable_plugins)
        if plugin is not None:  # a connector under test that is not installed (the suite's own
            # tests prove it catches broken connectors this way)
            installed = self.registry.plugin_info_for(provider_id)
            if installed is not None:
                self.registry.unregister(installed.name)
            info = self.registry.register(plugin, f"{provider_id}-under-test")
            assert info.status == "ok", info.reason
        self.recorder = FileRecorder(tmp / "delivered.jsonl", tmp / "kill-at-page")
        self.registry.register(self.recorder, FileRecorder.name)
        self._previous = set_registry(self.registry)
        self.provider = self.registry.provider(provider_id)
        from nexus_core.service import IntegrationService

        self.service = IntegrationService(self.settings, self.registry)
        self.store = runtime.get_store(self.settings)
        self.redis = runtime.get_redis(self.settings)
        self.service._store, self.service._redis = self.store, self.redis
        self._client: Any = None

    def close(self) -> None:
        from nexus_core import runtime
        from nexus_core.config import reset_settings
        from nexus_core.plugins import set_registry

        set_registry(self._previous)
        runtime.reset()
        reset_settings()

    # -- the web app ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from falcon import testing

            from nexus_core.web import create_app

            self._client = testing.TestClient(create_app(self.settings, self.store, self.redis,
                                                         self.registry))
        return self._client

    # -- installations ---------------------------------------------------------------------------

    @property
    def oauth2(self) -> bool:
        return self.provider.auth_type == "oauth2"

    def connect(self, tenant: str, install: str, account: str) -> Any:
        """A connected installation of ``account``: through the connect link and the OAuth
        routes for an OAuth2 provider, else with the simulator's credentials."""
        if not self.oauth2:
            creds = None if self.provider.auth_type == "none" else self.sim.credentials(account)
            return self.service.install(self.provider_id, tenant, install, account_id=account,
                                        config=self.sim.install_config(account) or None,
                                        credentials=creds)
        resp = self.callback(tenant, install, account)
        assert resp.status_code == 200, resp.text
        return self.store.get_installation(tenant, install)

    def consent(self, tenant: str, install: str, account: str, *, intent: str = "connect"
                ) -> tuple[str, dict[str, str]]:
        """Follow a connect link to the provider's consent page (the simulator approves at
        once for ``account``); the callback path and query it redirects to."""
        import requests

        link = self.service.create_connect_link(
            self.provider_id, tenant, install, intent=intent,
            config=self.sim.install_config(account) or None)
        parts = urlsplit(link.url)
        start = self.client.simulate_get(parts.path, query_string=parts.query)
        assert start.status_code == 302, start.text
        location = start.headers["location"]
        consent = requests.get(location + ("&" if "?" in location else "?")
                               + urlencode({"account": account}), allow_redirects=False,
                               timeout=10)
        assert consent.status_code in (301, 302, 303), consent.text
        back = urlsplit(consent.headers["Location"])
        return back.path, dict(parse_qsl(back.query))

    def callback(self, tenant: str, install: str, account: str, *, code: str | None = None
                 ) -> Any:
        path, query = self.consent(tenant, install, account)
        if code is not None:
            query["code"] = code
        return self.client.simulate_get(path, params=query)

    # -- running jobs ----------------------------------------------------------------------------

    def run(self, *, fork: bool = False, timeout: float = 60.0) -> None:
        """Work every queue until nothing is queued or scheduled: retries and rate-limit
        deferrals are moved to their queue when due, as RQ's scheduler would."""
        from rq.registry import ScheduledJobRegistry
        from rq.scheduler import RQScheduler
        from rq.serializers import JSONSerializer

        from nexus_core import queues
        from nexus_core.worker import resolve_queues

        names = resolve_queues(None)
        cls = _worker_class(fork)
        deadline = time.monotonic() + timeout
        while True:
            cls(names, connection=self.redis).work(burst=True, logging_level="WARNING",
                                                   with_scheduler=False)
            due = []
            for name in queues.ALL_QUEUES:
                registry = ScheduledJobRegistry(name, connection=self.redis,
                                                serializer=JSONSerializer)
                due += [registry.get_scheduled_time(j).timestamp()
                        for j in registry.get_job_ids()]
            if not due:
                return
            wait = min(due) - time.time()
            assert time.monotonic() + max(wait, 0) < deadline, "jobs still scheduled"
            if wait > 0:
                time.sleep(wait + 0.05)
            scheduler = RQScheduler(names, connection=self.redis, serializer=JSONSerializer)
            scheduler.acquire_locks()
            scheduler.prepare_registries(names)
            scheduler.enqueue_scheduled_jobs()
            scheduler.release_locks()

    def failed_jobs(self) -> list[str]:
        from nexus_core import queues

        out: list[str] = []
        for name in queues.ALL_QUEUES:
            out += queues.queue(name, self.redis).failed_job_registry.get_job_ids()
        return out

    def delivered(self, tenant: str, install: str, stream: str | None = None) -> list[str]:
        return [r["id"] for r in self.recorder.rows("record")
                if r["tenant"] == tenant and r["install"] == install
                and (stream is None or r["stream"] == stream)]


def _worker_class(fork: bool) -> type:
    from nexus_core.worker import NexusSimpleWorker, NexusWorker

    return NexusWorker if fork else NexusSimpleWorker


def _stream_names(provider: Any) -> list[str]:
    return [getattr(s, "name", s) for s in provider.streams]


def _incremental(provider: Any, stream: str) -> bool:
    for s in provider.streams:
        if getattr(s, "name", s) == stream:
            return getattr(s, "cursor_field", "unknown") is not None
    return False


class ConnectorSuiteBase:
    """The tests; :func:`connector_suite` makes a class of them per provider."""

    PROVIDER: str = ""
    SIMULATOR: type[ProviderSimulator] = ProviderSimulator
    SKIP: dict[str, str] = {}
    PLUGIN: Any = None

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture
    def sim(self) -> Iterator[ProviderSimulator]:
        with self.SIMULATOR() as simulator:
            simulator.add_account()
            yield simulator

    @pytest.fixture
    def nexus(self, request: pytest.FixtureRequest, sim: ProviderSimulator, redis_url: str,
              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
        reason = self.SKIP.get(request.node.originalname)
        if reason:
            pytest.skip(reason)
        harness = Harness(self.PROVIDER, sim, redis_url, tmp_path, monkeypatch, self.PLUGIN)
        try:
            yield harness
        finally:
            harness.close()

    @staticmethod
    def _need(condition: bool, reason: str) -> None:
        if not condition:
            pytest.skip(reason)

    def _oauth(self, nexus: Harness) -> None:
        self._need(nexus.oauth2, f"{nexus.provider_id} does not use OAuth2 "
                                 f"(auth_type {nexus.provider.auth_type})")

    def _webhooks(self, nexus: Harness) -> None:
        self._need(nexus.provider.webhook is not None,
                   f"{nexus.provider_id} declares no webhooks")

    def _hook(self, nexus: Harness, name: str) -> None:
        self._need(nexus.registry.implements(name, nexus.provider_id),
                   f"{nexus.provider_id} does not implement `{name}`")

    # -- metadata --------------------------------------------------------------------------------

    def test_metadata_is_valid_and_the_entry_point_loads(self, nexus: Harness) -> None:
        from nexus_core.converters import from_json, to_json
        from nexus_core.models import Provider

        info = nexus.registry.plugin_info_for(nexus.provider_id)
        assert info is not None and info.status == "ok", info
        if self.PLUGIN is None:
            assert info.distribution, "the plugin must come from an installed distribution"
        provider = nexus.provider
        names = _stream_names(provider)
        assert names and len(names) == len(set(names)), f"streams: {names}"
        if nexus.oauth2:
            assert provider.oauth is not None
        if provider.webhook is not None:
            assert provider.webhook.scheme
        assert from_json(to_json(provider), Provider) == provider

    # -- auth ------------------------------------------------------------------------------------

    def test_authorize_with_a_good_code_connects_the_installation(self, nexus: Harness,
                                                                  sim: ProviderSimulator) -> None:
        self._oauth(nexus)
        account = sim.default_account
        resp = nexus.callback("tenant-1", "main", account)
        assert resp.status_code == 200, resp.text
        inst = nexus.store.get_installation("tenant-1", "main")
        assert inst.status == "active" and inst.account_id == account
        creds = nexus.store.get_credentials("tenant-1", "main")
        assert creds is not None and creds.access_token and sim.oauth is not None
        assert sim.oauth.validate(creds.access_token) == account

    def test_authorize_with_a_bad_code_stores_nothing(self, nexus: Harness,
                                                      sim: ProviderSimulator) -> None:
        self._oauth(nexus)
        resp = nexus.callback("tenant-1", "main", sim.default_account, code="not-a-code")
        assert resp.status_code in (400, 502), resp.text
        assert nexus.store.list_installations("tenant-1") == []

    def test_refresh_rotates_and_a_revoked_grant_needs_reauth(self, nexus: Harness,
                                                             sim: ProviderSimulator) -> None:
        self._oauth(nexus)
        from nexus_core import oauth

        assert sim.oauth is not None
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        before = nexus.store.get_credentials("tenant-1", "main")
        assert before is not None
        fresh = oauth.refresh_credentials(nexus.store, nexus.redis, nexus.registry, "tenant-1",
                                          "main", stale=before, settings=nexus.settings)
        assert sim.oauth.refreshes == 1 and fresh.access_token != before.access_token
        stored = nexus.store.get_credentials("tenant-1", "main")
        assert stored is not None
        assert stored.refresh_token == sim.oauth.current_refresh_token(account)
        assert sim.oauth.refused_reuse == 0
        sim.oauth.revoke(account)
        nexus.service.start_backfill(nexus.provider_id, "tenant-1", "main")
        nexus.run()
        assert nexus.store.get_installation("tenant-1", "main").status == "needs_reauth"
        assert len(nexus.failed_jobs()) == 1 and sim.oauth.refused_reuse == 0

    def test_an_expired_token_mid_backfill_is_refreshed_transparently(
        self, nexus: Harness, sim: ProviderSimulator
    ) -> None:
        self._oauth(nexus)
        assert sim.oauth is not None
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        sim.oauth.expire_after(2)
        nexus.service.start_backfill(nexus.provider_id, "tenant-1", "main")
        nexus.run()
        for stream in _stream_names(nexus.provider):
            assert set(nexus.delivered("tenant-1", "main", stream)) == \
                sim.expected_ids(stream, account)
        assert sim.oauth.refreshes == 1 and sim.oauth.refused_reuse == 0
        assert nexus.failed_jobs() == []

    # -- sync ------------------------------------------------------------------------------------

    def test_backfill_delivers_every_record_exactly_once(self, nexus: Harness,
                                                         sim: ProviderSimulator) -> None:
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        nexus.service.start_backfill(nexus.provider_id, "tenant-1", "main")
        nexus.run()
        assert nexus.failed_jobs() == []
        for stream in _stream_names(nexus.provider):
            got = nexus.delivered("tenant-1", "main", stream)
            want = sim.expected_ids(stream, account)
            assert want, f"the simulator holds no {stream} records"
            assert sorted(got) == sorted(want), f"{stream}: {len(got)} delivered, " \
                f"{len(want)} expected, {len(got) - len(set(got))} twice"
        pages = [r for r in nexus.recorder.rows("page")]
        assert len(pages) >= 2 * len(_stream_names(nexus.provider)), \
            "the simulator must hold more than one page per stream to test paging"
        (run,) = nexus.store.list_runs("tenant-1", "main")
        assert run.status == "succeeded" and run.records == sum(
            len(sim.expected_ids(s, account)) for s in _stream_names(nexus.provider))
        for declared in nexus.provider.streams:
            schema = getattr(declared, "json_schema", None)
            if not schema:
                continue
            try:
                import jsonschema
            except ImportError:
                pytest.fail(f"stream {declared.name} declares a json_schema: checking it needs "
                            "`pip install jsonschema` (in nexus-core[test])")
            checker = jsonschema.Draft202012Validator(schema)
            for row in nexus.recorder.rows("record"):
                if row["stream"] == declared.name:
                    errors = sorted(checker.iter_errors(row["data"]), key=str)
                    assert not errors, f"{declared.name} record {row['id']} does not match " \
                        f"its json_schema: {errors[0].message}"

    def test_backfill_resumes_from_its_checkpoint_after_the_job_is_killed(
        self, nexus: Harness, sim: ProviderSimulator
    ) -> None:
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        nexus.recorder.kill_file.write_text("2")  # the work-horse dies taking page 2
        nexus.service.start_backfill(nexus.provider_id, "tenant-1", "main")
        nexus.run(fork=True)
        assert not nexus.recorder.kill_file.exists(), "the work-horse was never killed"
        delivered = nexus.delivered("tenant-1", "main")
        want = set().union(*(sim.expected_ids(s, account) for s in _stream_names(nexus.provider)))
        assert set(delivered) == want
        # Only the page in flight when the horse died may come twice; committed pages never.
        assert len(delivered) == len(want), f"{len(delivered) - len(want)} record(s) twice"
        assert nexus.failed_jobs() == []

    def test_delta_delivers_only_changed_records(self, nexus: Harness,
                                                 sim: ProviderSimulator) -> None:
        self._hook(nexus, "delta")
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        nexus.service.start_backfill(nexus.provider_id, "tenant-1", "main")
        nexus.run()
        streams = [s for s in _stream_names(nexus.provider) if _incremental(nexus.provider, s)]
        self._need(bool(streams), f"{nexus.provider_id} declares no incremental stream")
        for round_ in range(2):
            nexus.recorder.clear()
            changed = {s: sim.mutate(s, account, 3) for s in streams}
            nexus.service.start_delta(nexus.provider_id, "tenant-1", "main")
            nexus.run()
            for stream in streams:
                got = set(nexus.delivered("tenant-1", "main", stream))
                assert changed[stream] <= got, f"round {round_}: {stream} missed changes"
                assert got == changed[stream], \
                    f"round {round_}: {stream} delivered unchanged records {got - changed[stream]}"
        nexus.recorder.clear()
        nexus.service.start_delta(nexus.provider_id, "tenant-1", "main")
        nexus.run()
        assert nexus.delivered("tenant-1", "main") == [], "a delta with no changes delivered"
        assert nexus.failed_jobs() == []

    def test_a_429_with_retry_after_is_obeyed_without_a_second_429(
        self, nexus: Harness, sim: ProviderSimulator
    ) -> None:
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        sim.faults.rate_limit_next(retry_after=1)
        nexus.service.start_backfill(nexus.provider_id, "tenant-1", "main")
        nexus.run()
        api = [r for r in sim.requests() if r.account is not None or r.status == 429]
        limited = [i for i, r in enumerate(api) if r.status == 429]
        assert len(limited) == 1, f"{len(limited)} 429 answers"
        after = api[limited[0] + 1:]
        assert after, "nothing was requested after the 429"
        assert after[0].at - api[limited[0]].at >= 0.95, "Retry-After was not obeyed"
        for stream in _stream_names(nexus.provider):
            assert set(nexus.delivered("tenant-1", "main", stream)) == \
                sim.expected_ids(stream, account)

    # -- webhooks ---------------------------------------------------------------------------------

    def _post(self, nexus: Harness, account: str, inst: Any, body: bytes,
              headers: dict[str, str] | None = None, timestamp: float | None = None) -> Any:
        webhook = nexus.provider.webhook
        assert webhook is not None
        path = f"/webhooks/{nexus.provider_id}"
        if not webhook.account_id_field:
            path += f"/{inst.webhook_key}"
        if headers is None:
            headers = nexus.sim.sign_webhook(body, PUBLIC_URL + path, timestamp=timestamp)
        return nexus.client.simulate_post(path, body=body, headers=headers)

    @staticmethod
    def _accepted(nexus: Harness, resp: Any) -> None:
        """A 200 with the provider's own acknowledgement when it declares one
        (``WebhookConfig.accept_body``: a provider redelivers without it)."""
        assert resp.status_code == 200, resp.text
        webhook = nexus.provider.webhook
        if webhook is not None and webhook.accept_body is not None:
            assert resp.text == webhook.accept_body, resp.text

    @staticmethod
    def _queued(nexus: Harness) -> int:
        from nexus_core import queues

        return queues.queue(queues.WEBHOOK, nexus.redis).count

    def test_a_genuine_webhook_is_normalized_and_routed_to_its_installation(
        self, nexus: Harness, sim: ProviderSimulator
    ) -> None:
        self._webhooks(nexus)
        a, b = sim.default_account, sim.add_account()
        inst_a = nexus.connect("tenant-a", "main", a)
        nexus.connect("tenant-b", "main", b)
        body = sim.webhook_body(sim.webhook_events(a, 2))
        resp = self._post(nexus, a, inst_a, body)
        self._accepted(nexus, resp)
        assert self._queued(nexus) == 1, resp.text
        nexus.run()
        events = nexus.recorder.rows("event")
        assert events, "handle_webhook returned no events"
        assert {(e["tenant"], e["install"]) for e in events} == {("tenant-a", "main")}
        assert all(e["id"] and e["type"] and e["provider"] == nexus.provider_id for e in events)

    def test_a_tampered_stale_or_replayed_webhook_is_not_processed(
        self, nexus: Harness, sim: ProviderSimulator
    ) -> None:
        self._webhooks(nexus)
        account = sim.default_account
        inst = nexus.connect("tenant-a", "main", account)
        body = sim.webhook_body(sim.webhook_events(account, 1))
        webhook = nexus.provider.webhook
        assert webhook is not None
        path = f"/webhooks/{nexus.provider_id}" + (
            "" if webhook.account_id_field else f"/{inst.webhook_key}")
        headers = sim.sign_webhook(body, PUBLIC_URL + path)
        genuine = nexus.client.simulate_post(path, body=body, headers=headers)
        self._accepted(nexus, genuine)
        assert self._queued(nexus) == 1, genuine.text
        if sim.webhook_signed:  # an unsigned provider's tampering cannot be told (its own
            # tests check what it does verify)
            tampered = nexus.client.simulate_post(path, body=body.replace(b"}", b' }', 1),
                                                  headers=headers)
            assert tampered.status_code == 401, tampered.text
        if sim.webhook_timestamped:
            stale = self._post(nexus, account, inst, body, timestamp=time.time() - 3600)
            assert stale.status_code == 401, stale.text
        replay = nexus.client.simulate_post(path, body=body, headers=headers)  # as it was sent
        self._accepted(nexus, replay)
        assert self._queued(nexus) == 1, replay.text

    # -- health ------------------------------------------------------------------------------------

    def test_health_is_good_then_bad_with_revoked_credentials_or_the_provider_down(
        self, nexus: Harness, sim: ProviderSimulator
    ) -> None:
        self._hook(nexus, "health_check")
        account = sim.default_account
        nexus.connect("tenant-1", "main", account)
        health = nexus.service.health_check_immediate(nexus.provider_id, "tenant-1", "main")
        assert health.healthy and health.auth_valid and health.api_accessible, health
        with sim.down():
            down = nexus.service.health_check_immediate(nexus.provider_id, "tenant-1", "main")
        assert not down.healthy and not down.api_accessible, down
        if sim.oauth is not None:
            sim.oauth.revoke(account)
            revoked = nexus.service.health_check_immediate(nexus.provider_id, "tenant-1",
                                                           "main")
            assert not revoked.healthy and not revoked.auth_valid, revoked


def connector_suite(provider_id: str, *, simulator: type[ProviderSimulator],
                    skip: dict[str, str] | None = None, plugin: Any = None) -> type:
    """A test class running the standard suite for ``provider_id`` against ``simulator``;
    assign it to a ``Test*`` name in a test module. ``skip`` maps test names to the reason a
    provider cannot pass them. ``plugin`` tests that plugin object instead of the installed
    entry point of ``provider_id`` (a connector under development)."""
    name = "Test" + "".join(p.title() for p in provider_id.replace("_", "-").split("-"))
    return type(name, (ConnectorSuiteBase,), {
        "PROVIDER": provider_id, "SIMULATOR": simulator, "SKIP": dict(skip or {}),
        "PLUGIN": plugin,
    })


def harness_fixtures(provider_id: str, simulator: type[ProviderSimulator],
                     **simulator_defaults: Any) -> tuple[Any, Any, Any, Any]:
    """The four fixtures a plugin's own tests use, for its conftest.py::

        make_sim, sim, harness, nexus = harness_fixtures("acme", AcmeSimulator)

    ``make_sim(**kw)``: a started simulator with one account (``simulator_defaults`` under
    ``kw``), stopped after the test; ``sim``: one of those; ``harness(sim, **env)``: a
    :class:`Harness` (settings, registry, store, Redis, the service, the web app) pointed at
    it, closed after the test; ``nexus``: ``harness(sim)``."""

    @pytest.fixture(name="make_sim")
    def make_sim_fixture() -> Iterator[Callable[..., ProviderSimulator]]:
        started: list[ProviderSimulator] = []

        def factory(**kw: Any) -> ProviderSimulator:
            made = simulator(**{**simulator_defaults, **kw}).start()
            started.append(made)
            made.add_account()
            return made

        yield factory
        for made in started:
            made.stop()

    @pytest.fixture(name="sim")
    def sim_fixture(make_sim: Callable[..., ProviderSimulator]) -> ProviderSimulator:
        return make_sim()

    @pytest.fixture(name="harness")
    def harness_fixture(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> Iterator[Callable[..., Harness]]:
        made: list[Harness] = []

        def factory(sim: ProviderSimulator, **env: str) -> Harness:
            made.append(Harness(provider_id, sim, redis_url, tmp_path, monkeypatch, env=env))
            return made[-1]

        yield factory
        for world in made:
            world.close()

    @pytest.fixture(name="nexus")
    def nexus_fixture(sim: ProviderSimulator, harness: Callable[..., Harness]) -> Harness:
        return harness(sim)

    return make_sim_fixture, sim_fixture, harness_fixture, nexus_fixture
