"""The "Toolkit" section of docs/authoring.md is a working connector: its code blocks run in
order (their asserts included), and the plugin they define backfills, deltas (without losing or
repeating boundary records), retries, refreshes a signed token and verifies webhooks against a
local simulator, through the real plugin manager and ``ProviderSession``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import types
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from nexus_core import ConnectorContext, Credentials, WebhookRequest
from nexus_core import webhooks as wh
from nexus_core.config import load_settings
from nexus_core.http import ProviderSession
from nexus_core.paging import IncrementalCursor
from nexus_core.plugins import PluginRegistry
from nexus_core.testing.simulator import SimulatorServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "authoring.md"


def toolkit_blocks() -> list[str]:
    text = DOC.read_text()
    section = text.split("\n## Toolkit\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python(?: exec)?\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def plugin() -> types.ModuleType:
    module = types.ModuleType("acme_from_the_docs")
    for block in toolkit_blocks():
        exec(compile(block, str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


def test_the_toolkit_section_has_code_and_it_runs(plugin):
    assert len(toolkit_blocks()) >= 6
    assert plugin.PROVIDER.id == "acme"


class AcmeApi:
    """The API the docs' connector is written for: HubSpot-style paging, ``updated_since`` (>=)
    sorted by ``updated_at``, a transient error inside a 200 once, and a token endpoint that
    signs its answers."""

    def __init__(self) -> None:
        self.records = [{"id": f"c{i}", "updated_at": f"2024-01-01T00:00:0{i // 3}Z"}
                        for i in range(7)]  # three records share each second
        self.flaky = 1
        self.hits = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/oauth/token":
            ident, issued = "https://login.acme.example/id/ORG1/U1", "1700000000000"
            sig = base64.b64encode(hmac.new(b"acme-secret", (ident + issued).encode(),
                                            hashlib.sha256).digest()).decode()
            body: Any = {"access_token": "at-2", "token_type": "bearer", "expires_in": 3600,
                         "id": ident, "issued_at": issued, "signature": sig,
                         "account": {"id": "ORG1", "region": "eu"}}
        else:
            self.hits += 1
            if self.flaky:
                self.flaky -= 1
                body = {"error": "internal_error"}
            else:
                rows = sorted(self.records, key=lambda r: r["updated_at"]) \
                    if "sort" in q else self.records
                if "updated_since" in q:
                    rows = [r for r in rows if r["updated_at"] >= q["updated_since"]]
                start, size = int(q.get("after") or 0), int(q.get("limit") or 100)
                more = start + size < len(rows)
                body = {"results": rows[start:start + size],
                        "paging": {"next": {"after": str(start + size)}} if more else {}}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]


@pytest.fixture
def acme(plugin: types.ModuleType) -> Any:
    registry = PluginRegistry()
    info = registry.register(plugin, "acme")
    assert info.status == "ok", info.reason
    app = AcmeApi()
    with SimulatorServer(app) as server:
        settings = load_settings(environ={
            "ACME_BASE_URL": server.url, "ACME_CLIENT_ID": "cid",
            "ACME_CLIENT_SECRET": "acme-secret", "NEXUS_HTTP_BACKOFF_BASE": "0.01"},
            env_file=None)
        http = ProviderSession(registry.provider("acme"), tenant_id="t", install_id="i",
                               registry=registry, settings=settings)
        app.ctx = ConnectorContext(tenant_id="t", install_id="i", provider="acme", http=http,
                                   credentials=Credentials(access_token="at-1",
                                                           refresh_token="rt-1"))
        app.registry, app.settings = registry, settings
        yield app
        http.close()


def test_the_docs_connector_backfills_every_page_and_deltas_exactly_once(acme):
    backfill = acme.registry.hook("backfill", "acme")
    page = backfill(ctx=acme.ctx, stream="contacts", cursor=None)
    assert acme.hits == 2  # the error inside a 200 was retried (should_retry)
    assert [r.id for r in page.records] == [f"c{i}" for i in range(7)] and page.done
    delta = acme.registry.hook("delta", "acme")
    cursor, delivered = None, []
    for _ in range(5):
        page = delta(ctx=acme.ctx, stream="contacts", cursor=cursor)
        delivered += [r.id for r in page.records]
        cursor = page.next_cursor
        if page.done:
            break
    assert delivered == [f"c{i}" for i in range(7)]
    # a record committed later with the boundary timestamp, and a newer one
    acme.records += [{"id": "late", "updated_at": "2024-01-01T00:00:02Z"},
                     {"id": "new", "updated_at": "2024-01-01T00:00:09Z"}]
    page = delta(ctx=acme.ctx, stream="contacts", cursor=cursor)
    assert [r.id for r in page.records] == ["late", "new"]
    state = IncrementalCursor.decode(page.next_cursor)
    assert (state.at, state.ids) == ("2024-01-01T00:00:09Z", ("new",))
    quiet = delta(ctx=acme.ctx, stream="contacts", cursor=page.next_cursor)
    assert quiet.records == [] and quiet.done and quiet.next_cursor == page.next_cursor


def test_the_docs_refresh_hook_checks_the_signature_and_reads_the_answer(acme):
    from nexus_core import auth

    refresh = acme.registry.hook("refresh", "acme")
    provider = acme.registry.provider("acme")
    with auth.operation(provider, acme.settings, {"provider": "acme"}):
        creds = refresh(ctx=acme.ctx)
    assert creds.access_token == "at-2" and creds.refresh_token == "rt-1"
    assert creds.extra == {"account_id": "ORG1", "region": "eu"}


def test_the_docs_hmac_spec_verifies_and_rejects(plugin):
    spec = plugin.PROVIDER.webhook.hmac
    body = b'{"account_id": "A1", "type": "contact.updated"}'
    request = WebhookRequest(method="POST", url="https://h/webhooks/acme", body=body,
                             headers={"X-Acme-Signature": wh.sign_hmac(spec, "s3cret", body)})
    wh.verify_request(plugin.PROVIDER, request, ["s3cret"], wh.Check(url=request.url))
    with pytest.raises(wh.WebhookRejected):
        wh.verify_request(plugin.PROVIDER, request, ["other"], wh.Check(url=request.url))
