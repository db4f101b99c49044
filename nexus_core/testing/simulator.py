"""A local provider-simulator harness for tests, benchmarks and demos.

* :class:`SimulatorServer` — any WSGI app on a free ``127.0.0.1`` port, HTTP/1.1 with
  persistent connections (one thread per connection), started and stopped around a test
  (``with SimulatorServer(app) as server: server.url``).
* :class:`PagedRecords` — a paged records API (``GET /records?cursor=N&limit=M`` → ``{"results":
  [...], "next": "..." | null}``; ``GET /changes?cursor=C`` → one page of changes) with fault
  injection: fail a page with a status a given number of times, answer 429 with ``Retry-After``,
  or slow a page down. It counts the hits per page.
* :func:`paged_provider` — a provider plugin that reads a :class:`PagedRecords` server through
  ``ctx.http`` (base URL from the installation's ``config["base_url"]``).

Plugin authors build their provider's simulator the same way: a WSGI app with the provider's
real paging and error shapes, served by :class:`SimulatorServer`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

from nexus_core.errors import ProviderError
from nexus_core.hookspecs import hookimpl
from nexus_core.models import Provider, RateLimits, Record, RetryConfig, SyncPage

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def address_string(self) -> str:  # no reverse DNS per request
        return str(self.client_address[0])


class _ServerHandler11(ServerHandler):
    headers: Any  # set by wsgiref's start_response (not in typeshed's stub)
    http_version = "1.1"
    has_length = False
    #: The connection is closed after this response: say so, or a client may send its next
    #: request on it before it sees the close.
    closing = False

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        self.has_length = "Content-Length" in self.headers
        if self.closing or not self.has_length:
            self.headers["Connection"] = "close"


class _KeepAliveHandler(_QuietHandler):
    """HTTP/1.1 with persistent connections, as real provider APIs answer (wsgiref's handler
    serves one request per connection: every request would pay a TCP connect and a server
    thread). A connection is closed after a response without Content-Length, after a request
    with a body (wsgiref cannot tell whether the app read all of it), and on
    ``Connection: close``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():  # sets close_connection from the version and headers
            return
        has_body = int(self.headers.get("Content-Length") or 0) > 0 or \
            "Transfer-Encoding" in self.headers
        handler = _ServerHandler11(
            self.rfile, self.wfile,  # type: ignore[arg-type]  # typeshed wants IO[bytes]
            self.get_stderr(), self.get_environ(), multithread=True)
        handler.closing = has_body or self.close_connection
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]
        if has_body or not handler.has_length:
            self.close_connection = True


