"""One test per hook (test_hook_<name>): each hook's calling convention, through a real
plugin manager. The meta-test in test_docs.py checks that every hookspec has one."""

import json
from datetime import UTC, datetime

import pytest

from nexus_core import (
    BaseConnector,
    ConnectorContext,
    Credentials,
    Health,
    Provider,
    Record,
    SyncPage,
    WebhookEvent,
    WebhookRequest,
    hookimpl,
)
from nexus_core.plugins import PluginRegistry


def make_connector(pid, **methods):
    attrs = {"provider": Provider(id=pid, name=pid, version="1", auth_type="none",
                                  streams=("s",)),
             "backfill": lambda self, ctx, stream, cursor: SyncPage(done=True)}
    attrs.update(methods)
    return type(f"{pid.title()}Connector", (BaseConnector,), attrs)


@pytest.fixture
def reg():
    return PluginRegistry()


def ctx(provider="alpha", **kw):
    return ConnectorContext(tenant_id="t1", install_id="i1", provider=provider, **kw)


def both(reg, hook, a_impl, b_impl):
    """Register providers alpha and beta, both implementing `hook` differently."""
    assert reg.register(make_connector("alpha", **{hook: a_impl}), "alpha").status == "ok"
    assert reg.register(make_connector("beta", **{hook: b_impl}), "beta").status == "ok"


def test_hook_nexus_provider(reg):
    reg.register(make_connector("alpha"), "alpha")
    reg.register(make_connector("beta"), "beta")
    assert list(reg.providers) == ["alpha", "beta"]
    assert reg.plugin_info_for("beta").name == "beta"


def test_hook_authorize(reg):
    both(reg, "authorize",
         lambda self, ctx, code, redirect_uri, code_verifier: Credentials(
             access_token=f"a-{code}-{code_verifier}"),
         lambda self, ctx, code: Credentials(access_token=f"b-{code}"))
    creds = reg.hook("authorize", "beta")(ctx=ctx("beta"), code="c1", redirect_uri="r",
                                           code_verifier="v")
    assert creds.access_token == "b-c1"
    creds = reg.hook("authorize", "alpha")(ctx=ctx(), code="c2", redirect_uri="r", code_verifier="v")
    assert creds.access_token == "a-c2-v"


def test_hook_authorize_returns_none_when_provider_leaves_it_to_the_core(reg):
    reg.register(make_connector("alpha"), "alpha")
    assert reg.hook("authorize", "alpha")(ctx=ctx(), code="c", redirect_uri="r",
                                          code_verifier=None) is None
    assert not reg.implements("authorize", "alpha")


def test_hook_refresh(reg):
    both(reg, "refresh",
         lambda self, ctx: Credentials(access_token="alpha-new"),
         lambda self, ctx: Credentials(access_token="beta-" + ctx.credentials.refresh_token))
    c = ctx("beta", credentials=Credentials(refresh_token="r1"))
    assert reg.hook("refresh", "beta")(ctx=c).access_token == "beta-r1"


def test_hook_backfill(reg):
    both(reg, "backfill",
         lambda self, ctx, stream, cursor: SyncPage(
             records=[Record(id="1", stream=stream)], next_cursor="2", done=False),
         lambda self, ctx, stream, cursor: SyncPage(done=True))
    page = reg.hook("backfill", "alpha")(ctx=ctx(), stream="contacts", cursor=None)
    assert [r.stream for r in page.records] == ["contacts"] and page.next_cursor == "2"


def test_hook_delta(reg):
    both(reg, "delta",
         lambda self, ctx, stream, cursor: SyncPage(next_cursor=f"{cursor}+1", done=True),
         lambda self, ctx, stream, cursor: SyncPage(next_cursor="beta", done=True))
    assert reg.hook("delta", "alpha")(ctx=ctx(), stream="s", cursor="c9").next_cursor == "c9+1"


def test_hook_handle_webhook(reg):
    def alpha(self, ctx, request):
        body = json.loads(request.body)
        return [WebhookEvent(id=str(e["id"]), type=e["type"], provider="alpha") for e in body]

    both(reg, "handle_webhook", alpha, lambda self, ctx, request: [])
    request = WebhookRequest(method="POST", url="https://h/webhooks/alpha",
                             body=b'[{"id": 1, "type": "contact.created"}]')
    events = reg.hook("handle_webhook", "alpha")(ctx=ctx(), request=request)
    assert [(e.id, e.type) for e in events] == [("1", "contact.created")]


def test_hook_verify_webhook(reg):
    import hmac

    def verify(self, provider, request, secrets):
        sent = request.header("X-Sig") or ""
        return any(hmac.compare_digest(sent, s) for s in secrets)

    both(reg, "verify_webhook", verify, lambda self, provider, request, secrets: True)
    alpha = reg.provider("alpha")
    good = WebhookRequest(method="POST", url="u", headers={"x-sig": "s2"})
    hook = reg.hook("verify_webhook", "alpha")
    assert hook(provider=alpha, request=good, secrets=["s1", "s2"]) is True
    assert hook(provider=alpha, request=good, secrets=["s1"]) is False


