"""A minimal product on the Nexus Integration SDK: a "Connect HubSpot" button, the OAuth
callback landing page, and the tenant's synced contacts read from the SQL sink.

    PRODUCT_URL=http://127.0.0.1:8001 gunicorn 'app:create()' -b 127.0.0.1:8001

Its own users stand for tenants (a cookie here; your product has real sign-in). Everything the
SDK needs comes from the usual settings (NEXUS_DATABASE_URL, REDIS_URL, NEXUS_PUBLIC_URL of
`nexus serve`, NEXUS_SINK=sql, HUBSPOT_CLIENT_ID/SECRET, ...); PRODUCT_PROVIDER and
PRODUCT_STREAM choose what it connects and lists (default hubspot / contacts).
"""

from __future__ import annotations

import html
import os
from typing import Any

import falcon
import sqlalchemy as sa

from nexus_core import IntegrationService

PAGE = ("<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        "<body><h1>{title}</h1>{body}</body></html>")


def _page(resp: falcon.Response, title: str, body: str, status: int = 200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = PAGE.format(title=html.escape(title), body=body)


class Product:
    def __init__(self, service: IntegrationService, *, provider: str, stream: str,
                 product_url: str) -> None:
        self.service = service
        self.provider = provider
        self.stream = stream
        self.product_url = product_url.rstrip("/")
        self.name = service.get_connector(provider).name

    def _tenant(self, req: falcon.Request) -> str | None:
        """The signed-in user's tenant. A demo cookie; a real product uses its own sign-in —
        the connect link is created only for a user it has authenticated."""
        return req.get_cookie_values("tenant")[0] if req.get_cookie_values("tenant") else None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant = self._tenant(req)
        if tenant is None:
            _page(resp, "Sign in", "<form method='post' action='/login'>"
                  "<input name='tenant' placeholder='your company'>"
                  "<button>Sign in</button></form>")
            return
        installs = [i for i in self.service.list_installations(tenant)
                    if i.provider == self.provider]
        status = installs[0].status if installs else "not connected"
        _page(resp, f"{tenant}: integrations",
              f"<p>{html.escape(self.name)}: <b>{html.escape(status)}</b></p>"
              f"<form method='post' action='/connect'><button>Connect {html.escape(self.name)}"
              f"</button></form><p><a href='/records'>Synced {html.escape(self.stream)}</a></p>")

    def on_post_login(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = req.get_media(default_when_empty={}) or {}
        tenant = str(form.get("tenant") or "").strip()
        if not tenant:
            _page(resp, "Sign in", "<p>Name your company.</p>", 400)
            return
        resp.set_cookie("tenant", tenant, secure=self.product_url.startswith("https://"),
                        http_only=True, same_site="Lax")
        raise falcon.HTTPSeeOther("/")

    def on_post_connect(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant = self._tenant(req)
        if tenant is None:
            raise falcon.HTTPSeeOther("/")
        link = self.service.create_connect_link(
            self.provider, tenant, "main", config={"streams": [self.stream]},
            redirect_uri=f"{self.product_url}/oauth/callback", expires_in=900)
        raise falcon.HTTPSeeOther(link.url)

    def on_get_callback(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The provider sends the user back here: finish the connection (the state binds it
        to the tenant and installation the link was made for) and start the first sync."""
        from nexus_core.errors import NexusError

        if req.get_param("error"):
            _page(resp, "Not connected", f"<p>{html.escape(req.get_param('error'))}</p>", 400)
            return
        try:
            inst = self.service.complete_authorization(
                self.provider, req.get_param("code") or "", req.get_param("state") or "")
        except NexusError as exc:
            _page(resp, "Not connected", f"<p>{html.escape(exc.message)}</p>", 400)
            return
        self.service.start_backfill(inst.provider, inst.tenant_id, inst.install_id)
        _page(resp, f"{self.name} connected",
              f"<p>Account {html.escape(inst.account_id or '')} is connected; its "
              f"{html.escape(self.stream)} are syncing.</p><p><a href='/records'>See them</a></p>")

    def on_get_records(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The tenant's live records, straight from the SQL sink's table."""
        tenant = self._tenant(req)
        if tenant is None:
            raise falcon.HTTPSeeOther("/")
        from nexus_core.sinks.sql import record_table

        sink_url = self.service.settings.sink_database_url or self.service.settings.database_url
        engine = _engine(sink_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(record_table.c.record_id, record_table.c.data)
                .where(record_table.c.tenant_id == tenant,
                       record_table.c.provider == self.provider,
                       record_table.c.stream == self.stream,
                       record_table.c.deleted_at.is_(None))
                .order_by(record_table.c.record_id).limit(500)).all()
        items = "".join(f"<li id='r-{html.escape(r.record_id)}'>{html.escape(_label(r.data))}"
                        "</li>" for r in rows)
        _page(resp, f"{tenant}: {self.stream} ({len(rows)})", f"<ul>{items}</ul>")


def _label(data: Any) -> str:
    props = data.get("properties", data) if isinstance(data, dict) else {}
    for key in ("email", "name", "dealname", "firstname"):
        if props.get(key):
            return str(props[key])
    return str(data.get("id", "?")) if isinstance(data, dict) else "?"


_engines: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    if url not in _engines:
        _engines[url] = sa.create_engine(url)
    return _engines[url]


def create(service: IntegrationService | None = None) -> falcon.App:
    service = service or IntegrationService().initialize()
    product = Product(service, provider=os.environ.get("PRODUCT_PROVIDER", "hubspot"),
                      stream=os.environ.get("PRODUCT_STREAM", "contacts"),
                      product_url=os.environ.get("PRODUCT_URL", "http://127.0.0.1:8001"))
    app = falcon.App()
    app.add_route("/", product)
    app.add_route("/login", product, suffix="login")
    app.add_route("/connect", product, suffix="connect")
    app.add_route("/oauth/callback", product, suffix="callback")
    app.add_route("/records", product, suffix="records")
    return app
