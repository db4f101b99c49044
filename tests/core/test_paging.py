"""``nexus_core.paging``: each paginator against bare provider-shaped answers, end to end through
a real ``ProviderSession`` and a local simulator, and under random bodies and headers (a page or
a ProviderError, nothing else); ``IncrementalCursor`` never loses nor repeats a boundary record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_core import Provider, RateLimits, Record, RetryConfig
from nexus_core.config import load_settings
from nexus_core.errors import ProviderError
from nexus_core.http import ProviderSession
from nexus_core.paging import (
    BodyCursorPaginator,
    IncrementalCursor,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    record_key,
)
from nexus_core.testing.simulator import SimulatorServer

HUBSPOT_LIKE = BodyCursorPaginator("results", "paging.next.after", "after", page_size=100,
                                   page_size_param="limit")
SLACK_LIKE = BodyCursorPaginator("channels", "response_metadata.next_cursor", "cursor")
GITHUB_LIKE = LinkHeaderPaginator(page_size=30, page_size_param="per_page")
OFFSET = OffsetPaginator(limit=2, records_path="items", total_path="total")
PAGES = PageNumberPaginator(page_size=2, page_size_param="per_page", records_path="data")
SF_LIKE = NextUrlPaginator("nextRecordsUrl", "records")


# -- bare answers --------------------------------------------------------------------------


def test_body_cursor_reads_the_token_at_a_path_and_sends_it_back():
    body = {"results": [{"id": "1", "properties": {}}, {"id": "2"}],
            "paging": {"next": {"after": "NTI1Cg%3D%3D", "link": "?after=NTI1Cg%3D%3D"}}}
    assert HUBSPOT_LIKE.request("/crm/v3/objects/contacts", None, {"archived": "false"}) == (
        "/crm/v3/objects/contacts", {"archived": "false", "limit": 100})
    assert HUBSPOT_LIKE.request("/c", "NTI1Cg%3D%3D")[1] == {"limit": 100,
                                                             "after": "NTI1Cg%3D%3D"}
    assert HUBSPOT_LIKE.next_cursor(body, {}, None) == "NTI1Cg%3D%3D"
    page = HUBSPOT_LIKE.parse(body, {}, None, stream="contacts")
    assert [r.id for r in page.records] == ["1", "2"] and page.records[0].stream == "contacts"
    assert page.next_cursor == "NTI1Cg%3D%3D" and not page.done
    last = HUBSPOT_LIKE.parse({"results": [{"id": "3"}]}, {}, "NTI1Cg%3D%3D", stream="contacts")
    assert last.done and last.next_cursor is None
    # Slack: an empty next_cursor is the end
    end = {"ok": True, "channels": [{"id": "C1"}], "response_metadata": {"next_cursor": ""}}
    assert SLACK_LIKE.parse(end, {}, "dGVhbTpD", stream="channels").done


def test_a_repeated_page_token_is_an_error_not_a_loop():
    body = {"results": [{"id": "1"}], "paging": {"next": {"after": "abc"}}}
    with pytest.raises(ProviderError, match="same page token again"):
        HUBSPOT_LIKE.parse(body, {}, "abc", stream="contacts")
    with pytest.raises(ProviderError, match="same page token again"):
        SF_LIKE.parse({"records": [], "nextRecordsUrl": "/q/1"}, {}, "/q/1", stream="a")
    link = {"Link": '<https://api.x.test/r?page=2>; rel="next"'}
    with pytest.raises(ProviderError, match="same page token again"):
        GITHUB_LIKE.parse([], link, "https://api.x.test/r?page=2", stream="repos")


def test_link_header_follows_rel_next_in_any_case_and_resolves_relative_links():
    headers = {"link": '<https://api.github.com/user/repos?page=3&per_page=30>; rel="next", '
                       '<https://api.github.com/user/repos?page=50&per_page=30>; rel="last"'}
    assert GITHUB_LIKE.request("/user/repos", None, {"sort": "updated"}) == (
        "/user/repos", {"sort": "updated", "per_page": 30})
    nxt = GITHUB_LIKE.next_cursor([], headers, None)
    assert nxt == "https://api.github.com/user/repos?page=3&per_page=30"
    assert GITHUB_LIKE.request("/user/repos", nxt, {"sort": "updated"}) == (nxt, {})
    relative = {"Link": '</items?page=4>; rel="prev next"'}
    assert GITHUB_LIKE.next_cursor([], relative, "https://h.test/items?page=3") == \
        "https://h.test/items?page=4"
    assert GITHUB_LIKE.next_cursor([], {"Link": '<https://h/x>; rel="last"'}, None) is None
    assert GITHUB_LIKE.next_cursor([], {}, None) is None
    with pytest.raises(ProviderError, match="expected a list of records as the body"):
        GITHUB_LIKE.parse({"message": "Bad credentials"}, {}, None, stream="repos")


def test_offset_and_page_number_count_pages_and_stop_at_the_end():
    assert OFFSET.request("/items", None) == ("/items", {"offset": 0, "limit": 2})
    assert OFFSET.next_cursor({"items": [1, 2], "total": 5}, {}, None) == "2"
    assert OFFSET.next_cursor({"items": [1, 2], "total": 5}, {}, "2") == "4"
    assert OFFSET.next_cursor({"items": [1], "total": 5}, {}, "4") is None
    assert OffsetPaginator(limit=2).next_cursor([], {}, "4") is None  # an empty page ends
    with pytest.raises(ProviderError, match="expected a total count at 'total'"):
        OFFSET.next_cursor({"items": [1], "total": "many"}, {}, None)
    with pytest.raises(ProviderError, match="is not an offset"):
        OFFSET.request("/items", "-1")
    assert PAGES.request("/d", None) == ("/d", {"per_page": 2, "page": 1})
    assert PAGES.next_cursor({"data": [{"id": 1}]}, {}, None) == "2"  # a short page: go on
    assert PAGES.next_cursor({"data": []}, {}, "2") is None
    assert PageNumberPaginator(start=0).request("/d", None)[1] == {"page": 0}


def test_next_url_follows_salesforce_style_next_records_url():
    body = {"totalSize": 3, "done": False,
            "nextRecordsUrl": "/services/data/v66.0/query/01gD0000002HU6KIAW-2000",
            "records": [{"attributes": {"type": "Account"}, "Id": "001A"}]}
    page = SF_LIKE.parse(body, {}, None, stream="Account", primary_key="Id")
    assert [r.id for r in page.records] == ["001A"]
    assert SF_LIKE.request("/services/data/v66.0/query", page.next_cursor, {"q": "x"}) == (
        "/services/data/v66.0/query/01gD0000002HU6KIAW-2000", {})
    assert SF_LIKE.parse({"done": True, "records": []}, {}, page.next_cursor,
                         stream="Account").done


def test_records_need_their_primary_key_and_composite_keys_are_unambiguous():
    assert record_key({"order": "o-1", "line": 2}, ("order", "line")) == '["o-1",2]'
    assert record_key({"order": "o-1,2", "line": 3}, ("order", "line")) != \
        record_key({"order": "o-1", "line": "2,3"}, ("order", "line"))
    assert record_key({"properties": {"hs_object_id": "51"}}, "properties.hs_object_id") == "51"
    for item in ({"name": "no id"}, {"id": None}, {"id": True}, {"id": {"x": 1}}, ["id"], 3):
        with pytest.raises(ProviderError, match="primary key|JSON object"):
            record_key(item, "id")
    custom = HUBSPOT_LIKE.parse({"results": [{"id": "1", "x": 2}]}, {}, None, stream="s",
                                to_record=lambda it: Record(id="c-" + it["id"], stream="s"))
    assert custom.records[0].id == "c-1"


# -- through a real session and a local simulator -------------------------------------------


class PagedApi:
    """One data set served in five paging styles."""

    def __init__(self, total: int = 7, size: int = 3) -> None:
        self.items = [{"id": f"r{i}", "n": i} for i in range(total)]
        self.size = size
        self.requests: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.requests.append(path + "?" + environ.get("QUERY_STRING", ""))
        headers = [("Content-Type", "application/json")]
        if path == "/broken":
            start_response("404 Not Found", headers)
            return [b'{"error":"nope"}']
        if path == "/html":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [b"<html>maintenance</html>"]
        if path.startswith("/next/"):
            start = int(path.rsplit("/", 1)[1])
        else:
            start = int(q.get("after") or q.get("offset") or 0)
            if "page" in q:
                start = (int(q["page"]) - 1) * self.size
        chunk = self.items[start:start + self.size]
        more = start + self.size < len(self.items)
        nxt = str(start + self.size) if more else None
        if path == "/cursor":
            body: Any = {"results": chunk, "paging": {"next": {"after": nxt}} if more else {}}
        elif path == "/link":
            body = chunk
            if more:
                headers.append(("Link", f'</link?offset={nxt}>; rel="next"'))
        elif path == "/offset":
            body = {"items": chunk, "total": len(self.items)}
        elif path == "/pages":
            body = {"data": chunk}
        else:
            body = {"records": chunk, "nextRecordsUrl": f"/next/{nxt}" if more else None}
        start_response("200 OK", headers)
        return [json.dumps(body).encode()]


@pytest.fixture
def api() -> Any:
    app = PagedApi()
    with SimulatorServer(app) as server:
        provider = Provider(id="paged", name="Paged", version="1", auth_type="none",
                            base_url=server.url, streams=("items",),
                            rate_limits=RateLimits(1000, 1000), retry=RetryConfig(max_retries=0))
        session = ProviderSession(provider, tenant_id="t1", install_id="i1",
                                  settings=load_settings(environ={}, env_file=None))
        app.http = session
        yield app
        session.close()


@pytest.mark.parametrize(("paginator", "path"), [
    (BodyCursorPaginator("results", "paging.next.after", "after"), "/cursor"),
    (LinkHeaderPaginator(), "/link"),
    (OffsetPaginator(limit=3, records_path="items", total_path="total"), "/offset"),
    (PageNumberPaginator(records_path="data"), "/pages"),
    (NextUrlPaginator("nextRecordsUrl", "records"), "/first"),
], ids=["body-cursor", "link-header", "offset", "page-number", "next-url"])
def test_every_paginator_delivers_every_record_once_through_ctx_http(api, paginator, path):
    cursor, seen, pages = None, [], 0
    while True:
        page = paginator.fetch(api.http, path, cursor, stream="items")
        seen += [r.id for r in page.records]
        pages += 1
        cursor = page.next_cursor
        if page.done:
            break
        assert pages < 10
    assert seen == [f"r{i}" for i in range(7)]
    assert pages == (4 if path == "/pages" else 3)  # a page number API ends on an empty page


def test_fetch_turns_4xx_and_non_json_answers_into_provider_errors_with_context(api):
    with pytest.raises(ProviderError, match="answered 404 for /broken") as err:
        OFFSET.fetch(api.http, "/broken", None, stream="items")
    assert (err.value.status, err.value.provider, err.value.tenant_id) == (404, "paged", "t1")
    with pytest.raises(ProviderError, match="items: the answer for /html is not JSON"):
        OFFSET.fetch(api.http, "/html", None, stream="items")


# -- untrusted answers -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["id", "results", "paging", "next", "after", "items",
                                       "total", "data", "records", "nextRecordsUrl", "x"]),
                      children, max_size=4),
    max_leaves=20,
)
link_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['<https://h/x?page=2>; rel="next"', "<>; rel=next", "<", ";;;", ", ,",
                     '<https://h/x>; rel="next", <https://h/y>; rel="next"', "<a>; rel",
                     "<\x00>; rel=next", '<' + "a" * 9000 + '>; rel="next"']),
)
header_values = st.dictionaries(st.sampled_from(["Link", "link", "X-Other"]), link_values,
                                max_size=2)
PAGINATORS = [HUBSPOT_LIKE, SLACK_LIKE, GITHUB_LIKE, OFFSET, PAGES, SF_LIKE,
              OffsetPaginator(limit=5), BodyCursorPaginator("", "next", "cursor"),
              BodyCursorPaginator("results", "paging.next.after", "after")]
cursors = st.none() | st.text(max_size=20) | st.integers(0, 10**6).map(str)


@settings(max_examples=500, deadline=None)
@given(which=st.integers(0, len(PAGINATORS) - 1), body=json_values, headers=header_values,
       cursor=cursors, key=st.sampled_from(["id", ("id", "x"), "paging.next"]))
def test_any_answer_is_a_page_or_a_provider_error(which, body, headers, cursor, key):
    paginator = PAGINATORS[which]
    try:
        paginator.request("/p", cursor, {"q": 1})
        page = paginator.parse(body, headers, cursor, stream="s", primary_key=key)
    except ProviderError as exc:
        assert exc.message and not exc.retryable
        return
    assert all(isinstance(r, Record) and isinstance(r.id, str) for r in page.records)
    assert page.done == (page.next_cursor is None)
    assert page.next_cursor is None or (isinstance(page.next_cursor, str)
                                        and page.next_cursor != cursor)


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
       status=st.sampled_from(["200 OK", "201 Created", "404 Not Found", "410 Gone"]),
       link=link_values.filter(lambda v: "\x00" not in v and v.isprintable() and len(v) < 500))
def test_any_answer_over_http_is_a_page_or_a_provider_error(body, status, link):
    class Served:
        def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
            start_response(status, [("Content-Type", "application/json"),
                                    ("Link", link.encode("latin-1", "replace").decode("latin-1"))])
            return [body]

    provider = Provider(id="rnd", name="Rnd", version="1", auth_type="none", streams=("s",),
                        retry=RetryConfig(max_retries=0))
    with SimulatorServer(Served()) as server, ProviderSession(
            provider, tenant_id="t", install_id="i",
            settings=load_settings(environ={}, env_file=None)) as http:
        for paginator in (HUBSPOT_LIKE, GITHUB_LIKE, OFFSET):
            try:
                page = paginator.fetch(http, server.url + "/p", None, stream="s")
            except ProviderError as exc:
                assert exc.provider == "rnd"
                continue
            assert all(isinstance(r.id, str) for r in page.records)


# -- incremental cursors ---------------------------------------------------------------------


EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def rec(rid: str, at: Any, **data: Any) -> Record:
    return Record(id=rid, stream="s", data={"id": rid, "updated_at": at, **data})


def test_the_cursor_keeps_the_highest_value_and_the_ids_at_it():
    empty = IncrementalCursor.decode(None)
    assert empty == IncrementalCursor() and IncrementalCursor.decode("") == empty
    first = [rec("a", "2024-01-01T00:00:00Z"), rec("b", "2024-01-02T00:00:00Z"),
             rec("c", "2024-01-02T00:00:00.000+0000")]
    cursor = empty.advance(first, "updated_at")
    state = IncrementalCursor.decode(cursor)
    assert state.at == "2024-01-02T00:00:00Z" and state.ids == ("b", "c")
    assert json.loads(cursor) == {"at": "2024-01-02T00:00:00Z", "ids": ["b", "c"]}
    # the next `>=` query returns b and c again, d committed later at the same instant, and e
    again = [rec("b", "2024-01-02T00:00:00Z"), rec("c", "2024-01-02T00:00:00Z"),
             rec("d", "2024-01-02T00:00:00+00:00"), rec("e", "2024-01-03T00:00:00Z")]
    fresh = state.drop_seen(again, "updated_at")
    assert [r.id for r in fresh] == ["d", "e"]
    after = IncrementalCursor.decode(state.advance(fresh, "updated_at"))
    assert (after.at, after.ids) == ("2024-01-03T00:00:00Z", ("e",))
    # nothing new: the cursor does not move
    assert state.advance([], "updated_at") == state.encode()
    # a changed record (same id, later value) is not "seen"
    assert state.drop_seen([rec("b", "2024-01-05T00:00:00Z")], "updated_at")[0].id == "b"


def test_numbers_and_numeric_text_compare_as_numbers():
    state = IncrementalCursor().advanced([rec("a", "999"), rec("b", "1000"), rec("c", 1000)],
                                         "updated_at")
    assert state.at == "1000" and state.ids == ("b", "c")
    with pytest.raises(ProviderError, match="mixes numbers and dates"):
        state.advanced([rec("d", "2024-01-01")], "updated_at")
    with pytest.raises(ProviderError, match="neither a number nor an ISO-8601 date"):
        IncrementalCursor().advanced([rec("x", "yesterday")], "updated_at")
    keyed = IncrementalCursor().advanced(
        [Record(id="ignored", stream="s", data={"k": "K1", "m": {"ts": 5}})], "m.ts",
        primary_key="k")
    assert (keyed.at, keyed.ids) == (5, ("K1",))


@pytest.mark.parametrize("garbage", ["not json", "[1]", '{"ids": 3}', '{"at": true}',
                                     '{"at": {"x": 1}}', "{"])
def test_a_cursor_that_is_not_incremental_is_a_provider_error(garbage):
    with pytest.raises(ProviderError, match="cursor"):
        IncrementalCursor.decode(garbage)


@settings(max_examples=200, deadline=None)
@given(rounds=st.lists(st.lists(st.integers(0, 2), max_size=6), min_size=1, max_size=8),
       numeric=st.booleans())
def test_a_ge_delta_with_the_cursor_delivers_every_record_exactly_once(rounds, numeric):
    """A provider whose records keep arriving, some committed later with the timestamp of the
    last delta's boundary: every round the delta asks for changes >= at."""
    stored: list[Record] = []
    delivered: list[str] = []
    cursor: str | None = None
    clock = 0
    for batch in rounds:
        for step in batch:  # 0: the same instant as the newest record so far
            clock += step
            rid = f"r{len(stored)}"
            at: Any = clock if numeric else (EPOCH + timedelta(seconds=clock)).isoformat()
            stored.append(rec(rid, at))
        state = IncrementalCursor.decode(cursor)
        # one format per run: numbers, or ISO text that sorts like the instants it names
        answer = [r for r in stored if state.at is None or r.data["updated_at"] >= state.at]
        fresh = state.drop_seen(answer, "updated_at")
        delivered += [r.id for r in fresh]
        cursor = state.advance(fresh, "updated_at")
    assert sorted(delivered) == sorted(r.id for r in stored)
    assert len(delivered) == len(set(delivered))
