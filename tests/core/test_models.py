"""Every model round-trips through JSON with the one converter; secrets stay out of repr."""

from datetime import UTC, datetime, timedelta

import pytest

from nexus_core import (
    ConnectorContext,
    Credentials,
    EnvVar,
    Health,
    HmacSpec,
    Installation,
    IntegrationMetrics,
    OAuthConfig,
    PluginError,
    Provider,
    RateLimits,
    Record,
    RetryConfig,
    Stream,
    SyncPage,
    WebhookConfig,
    WebhookEvent,
    WebhookRequest,
)
from nexus_core.converters import from_json, to_json

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CREDS = Credentials(access_token="at-secret", refresh_token="rt-secret", expires_at=NOW,
                    scopes=("crm.objects.contacts.read",), extra={"instance_url": "https://x"})

EXAMPLES = [
    Provider(id="hubspot", name="HubSpot", version="1.0.0", base_url="https://api.hubapi.com",
             rate_limits=RateLimits(4, 10), scopes=("a", "b"), streams=("contacts",),
             webhook=WebhookConfig(scheme="hubspot-v3", secret_envs=("HUBSPOT_WEBHOOK_SECRET",),
                                   account_id_field="portalId"),
             oauth=OAuthConfig(authorize_url="https://app.hubspot.com/oauth/authorize",
                               token_url="https://api.hubapi.com/oauth/v1/token", pkce=True)),
    Provider(id="crm", name="CRM", version="2", streams=(
        "notes",
        Stream("contacts", primary_key="id", cursor_field="lastmodifieddate",
               json_schema={"type": "object", "properties": {"id": {"type": "string"}}},
               description="People"),
        Stream("line_items", primary_key=("order_id", "line"), cursor_field="updated_at"),
    ), env=(EnvVar("CRM_REGION", "us or eu", required=True), EnvVar("CRM_TOKEN", secret=True)),
        retry=RetryConfig(retry_statuses=(502, 503, 520)),
        webhook=WebhookConfig(scheme="hmac", secret_envs=("CRM_SECRET",), hmac=HmacSpec(
            header="X-Sig", prefix="v1=", encoding="base64", algorithm="sha512",
            message="{timestamp}.{body}", timestamp_header="X-T", timestamp_unit="ms")),
        oauth=OAuthConfig(authorize_url="https://crm/a", token_url="https://crm/t",
                          ok_field="ok", reauth_errors=("invalid_grant", "token_revoked"),
                          account_id_field="id", account_id_pattern=r"/id/([^/]+)/",
                          extra_fields={"team_name": "team.name"}, token_type="Bearer")),
    Installation(tenant_id="t", install_id="i", provider="hubspot", account_id="62515",
                 status="needs_reauth", config={"k": [1, 2]}, created_at=NOW, updated_at=NOW),
    CREDS,
    ConnectorContext(tenant_id="t", install_id="i", provider="hubspot", credentials=CREDS,
                     config={"a": 1}, metadata={"m": True}, account_id="62515"),
    Record(id="1", stream="contacts", data={"email": "a@b.c"}, updated_at=NOW, deleted=True),
    SyncPage(records=[Record(id="1", stream="s")], next_cursor="NTI1Cg%3D%3D", done=False),
    WebhookRequest(method="POST", url="https://h/webhooks/hubspot",
                   headers={"X-HubSpot-Signature-v3": "sig"}, body=b"\x00\xff[]", received_at=NOW),
    WebhookEvent(id="e1", type="contact.created", provider="hubspot", object_id="123",
                 account_id="62515", occurred_at=NOW, payload={"objectId": 123}),
    Health(healthy=True, auth_valid=True, api_accessible=True, rate_limit_status="90/110",
           checked_at=NOW, details={"x": 1}),
    IntegrationMetrics(connector_id="hubspot", tenant_id="t", operation="backfill", duration=1.5,
                       success=False, timestamp=NOW, records_processed=10, error_code="E",
                       retry_count=2),
]


@pytest.mark.parametrize("obj", EXAMPLES, ids=lambda o: type(o).__name__)
def test_model_round_trips_through_json(obj):
    text = to_json(obj)
    assert from_json(text, type(obj)) == obj
    assert to_json(from_json(text, type(obj))) == text


def test_context_runtime_fields_are_not_serialized():
    ctx = ConnectorContext(tenant_id="t", install_id="i", provider="p", http=object(), log=object())
    assert "http" not in to_json(ctx) and "log" not in to_json(ctx)
    back = from_json(to_json(ctx), ConnectorContext)
    assert back.http is None and back == ctx


