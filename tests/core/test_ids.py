"""Encodings of ids into job ids, Redis keys and file names are injective (defects 2 and 3 of the
hardening review): two distinct inputs never give one output, adversarial inputs — an id spelled
like another id's encoding — included."""

from __future__ import annotations

import hashlib
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rq.job import validate_job_id

from nexus_core import ids, queues
from nexus_core.breaker import breaker_key
from nexus_core.ratelimit import account_scope, limit_key

#: Strings that broke the old encodings, and their look-alikes.
TRICKY = [
    "a/b", "a_b", ".acme", "acme", "Acme", "ACME", "..", "_", ".", "日本", "中国", "a:b", "a",
    "b:c", "a__b", "a_", "_a", "-", "a-b", "", "acme corp",
    "h" + hashlib.sha256(b"acme corp").hexdigest()[:16],  # the old hash form of "acme corp"
    "_x616263", "abc", "_h" + "0" * 64, "%2F", "!a", "~" + "0" * 64, "x" * 64, "x" * 65,
    "x" * 200, "é", "e\u0301", "\U0001f600", "a\x00b", "a b",
]


def _alike(draw_text):
    """Strings built from other strings' encodings (the adversarial case)."""
    return st.one_of(
        draw_text,
        draw_text.map(ids.key_part),
        draw_text.map(ids.file_part),
        draw_text.map(lambda s: s.upper()),
        st.lists(draw_text, min_size=2, max_size=3).map("__".join),
        st.sampled_from(TRICKY),
    )


texts = _alike(st.text(max_size=70))
slugs = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=70)
any_id = st.one_of(texts, slugs)


@settings(max_examples=500)
@given(a=any_id, b=any_id)
def test_key_part_is_injective_and_a_valid_job_id(a, b):
    ka, kb = ids.key_part(a), ids.key_part(b)
    validate_job_id(ka)
    assert (ka == kb) == (a == b)


@settings(max_examples=300)
@given(parts=st.lists(any_id, min_size=1, max_size=5))
def test_joined_keys_split_back_into_their_parts(parts):
    key = ids.join_key(*parts)
    validate_job_id(key)
    encoded = ids.split_key(key)
    assert encoded == [ids.key_part(p) for p in parts]
    for original, part in zip(parts, encoded, strict=True):
        decoded = ids.decode_part(part)
        assert decoded is None or decoded == original
        if decoded is None:
            assert part == "_h" + hashlib.sha256(original.encode("utf-8", "surrogatepass")
                                                 ).hexdigest()


@settings(max_examples=300)
@given(a=st.lists(any_id, min_size=1, max_size=4), b=st.lists(any_id, min_size=1, max_size=4))
def test_join_key_is_injective_over_lists_of_any_length(a, b):
    assert (ids.join_key(*a) == ids.join_key(*b)) == (a == b)


@settings(max_examples=500)
@given(a=any_id, b=any_id)
def test_file_part_is_injective_even_on_a_case_insensitive_disk(a, b):
    fa, fb = ids.file_part(a), ids.file_part(b)
    assert (fa.lower() == fb.lower()) == (a == b)
    for name in (fa, fb):
        assert name not in (".", "..") and not name.startswith(".")
        assert "/" not in name and "\\" not in name and "\x00" not in name
        assert 0 < len(name.encode()) <= 120


def test_plain_ids_read_as_themselves():
    assert ids.join_key("nexus", "backfill", "hubspot", "tenant-1", "inst_a") == \
        "nexus__backfill__hubspot__tenant-1__inst_a"
    assert ids.file_part("tenant-1") == "tenant-1" and ids.file_part("Acme") == "!acme"


def test_every_tricky_pair_is_kept_apart_everywhere(tmp_path):
    from nexus_core.sinks import JsonlSink

    sink = JsonlSink(tmp_path)
    nonempty = [t for t in TRICKY if t]
    assert len({queues.job_id("backfill", "p", t, "i") for t in TRICKY}) == len(TRICKY)
    assert len({queues.backfill_rate_limit_key(t) for t in TRICKY}) == len(TRICKY)
    assert len({breaker_key("p", t, "i") for t in TRICKY}) == len(TRICKY)
    assert len({sink.path(t, "p", "s") for t in nonempty}) == len(nonempty)
    for t in nonempty:
        assert sink.path(t, "p", "s").resolve().is_relative_to(tmp_path.resolve())


