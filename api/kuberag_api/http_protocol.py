"""uvicorn's httptools protocol with limits on the request head, enforced while it arrives.

httptools (llhttp) has no limit on header size or count, and an ASGI middleware sees headers only
after the server buffered all of them, so an 8 MiB header or 2,000 headers were read, stored and
handed to the app. Like a reverse proxy, this protocol refuses a head past the limits before
buffering it: at most ``MAX_HEADER_LINE`` bytes per header line, ``MAX_HEADERS`` headers and
``MAX_HEAD_BYTES`` for the request line and headers together (checked after each chunk the socket
delivers, so at most one read past the limit is ever held), and a request line (URL) of at most
``MAX_REQUEST_LINE`` bytes. The answer is a 431 (414 for the URL) problem and the connection is
closed, as nginx does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEADER_LINE = 8 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_REQUEST_LINE = 8 * 1024

log = logging.getLogger("kuberag.http")


class _HeadTooLarge(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=LimitedHttpToolsProtocol)``."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._header_bytes = 0
        self._head_done = False
        self._refused: _HeadTooLarge | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._header_bytes = 0
        self._head_done = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_LINE:
            raise self._refuse(414, f"the request target is longer than {MAX_REQUEST_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 4 > MAX_HEADER_LINE:
            raise self._refuse(431, f"the header {name[:64].decode('latin-1')!r} is longer than {MAX_HEADER_LINE} bytes")
        if len(self.headers) >= MAX_HEADERS:
            raise self._refuse(431, f"the request has more than {MAX_HEADERS} headers")
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes + len(self.url) > MAX_HEAD_BYTES:
            raise self._refuse(431, f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def _refuse(self, status: int, detail: str) -> _HeadTooLarge:
        self._refused = _HeadTooLarge(status, detail)
        return self._refused

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._refused is None:
                raise
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._refused is None and not self._head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes")
        if self._refused is not None:
            self._send_refusal(self._refused)

    def _send_refusal(self, refused: _HeadTooLarge) -> None:
        rid = os.urandom(8).hex()
        title = "Request Header Fields Too Large" if refused.status == 431 else "URI Too Long"
        body = msgspec.json.encode({"type": "about:blank", "title": title, "status": refused.status,
                                    "detail": refused.detail, "request_id": rid})
        log.warning("request head refused: %s", refused.detail, extra={"status": refused.status, "request_id": rid})
        metrics = getattr(getattr(self.app, "state", None), "metrics", None)
        if metrics is not None:
            metrics.observe_request("unmatched", "unknown", refused.status, 0.0)
        head = [STATUS_LINE[refused.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/problem+json\r\n", b"content-length: ", str(len(body)).encode(),
                 b"\r\n", b"x-request-id: ", rid.encode(), b"\r\n", b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self.transport.close()
        self._refused = None
        self._head_done = True