def test_hook_parse_webhook_body(reg):
    def lines(self, provider, request):
        return [dict(pair.split("=", 1) for pair in line.split("&"))
                for line in request.body.decode().splitlines()]

    both(reg, "parse_webhook_body", lines, lambda self, provider, request: [{"beta": True}])
    request = WebhookRequest(method="POST", url="u", body=b"org=o1&id=n1\norg=o2&id=n2")
    events = reg.hook("parse_webhook_body", "alpha")(provider=reg.provider("alpha"),
                                                     request=request)
    assert events == [{"org": "o1", "id": "n1"}, {"org": "o2", "id": "n2"}]
    assert reg.hook("parse_webhook_body", "beta")(provider=reg.provider("beta"),
                                                  request=request) == [{"beta": True}]


def test_hook_health_check(reg):
    both(reg, "health_check",
         lambda self, ctx: Health(healthy=False, auth_valid=False, error_count=3),
         lambda self, ctx: Health(healthy=True))
    assert reg.hook("health_check", "alpha")(ctx=ctx()).error_count == 3
    assert reg.hook("health_check", "beta")(ctx=ctx("beta")).healthy


def test_hook_is_token_expired(reg):
    both(reg, "is_token_expired",
         lambda self, provider, status, body: status == 401 and b"EXPIRED_AUTHENTICATION" in body,
         lambda self, provider, status, body: b"invalid_auth" in body)
    hook = reg.hook("is_token_expired", "alpha")
    p = reg.provider("alpha")
    assert hook(provider=p, status=401, headers={}, body=b'{"category":"EXPIRED_AUTHENTICATION"}')
    assert not hook(provider=p, status=401, headers={}, body=b'{"category":"INVALID_SCOPE"}')
    assert reg.hook("is_token_expired", "beta")(
        provider=reg.provider("beta"), status=200, headers={}, body=b'{"ok":false,"error":"invalid_auth"}')


def test_hook_should_retry(reg):
    both(reg, "should_retry",
         lambda self, provider, status, body: status == 200 and b'"internal_error"' in body,
         lambda self, status: None)
    hook = reg.hook("should_retry", "alpha")
    p = reg.provider("alpha")
    assert hook(provider=p, status=200, headers={}, body=b'{"ok":false,"error":"internal_error"}')
    assert not hook(provider=p, status=200, headers={}, body=b'{"ok":true}')
    assert reg.hook("should_retry", "beta")(provider=reg.provider("beta"), status=200,
                                            headers={}, body=b'"internal_error"') is None


def test_hook_parse_rate_limit(reg):
    both(reg, "parse_rate_limit",
         lambda self, provider, headers: {"remaining": int(headers["X-Remaining"])},
         lambda self, provider, headers: None)
    assert reg.hook("parse_rate_limit", "alpha")(
        provider=reg.provider("alpha"), headers={"X-Remaining": "7"}) == {"remaining": 7}


def test_hook_rate_limit_wait(reg):
    from nexus_core.models import RateLimitWait

    both(reg, "rate_limit_wait",
         lambda self, provider, status, headers, body:
         RateLimitWait(60, scope="account") if b"DAILY" in body else None,
         lambda self, provider, status, headers, body: 1.0)
    hook = reg.hook("rate_limit_wait", "alpha")
    assert hook(provider=reg.provider("alpha"), status=429, headers={},
                body=b'{"policyName":"DAILY"}') == RateLimitWait(60, scope="account")
    assert hook(provider=reg.provider("alpha"), status=429, headers={}, body=b"{}") is None


def test_hook_validate_config(reg):
    both(reg, "validate_config",
         lambda self, provider, config: [] if isinstance(config.get("page_size", 1), int)
         else ["page_size must be an integer"],
         lambda self, provider, config: ["beta says no"])
    hook = reg.hook("validate_config", "alpha")
    assert hook(provider=reg.provider("alpha"), config={"page_size": 5}) == []
    assert hook(provider=reg.provider("alpha"), config={"page_size": "x"}) == [
        "page_size must be an integer"]
    from nexus_core import IntegrationService
    from nexus_core.config import load_settings

    service = IntegrationService(settings=load_settings({}, env_file=None), registry=reg)
    check = service.validate_connector_config("alpha", {"page_size": "x", "streams": ["s"]})
    assert not check.valid and check.errors == ["page_size must be an integer"]
    assert service.validate_connector_config("beta", {}).errors == ["beta says no"]


def test_hook_process_records(reg):
    received = []

    class Sink:
        def __init__(self, name):
            self.name = name

        @hookimpl
        def process_records(self, ctx, stream, records):
            received.append((self.name, stream, [r.id for r in records]))

    reg.register(Sink("one"), "sink-one")
    reg.register(Sink("two"), "sink-two")
    reg.pm.hook.process_records(ctx=ctx(), stream="s", records=[Record(id="r1", stream="s")])
    assert sorted(received) == [("one", "s", ["r1"]), ("two", "s", ["r1"])]


def test_hook_process_events(reg):
    received = []

    class Sink:
        @hookimpl
        def process_events(self, ctx, events):
            received.extend((ctx.tenant_id, e.id) for e in events)

    class FailingSink:
        @hookimpl
        def process_events(self, events):
            raise RuntimeError("warehouse down")

    reg.register(Sink(), "sink")
    event = WebhookEvent(id="e1", type="t", provider="alpha", occurred_at=datetime.now(UTC))
    reg.pm.hook.process_events(ctx=ctx(), events=[event])
    assert received == [("t1", "e1")]
    reg.register(FailingSink(), "failing")
    with pytest.raises(RuntimeError, match="warehouse down"):
        reg.pm.hook.process_events(ctx=ctx(), events=[event])