def test_a_tenant_named_like_another_tenants_old_hash_gets_its_own_ids():
    """Defect 3: "h" + sha256(id)[:16] was the old encoding of a non-slug id; a tenant could
    simply be named that and share the other tenant's job ids, markers and dedupe keys."""
    victim = "acme corp"
    attacker = "h" + hashlib.sha256(victim.encode()).hexdigest()[:16]
    assert queues.job_id("backfill", "hubspot", victim, "main") != \
        queues.job_id("backfill", "hubspot", attacker, "main")
    assert queues.sync_key("delta", "hubspot", victim, "main", None) != \
        queues.sync_key("delta", "hubspot", attacker, "main", None)
    assert queues.backfill_rate_limit_key(victim) != queues.backfill_rate_limit_key(attacker)


def test_rate_limit_buckets_are_per_account_or_per_installation():
    # Without an account id, two tenants' installations named alike used to share a bucket
    # (the install id stood in for the account), and an install id could equal an account id.
    a = limit_key("hubspot", account_scope("t1", "main", None))
    b = limit_key("hubspot", account_scope("t2", "main", None))
    c = limit_key("hubspot", account_scope("t3", "x", "main"))
    assert len({a, b, c}) == 3
    shared = {limit_key("hubspot", account_scope(t, i, "62515")) for t, i in
              [("t1", "a"), ("t2", "b")]}
    assert shared == {"nexus:rl:hubspot__acct__62515"}  # one provider account, one budget
    assert breaker_key("p", "a:b", "c") != breaker_key("p", "a", "b:c")


@pytest.mark.parametrize(("value", "reason"), [
    ("", "non-empty"), ("x" * 201, "201 characters long"), ("a\nb", "control character"),
    ("a\x00", "control character"), (" a", "whitespace"), (5, "non-empty string"),
])
def test_check_id_refuses_what_cannot_be_stored(value, reason):
    with pytest.raises(ids.InvalidId, match=reason):
        ids.check_id("tenant_id", value)


@settings(max_examples=200)
@given(value=st.text(max_size=220))
def test_check_id_accepts_or_refuses_with_a_clear_error(value):
    try:
        assert ids.check_id("tenant_id", value) == value
    except ids.InvalidId as exc:
        assert str(exc).startswith("tenant_id ")
    else:
        assert 0 < len(value) <= ids.MAX_ID_LENGTH


def test_the_jsonl_sink_keeps_tenants_providers_and_streams_apart(tmp_path):
    """Defect 2: `a/b` and `a_b` (and `..` and `_`, `日本` and `中国`) shared a directory, lines
    carried no tenant, providers shared stream files and a stream named `events` was the webhook
    events file."""
    from nexus_core.models import ConnectorContext, Record, WebhookEvent
    from nexus_core.sinks import JsonlSink

    sink = JsonlSink(tmp_path)
    pairs = [("a/b", "hubspot"), ("a_b", "hubspot"), ("..", "hubspot"), ("_", "hubspot"),
             ("日本", "hubspot"), ("中国", "hubspot"), ("a/b", "salesforce")]
    for tenant, provider in pairs:
        ctx = ConnectorContext(tenant_id=tenant, install_id="i", provider=provider)
        sink.process_records(ctx, "contacts", [Record(id=f"{tenant}|{provider}",
                                                      stream="contacts")])
        sink.process_records(ctx, "events", [Record(id="rec", stream="events")])
        sink.process_events(ctx, [WebhookEvent(id="ev", type="t", provider=provider)])
    files = sorted(p for p in tmp_path.rglob("*.jsonl"))
    assert len(files) == 3 * len(pairs)
    for tenant, provider in pairs:
        lines = [json.loads(x) for x in sink.path(tenant, provider, "contacts").read_text()
                 .splitlines()]
        assert [(x["id"], x["tenant_id"], x["provider"]) for x in lines] == \
            [(f"{tenant}|{provider}", tenant, provider)]
        (event,) = sink.events_path(tenant, provider).read_text().splitlines()
        assert json.loads(event)["tenant_id"] == tenant
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in files)
