"""Redis Sentinel settings and the one Redis factory: REDIS_SENTINELS / REDIS_SENTINEL_MASTER /
REDIS_SENTINEL_PASSWORD are validated in one line, and every client built from settings is the
Sentinel master's when they are set (the master's password, database and TLS from REDIS_URL,
else REDIS_PASSWORD / REDIS_DB)."""

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_core.config import load_settings, parse_setting
from nexus_core.errors import ConfigError, describe_error
from nexus_core.queues import redis_connection

SENTINELS = {"REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b.internal:26380,[::1]:26381",
             "REDIS_SENTINEL_MASTER": "nexus-main"}


def test_sentinel_addresses_parse_to_host_port_pairs_in_order_once_each():
    s = load_settings({**SENTINELS, "REDIS_SENTINELS": SENTINELS["REDIS_SENTINELS"] +
                       ",10.0.0.1:26379"}, env_file=None)
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b.internal", 26380),
                                 ("::1", 26381))
    assert s.redis_sentinel_master == "nexus-main"
    assert s.redis_location == ("sentinel master 'nexus-main' via 10.0.0.1:26379,"
                                "sentinel-b.internal:26380,[::1]:26381")


def test_without_sentinels_the_location_is_redis_url_without_its_password():
    s = load_settings({"REDIS_URL": "redis://user:s3cret@cache:6380/2"}, env_file=None)
    assert s.redis_sentinels == () and s.redis_location == "redis://cache:6380/2"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "10.0.0.1:26379"}, "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS"),
        ({**SENTINELS, "REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL is a unix:// socket"),
        ({**SENTINELS, "REDIS_SENTINELS": "10.0.0.1"}, "REDIS_SENTINELS must be comma-separated"),
        ({**SENTINELS, "REDIS_SENTINELS": "a:1,,b:2"}, "(an empty address)"),
        ({**SENTINELS, "REDIS_SENTINELS": "a:0"}, "REDIS_SENTINELS: port 0 of 'a:0'"),
        ({**SENTINELS, "REDIS_SENTINELS": "a:70000"}, "is not in 1..65535"),
        ({**SENTINELS, "REDIS_SENTINELS": "::1:26379"}, "REDIS_SENTINELS must be"),
        ({**SENTINELS, "REDIS_SENTINELS": "[1::2::3]:26379"}, "is not an IPv6 address"),
        ({**SENTINELS, "REDIS_SENTINELS": "redis://a:26379"}, "REDIS_SENTINELS must be"),
        ({**SENTINELS, "REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER must be"),
        ({**SENTINELS, "REDIS_SENTINEL_PASSWORD": "pw\n"}, "REDIS_SENTINEL_PASSWORD must be"),
    ],
)
def test_bad_sentinel_settings_are_one_line_errors_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_settings(env, env_file=None)
    assert "\n" not in str(err.value)


_address_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(
        st.from_regex(r"[A-Za-z0-9_.\-\[\]:]{0,20}:[0-9+\-]{0,7}", fullmatch=True),
        st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["a", "[::1]", "10.0.0.1", "", "[]",
                                                            "-a", "a.", "[1::2::3]"]),
                  st.integers(-5, 70000)),
    ), max_size=4).map(",".join),
)


@settings(max_examples=300, deadline=None)
@given(raw=_address_text)
def test_any_sentinel_list_is_parsed_into_valid_addresses_or_refused_in_one_line(raw):
    try:
        parsed = parse_setting("REDIS_SENTINELS", raw)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith("REDIS_SENTINELS") and "\n" not in text and len(text) < 250
        return
    assert parsed and len(parsed) == len(set(parsed))
    for host, port in parsed:
        assert 1 <= port <= 65535 and host
        if ":" in host:
            ipaddress.IPv6Address(host)
        else:
            assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", host) and not host.endswith(".")


@settings(max_examples=150, deadline=None)
@given(raw=st.text(max_size=120))
def test_any_master_name_is_accepted_as_given_or_refused_in_one_line(raw):
    try:
        name = parse_setting("REDIS_SENTINEL_MASTER", raw)
    except ConfigError as exc:
        assert str(exc).startswith("REDIS_SENTINEL_MASTER") and "\n" not in str(exc)
        return
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) and name == raw.strip()


def test_the_factory_builds_a_sentinel_master_client_with_the_masters_credentials_from_redis_url():
    s = load_settings({**SENTINELS, "REDIS_URL": "rediss://app:m4ster@ignored:1/3",
                       "REDIS_SENTINEL_PASSWORD": "s3ntinel"}, env_file=None)
    client = redis_connection(s)
    pool = client.connection_pool
    from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "nexus-main"
    assert pool.connection_class is SentinelManagedSSLConnection  # rediss:// = TLS to the master
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "m4ster", 3)
    assert kwargs["socket_timeout"] == 30 and kwargs["socket_connect_timeout"] == 5
    probes = pool.sentinel_manager.sentinels
    assert [(p.connection_pool.connection_kwargs["host"], p.connection_pool.connection_kwargs[
        "port"]) for p in probes] == [("10.0.0.1", 26379), ("sentinel-b.internal", 26380),
                                      ("::1", 26381)]
    assert {p.connection_pool.connection_kwargs["password"] for p in probes} == {"s3ntinel"}


def test_without_redis_url_the_master_takes_redis_password_and_redis_db():
    s = load_settings({**SENTINELS, "REDIS_PASSWORD": "pw", "REDIS_DB": "4"}, env_file=None)
    kwargs = redis_connection(s).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"]) == ("pw", 4)


def test_every_client_built_from_settings_goes_through_the_factory(monkeypatch):
    """The web app, the service, the store's change feed and the runtime's client all ask
    queues.redis_connection: with sentinels configured, each is a Sentinel master client."""
    from nexus_core import runtime
    from nexus_core.config import reset_settings
    from nexus_core.service import IntegrationService
    from nexus_core.web import create_app

    for k, v in {**SENTINELS, "NEXUS_EMBEDDED_REDIS": "auto", "NEXUS_ENV": "development"}.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    runtime.reset()
    try:
        assert "SentinelConnectionPool" in repr(runtime.get_redis().connection_pool)
        service = IntegrationService()
        assert "SentinelConnectionPool" in repr(service.redis.connection_pool)
        app = create_app(store=object(), registry=None)
        assert app is not None
    finally:
        reset_settings()
        runtime.reset()


def test_an_unreachable_sentinel_deployment_is_one_line_naming_the_sentinels(monkeypatch):
    import redis

    from nexus_core.config import reset_settings

    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "nexus")
    reset_settings()
    try:
        client = redis_connection()
        with pytest.raises(redis.exceptions.ConnectionError) as err:
            client.ping()
        line = describe_error(err.value)
    finally:
        reset_settings()
    assert line.startswith("Redis at sentinel master 'nexus' via 127.0.0.1:1 is unreachable")
    assert "REDIS_SENTINELS / REDIS_SENTINEL_MASTER" in line and "\n" not in line
