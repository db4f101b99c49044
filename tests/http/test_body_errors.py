"""Errors inside successful HTTP answers (``Provider.body_errors``): a provider that answers
``200 {"success": false, "failure": {"code": ...}}`` declares which codes mean an expired
token, a dead grant, a transient failure or an answer its connector reads itself; every other
code fails the request with the code in the error. The toy provider here is deliberately not
Slack-shaped (nested code, another ok field), so the mechanism is proven general."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_core.errors import AuthError, ProviderError
from nexus_core.models import BodyErrors, Credentials, RetryConfig

TOY = BodyErrors(ok_field="success", error_field=("failure.code", "failure.reason"),
                 expired=("SESSION_EXPIRED",), reauth=("APP_UNINSTALLED",),
                 transient=("BACKEND_BUSY",), returned=("NO_ACCESS",))


def _fail(kit, code, **more):
    return kit.json_answer(200, {"success": False, "failure": {"code": code}, **more})


@pytest.fixture
def toy(kit):
    return kit.make_provider(id="toy", name="Toy API", body_errors=TOY,
                             retry=RetryConfig(max_retries=2, max_backoff=0.01))


def _session(open_session, server, provider, **kw):
    kw.setdefault("credentials", lambda: Credentials(access_token="stale"))
    return open_session(server.url, provider=provider, **kw)


def test_an_expired_code_inside_a_200_refreshes_once_and_sends_again(
    toy, provider_server, open_session, kit
):
    def app(req):
        if req.headers.get("Authorization") == "Bearer fresh":
            return kit.json_answer(200, {"success": True, "items": [1]})
        return _fail(kit, "SESSION_EXPIRED")

    provider_server.answer(app)
    refreshed = []
    session = _session(open_session, provider_server, toy,
                       refresh=lambda old: refreshed.append(old) or
                       Credentials(access_token="fresh"))
    assert session.get("/items").json() == {"success": True, "items": [1]}
    assert len(refreshed) == 1 and len(provider_server.seen) == 2


def test_still_expired_after_the_refresh_needs_reauth(toy, provider_server, open_session, kit):
    provider_server.answer(lambda req: _fail(kit, "SESSION_EXPIRED"))
    session = _session(open_session, provider_server, toy,
                       refresh=lambda old: Credentials(access_token="fresh"))
    with pytest.raises(AuthError) as err:
        session.get("/items")
    assert err.value.needs_reauth and len(provider_server.seen) == 2


def test_a_reauth_code_needs_reauth_without_a_refresh(toy, provider_server, open_session, kit):
    provider_server.answer(lambda req: _fail(kit, "APP_UNINSTALLED"))
    refreshed = []
    session = _session(open_session, provider_server, toy, refresh=refreshed.append)
    with pytest.raises(AuthError) as err:
        session.get("/items")
    assert err.value.needs_reauth and "APP_UNINSTALLED" in str(err.value)
    assert refreshed == [] and len(provider_server.seen) == 1


def test_a_transient_code_is_retried_like_a_5xx(toy, provider_server, open_session, kit):
    provider_server.script(_fail(kit, "BACKEND_BUSY"),
                           kit.json_answer(200, {"success": True, "items": []}))
    session = _session(open_session, provider_server, toy)
    assert session.get("/items").json()["success"] is True
    assert len(provider_server.seen) == 2


def test_a_transient_code_past_the_retries_is_a_retryable_error(
    toy, provider_server, open_session, kit
):
    provider_server.answer(lambda req: _fail(kit, "BACKEND_BUSY"))
    session = _session(open_session, provider_server, toy)
    with pytest.raises(ProviderError) as err:
        session.get("/items")
    assert err.value.retryable and len(provider_server.seen) == 3  # 1 + max_retries


def test_a_returned_code_goes_back_to_the_connector(toy, provider_server, open_session, kit):
    provider_server.answer(lambda req: _fail(kit, "NO_ACCESS"))
    session = _session(open_session, provider_server, toy)
    assert session.get("/items").json()["failure"]["code"] == "NO_ACCESS"


def test_any_other_code_fails_the_request_naming_the_code(
    toy, provider_server, open_session, kit
):
    provider_server.answer(lambda req: _fail(kit, "INVALID_FILTER"))
    session = _session(open_session, provider_server, toy)
    with pytest.raises(ProviderError) as err:
        session.get("/items?filter=x")
    assert not err.value.retryable and err.value.code == "INVALID_FILTER"
    assert "'INVALID_FILTER'" in str(err.value) and "Toy API" in str(err.value)
    assert len(provider_server.seen) == 1


def test_the_second_error_field_is_read_when_the_first_is_absent(
    toy, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(
        200, {"success": False, "failure": {"reason": "QUOTA_GONE"}}))
    session = _session(open_session, provider_server, toy)
    with pytest.raises(ProviderError) as err:
        session.get("/items")
    assert err.value.code == "QUOTA_GONE"


def test_successes_and_undeclaring_providers_are_untouched(kit, provider_server, open_session):
    # A nested "success": false is data, not an error; a provider without body_errors gets
    # every 2xx back as it is.
    nested = {"success": True, "items": [{"success": False, "failure": {"code": "X"}}]}
    provider_server.answer(lambda req: kit.json_answer(200, nested))
    toy = kit.make_provider(id="toy", name="Toy API", body_errors=TOY)
    assert _session(open_session, provider_server, toy).get("/i").json() == nested
    provider_server.answer(lambda req: _fail(kit, "INVALID_FILTER"))
    plain = kit.make_provider(id="plain", name="Plain")
    assert _session(open_session, provider_server, plain).get("/i").status_code == 200


def test_a_code_declared_twice_is_refused():
    with pytest.raises(ValueError, match="both expired and transient"):
        BodyErrors(expired=("A",), transient=("A",))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.sampled_from(["success", "failure", "code", "reason"]),
                                   inner, max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_untrusted_bodies_never_break_the_reading(body, kit):
    """Whatever a 2xx body holds, the reading is a code only for a top-level
    ``success: false`` object, and never an exception."""
    import requests

    from nexus_core.config import load_settings
    from nexus_core.http import ProviderSession

    session = ProviderSession(kit.make_provider(id="toy", name="Toy API", body_errors=TOY),
                              tenant_id="t", install_id="i",
                              settings=load_settings(environ={}, env_file=None))
    resp = requests.Response()
    resp.status_code, resp._content = 200, body
    code = session._body_error(resp, False)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if code is not None:
        assert isinstance(data, dict) and data.get("success") is False
        assert isinstance(code, str) and 0 < len(code) <= 200
    elif isinstance(data, dict):
        assert data.get("success") is not False
    session.close()
