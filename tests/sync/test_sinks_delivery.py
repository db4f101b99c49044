"""Records into the product through the real engine: the SQL sink and the signed HTTP forward
sink at once (`NEXUS_SINK=sql,http`), each failing a page on its own and visibly; the product
verifies the HTTP sink's deliveries with the official `standardwebhooks` library."""

from __future__ import annotations

import base64
import json
import os
import threading

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from nexus_core.testing.simulator import SimulatorServer

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Product:
    """The product's endpoint: verifies every delivery with `standardwebhooks`, keeps pages by
    their webhook-id (its idempotency key), and can be told to fail the next requests."""

    def __init__(self) -> None:
        self.pages: dict[str, dict] = {}
        self.posts = 0
        self.fail_next = 0
        self.fail_posts: set[int] = set()  # numbers of the POSTs to refuse (1-based)
        self.forged = 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        with self._lock:
            self.posts += 1
            if self.fail_next or self.posts in self.fail_posts:
                self.fail_next = max(0, self.fail_next - 1)
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return [b""]
        try:
            payload = Webhook(SECRET).verify(body, headers)
        except Exception:
            with self._lock:
                self.forged += 1
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return [b""]
        assert headers["idempotency-key"] == headers["webhook-id"]
        with self._lock:
            self.pages[headers["webhook-id"]] = payload
        start_response("204 No Content", [])
        return [b""]


@pytest.fixture
def product():
    app = Product()
    with SimulatorServer(app) as server:
        yield app, server.url + "/nexus/records"


@pytest.fixture
def sinks(sync_env, product, monkeypatch, db_url):
    """The SQL sink on SQLite and on PostgreSQL (``db_url``), the store on SQLite."""
    from nexus_core import runtime
    from nexus_core.config import get_settings, reset_settings
    from nexus_core.sinks import builtin_sinks

    app, url = product
    monkeypatch.setenv("NEXUS_SINK", "sql,http")
    monkeypatch.setenv("NEXUS_SINK_URL", url)
    monkeypatch.setenv("NEXUS_SINK_SECRET", SECRET)
    monkeypatch.setenv("NEXUS_SINK_DATABASE_URL", db_url)
    reset_settings()
    runtime.reset()
    sync_env.store = runtime.get_store()
    built = builtin_sinks(get_settings())
    assert built is not None and built.name == "sink-sql+http"
    sync_env.registry.register(built, built.name)
    yield built
    built.sinks[0].close()


def sql_ids(sink):
    from nexus_core.sinks.sql import record_table

    with sink.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(record_table.c.record_id))]


def test_every_page_reaches_both_sinks_once(sync_env, sinks, product):
    app, _ = product
    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    ids = sql_ids(sinks.sinks[0])
    assert len(ids) == len(set(ids)) == 1000
    pages = [p for p in app.pages.values() if p["type"] == "records"]
    assert len(pages) == 10 and app.forged == 0
    assert sorted(r["id"] for p in pages for r in p["records"]) == sorted(ids)
    assert {(p["tenant_id"], p["install_id"], p["provider"], p["stream"]) for p in pages} == \
        {("t1", "i1", "sim", "records")}


def test_a_failing_http_sink_fails_the_page_visibly_and_the_retry_loses_and_doubles_nothing(
    sync_env, sinks, product
):
    app, _ = product
    sync_env.install()
    app.fail_posts = {3}  # the product refuses the third page once: the job is retried
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    (run,) = sync_env.store.list_runs("t1", "i1")
    assert run.status == "succeeded" and run.records == 1000
    ids = sql_ids(sinks.sinks[0])
    assert len(ids) == len(set(ids)) == 1000  # the SQL sink took page 3 twice: one row each
    pages = [p for p in app.pages.values() if p["type"] == "records"]
    got = sorted(r["id"] for p in pages for r in p["records"])
    assert got == sorted(ids)  # the product: every page once, by its idempotency key
    assert app.posts == 11  # ten pages + the refused attempt


def test_the_error_names_the_sink_that_failed(sync_env, sinks, product):
    from nexus_core.errors import SinkError
    from nexus_core.models import ConnectorContext, Record

    app, _ = product
    app.fail_next = 1
    ctx = ConnectorContext(tenant_id="t1", install_id="i1", provider="sim")
    with pytest.raises(SinkError) as err:
        sinks.process_records(ctx, "records", [Record(id="r1", stream="records")])
    assert "1 of 2 sinks failed: sink-http: a page of 1 records record(s) refused by" in \
        str(err.value) and "HTTP 503" in str(err.value)
    assert sql_ids(sinks.sinks[0]) == ["r1"]  # the SQL sink took the page all the same


def test_a_forged_or_replayed_delivery_is_refused_by_the_official_library(product):
    app, url = product
    import requests

    body = json.dumps({"type": "records"}).encode()
    resp = requests.post(url, data=body, headers={"webhook-id": "x", "webhook-timestamp": "1",
                                                  "webhook-signature": "v1,AAAA"}, timeout=5)
    assert resp.status_code == 401 and app.forged == 1


def test_keys_generate_webhook_makes_a_secret_the_sink_and_the_library_accept():
    from click.testing import CliRunner

    from nexus_core.cli import cli
    from nexus_core.sinks.http import HttpSink

    secret = CliRunner().invoke(cli, ["keys", "generate", "--webhook"]).stdout.strip()
    assert secret.startswith("whsec_")
    HttpSink("https://product.example.com/hook", secret)  # accepted
    Webhook(secret)
