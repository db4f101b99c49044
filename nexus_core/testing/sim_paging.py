"""The server side of the paging styles and webhook signatures, for simulators: what a provider
sends, built the way the provider builds it.

Paging — each returns ``(items of this page, what the answer must carry to reach the next)``:

* :func:`cursor_page` — an opaque token (``paging.next.after``, ``next_cursor``);
* :func:`offset_page` — ``?offset=&limit=``;
* :func:`number_page` — ``?page=`` (1-based);
* :func:`link_header` — RFC 8288 ``Link: <…>; rel="next"`` for a next-page URL.

Webhooks — :class:`WebhookSender` signs a body for any scheme the core verifies
(:data:`nexus_core.webhook_schemes.SENDERS`) and posts it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from nexus_core.webhook_schemes import SENDERS, SignedDelivery


def encode_token(offset: int) -> str:
    """An opaque page token for ``offset`` (what providers' ``after`` tokens look like)."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_token(token: str | None) -> int | None:
    """The offset of a token from :func:`encode_token`; None when it is not one (answer 400)."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not raw.startswith("o:") or not raw[2:].isdigit():
        return None
    return int(raw[2:])


def cursor_page(items: Sequence[Any], token: str | None, limit: int
                ) -> tuple[list[Any], str | None]:
    """Items of the page at ``token`` and the next token (None at the end). Raises
    ValueError for a token it did not issue."""
    start = decode_token(token)
    if start is None:
        raise ValueError(f"invalid page token {token!r}")
    page = list(items[start:start + limit])
    return page, encode_token(start + limit) if start + limit < len(items) else None


def offset_page(items: Sequence[Any], offset: int, limit: int) -> tuple[list[Any], int | None]:
    """Items at ``offset`` and the next offset (None at the end)."""
    page = list(items[offset:offset + limit])
    return page, offset + limit if offset + limit < len(items) else None


def number_page(items: Sequence[Any], page: int, size: int) -> tuple[list[Any], int | None]:
    """Items of 1-based page ``page`` and the next page number (None at the end; an empty page
    past the end is what page-number APIs answer)."""
    start = (max(page, 1) - 1) * size
    chunk = list(items[start:start + size])
    return chunk, page + 1 if start + size < len(items) else None


def link_header(base_url: str, params: dict[str, Any]) -> dict[str, str]:
    """``{"Link": '<base_url?params>; rel="next"'}``."""
    return {"Link": f'<{base_url}?{urlencode(params)}>; rel="next"'}


class WebhookSender:
    """Signs deliveries as a provider does, for the core's schemes, and posts them."""

    def __init__(self, scheme: str, secret: str, *, hmac_spec: Any = None) -> None:
        self.scheme = scheme
        self.secret = secret
        self.hmac_spec = hmac_spec

    def headers(self, body: bytes, url: str, *, method: str = "POST",
                timestamp: float | None = None, msg_id: str | None = None) -> dict[str, str]:
        """The signature headers for ``body`` sent to ``url`` (``timestamp`` overrides now)."""
        sender = SENDERS.get(self.scheme)
        if sender is None:
            raise ValueError(f"no sender for scheme {self.scheme!r}")
        return sender(SignedDelivery(self.secret, body, url, method,
                               time.time() if timestamp is None else timestamp,
                               msg_id=msg_id, spec=self.hmac_spec))

    def post(self, url: str, body: bytes, **kw: Any) -> Any:
        """POST ``body`` to ``url`` with fresh signature headers; the ``requests`` response."""
        import requests

        headers = {"Content-Type": "application/json", **self.headers(body, url, **kw)}
        return requests.post(url, data=body, headers=headers, timeout=10)