@pytest.mark.parametrize("obj", [CREDS, EXAMPLES[3]], ids=["Credentials", "ConnectorContext"])
def test_secrets_never_appear_in_repr(obj):
    assert "secret" not in repr(obj)


def test_naive_datetimes_are_read_as_utc():
    rec = from_json('{"id": "1", "stream": "s", "updated_at": "2026-01-01T00:00:00"}', Record)
    assert rec.updated_at.tzinfo is not None and rec.updated_at.utcoffset() == timedelta(0)


def test_provider_rejects_bad_ids_and_auth_types():
    with pytest.raises(ValueError, match="slug"):
        Provider(id="has space", name="x", version="1")
    with pytest.raises(ValueError, match="auth_type must be one of"):
        Provider(id="x", name="x", version="1", auth_type="magic")


def test_credentials_expiry_margin():
    soon = Credentials(access_token="a", expires_at=NOW + timedelta(seconds=30))
    assert soon.expires_within(60, now=NOW) and not soon.expires_within(10, now=NOW)
    assert not Credentials(access_token="a").expires_within(10**9)


def test_streams_accept_names_and_stream_objects():
    provider = Provider(id="x", name="X", version="1",
                        streams=("widgets", Stream("gadgets", cursor_field="updated_at")))
    assert provider.streams == (Stream("widgets"), Stream("gadgets", cursor_field="updated_at"))
    assert provider.stream_names == ("widgets", "gadgets")
    assert provider.stream("widgets").primary_key == "id"
    assert provider.stream("gadgets").cursor_field == "updated_at"
    assert Provider(id="x", name="X", version="1", streams=["a"]).streams == (Stream("a"),)
    assert Stream("s", primary_key=["a", "b"]).primary_key == ("a", "b")


def test_an_unknown_stream_names_the_known_ones():
    provider = Provider(id="x", name="X", version="1", streams=("widgets", "gadgets"))
    with pytest.raises(PluginError, match="provider 'x' has no stream 'nope'; its streams: "
                                          "widgets, gadgets"):
        provider.stream("nope")
    with pytest.raises(PluginError, match="none declared"):
        Provider(id="y", name="Y", version="1").stream("a")


def test_streams_are_validated():
    with pytest.raises(ValueError, match="declared twice: a"):
        Provider(id="x", name="X", version="1", streams=("a", Stream("a", cursor_field="u")))
    with pytest.raises(ValueError, match="non-empty"):
        Stream("")
    with pytest.raises(ValueError, match="at least one field"):
        Stream("s", primary_key=())
    with pytest.raises(TypeError, match="a name or a nexus_core.Stream"):
        Provider(id="x", name="X", version="1", streams=(42,))


def test_providers_stay_hashable_with_their_dict_fields():
    provider = EXAMPLES[1]
    assert provider.streams[1].json_schema and provider.oauth.extra_fields
    assert {provider: 1}[provider] == 1


def test_a_rate_limit_wait_is_finite_capped_and_scoped():
    from nexus_core.models import MAX_RATE_LIMIT_WAIT, RateLimitWait

    assert RateLimitWait(5).scope == "bucket"
    assert RateLimitWait(10 ** 9, scope="account").seconds == MAX_RATE_LIMIT_WAIT
    for bad in (float("nan"), float("inf"), -1):
        with pytest.raises(ValueError):
            RateLimitWait(bad)
    with pytest.raises(ValueError, match="scope"):
        RateLimitWait(1, scope="tenant")


def test_a_stream_pattern_admits_named_streams_beyond_the_declared_ones():
    from nexus_core.converters import from_json, to_json
    from nexus_core.errors import PluginError
    from nexus_core.models import Provider, Stream, StreamPattern

    crm = Provider(id="crm", name="CRM", version="1", auth_type="none",
                   streams=(Stream("contacts", cursor_field="lastmodifieddate"),),
                   stream_pattern=StreamPattern(r"[a-z][a-z_]*|2-[0-9]+",
                                                cursor_field="hs_lastmodifieddate"))
    assert crm.stream("contacts").cursor_field == "lastmodifieddate"
    assert crm.stream("line_items") == Stream("line_items", cursor_field="hs_lastmodifieddate")
    assert crm.accepts_stream("2-1234") and not crm.accepts_stream("2-x")
    assert not crm.accepts_stream("Tickets") and not crm.accepts_stream(7)
    with pytest.raises(PluginError, match=r"its streams: contacts \(or any name matching "):
        crm.stream("../etc")
    assert from_json(to_json(crm), Provider) == crm and hash(crm)
    with pytest.raises(ValueError, match="not a regular expression"):
        StreamPattern("[a-")