class SimulatorServer:
    """Serve ``app`` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: WSGIApp, *, host: str = "127.0.0.1", port: int = 0,
                 keep_alive: bool = True) -> None:
        self.app = app
        self._server = make_server(host, port, app, server_class=_ThreadingWSGIServer,
                                   handler_class=_KeepAliveHandler if keep_alive
                                   else _QuietHandler)
        host_, self.port = self._server.server_address[:2]
        self.host = host_.decode() if isinstance(host_, bytes) else str(host_)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.05}, name=f"simulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def record_id(index: int) -> str:
    return f"rec-{index:07d}"


class PagedRecords:
    """A paged records API over ``total`` synthetic records, ``page_size`` per page.

    The cursor is the index of the first record of the page (as a string), so any page can be
    served from its cursor alone. Faults are armed per page number (1-based)."""

    def __init__(self, total: int, page_size: int = 100, *, payload_bytes: int = 64,
                 latency: float = 0.0, moving_delta_cursor: bool = False) -> None:
        self.total = total
        #: ``/changes`` answers the next cursor (``int(cursor) + 1``) instead of the same one,
        #: as a provider whose changes cursor is a timestamp does: every delta commits.
        self.moving_delta_cursor = moving_delta_cursor
        #: Seconds every records request takes (a remote provider's round trip).
        self.latency = latency
        self.page_size = page_size
        self.filler = "x" * payload_bytes
        self.hits: Counter[int] = Counter()
        self._faults: dict[int, list[tuple[int, dict[str, str], bytes]]] = {}
        self._delays: dict[int, float] = {}
        self.changes: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def pages(self) -> int:
        return -(-self.total // self.page_size)

    def fail_page(self, page: int, status: int = 500, *, times: int = 1,
                  headers: dict[str, str] | None = None, body: bytes = b'{"error":"boom"}') -> None:
        """Answer page ``page`` with ``status`` the next ``times`` times."""
        with self._lock:
            self._faults.setdefault(page, []).extend([(status, headers or {}, body)] * times)

    def rate_limit_page(self, page: int, retry_after: float = 1, *, times: int = 1) -> None:
        self.fail_page(page, 429, times=times, headers={"Retry-After": str(retry_after)},
                       body=b'{"error":"rate limited"}')

    def slow_page(self, page: int, seconds: float) -> None:
        self._delays[page] = seconds

    def page_records(self, start: int) -> list[dict[str, Any]]:
        end = min(start + self.page_size, self.total)
        return [{"id": record_id(i), "index": i, "name": f"Record {i}", "payload": self.filler}
                for i in range(start, end)]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/records":
            start = int(query.get("cursor") or 0)
            page = start // self.page_size + 1
            with self._lock:
                self.hits[page] += 1
                fault = self._faults.get(page)
                injected = fault.pop(0) if fault else None
            if page in self._delays or self.latency:
                time.sleep(self._delays.get(page, self.latency))
            if injected is not None:
                status, headers, body = injected
                start_response(f"{status} Injected", [("Content-Type", "application/json"),
                                                      *headers.items()])
                return [body]
            end = start + self.page_size
            data = {"results": self.page_records(start),
                    "next": str(end) if end < self.total else None}
        elif path == "/changes":
            cursor = query.get("cursor") or "0"
            if self.moving_delta_cursor and cursor.isdigit():
                cursor = str(int(cursor) + 1)
            data = {"results": self.changes, "next": cursor}
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error":"not found"}']
        body = json.dumps(data, separators=(",", ":")).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


class PagedProvider:
    """Provider plugin reading a :class:`PagedRecords` API through ``ctx.http``."""

    def __init__(self, provider_id: str = "sim", streams: tuple[str, ...] = ("records",),
                 *, http_retries: int = 0) -> None:
        # http_retries=0: a failing page surfaces to the job at once (the job-level retry
        # policy is what tests observe); real providers keep their RetryConfig.
        self.provider = Provider(
            id=provider_id, name=f"Simulated {provider_id}", version="1.0.0", auth_type="none",
            rate_limits=RateLimits(requests_per_second=100000, burst_size=100000),
            retry=RetryConfig(max_retries=http_retries), streams=streams,
        )

    @hookimpl
    def nexus_provider(self) -> Provider:
        return self.provider

    @staticmethod
    def _get(ctx: Any, path: str, params: dict[str, Any]) -> Any:
        resp = ctx.http.get(ctx.config["base_url"].rstrip("/") + path, params=params)
        if resp.status_code >= 400:  # ctx.http raises for 429/5xx/auth; other 4xx are ours
            raise ProviderError(f"simulator answered {resp.status_code} for {path}",
                                status=resp.status_code, retryable=False, provider=ctx.provider,
                                tenant_id=ctx.tenant_id, install_id=ctx.install_id)
        return resp.json()

    @hookimpl
    def backfill(self, ctx: Any, stream: str, cursor: str | None) -> SyncPage:
        data = self._get(ctx, "/records", {"cursor": cursor or "0",
                                           "limit": ctx.config.get("page_size", 100)})
        records = [Record(id=r["id"], stream=stream, data=r) for r in data["results"]]
        nxt = data["next"]
        return SyncPage(records=records, next_cursor=nxt if nxt is not None else "delta-0",
                        done=nxt is None)

    @hookimpl
    def delta(self, ctx: Any, stream: str, cursor: str | None) -> SyncPage:
        data = self._get(ctx, "/changes", {"cursor": cursor or "0"})
        records = [Record(id=r["id"], stream=stream, data=r) for r in data["results"]]
        return SyncPage(records=records, next_cursor=data["next"], done=True)


def paged_provider(provider_id: str = "sim", streams: tuple[str, ...] = ("records",),
                   *, http_retries: int = 0) -> PagedProvider:
    return PagedProvider(provider_id, streams, http_retries=http_retries)


def main(argv: list[str] | None = None) -> None:
    """``python -m nexus_core.testing.simulator --port P --total N``: serve a
    :class:`PagedRecords` API in the foreground (benchmarks run it in a process of its own)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--moving-delta-cursor", action="store_true",
                        help="/changes answers a new cursor each time (every delta commits)")
    args = parser.parse_args(argv)
    server = SimulatorServer(PagedRecords(args.total, args.page_size,
                                          payload_bytes=args.payload_bytes,
                                          latency=args.latency_ms / 1000,
                                          moving_delta_cursor=args.moving_delta_cursor),
                             port=args.port)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
