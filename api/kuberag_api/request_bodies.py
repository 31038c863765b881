"""JSON request bodies: every malformed body is a 400 problem naming the cause, never a 500.

msgspec raises ``UnicodeDecodeError`` for invalid UTF-8 inside a string, ``RecursionError`` for
JSON nested deeper than the interpreter's recursion limit (a few hundred levels), and reports an
unpaired UTF-16 surrogate escape as "Input data was truncated"; Litestar's ``Request.json`` lets
the first two through as 500s. ``KuberagRequest`` (the app's ``request_class``) decodes with
those mapped to 400s.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException
from litestar.types import Empty

_json_decoder = msgspec.json.Decoder()
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
# Media types a JSON body may be declared as; others are a 415 (a missing type is accepted).
JSON_TYPES = frozenset({"application/json", "text/json"})


class BodyError(ClientException):
    """A request body that cannot be decoded: 400 with the cause."""


class UnsupportedBodyType(ClientException):
    status_code = 415


def body_error(body: bytes, exc: BaseException) -> BodyError:
    """The 400 for a body msgspec failed on, saying why in words a client can act on."""
    if isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start:exc.start + 1].hex() if isinstance(exc.object, bytes | bytearray) else "?"
        return BodyError(f"the request body is not valid UTF-8 (a string holds the byte 0x{bad}); "
                         "JSON must be encoded as UTF-8")
    if isinstance(exc, RecursionError):
        return BodyError("the JSON body is nested too deeply: send a flat object such as {\"question\": \"...\"}")
    if _SURROGATE_ESCAPE.search(body) and "truncated" in str(exc):
        return BodyError("the JSON body has an unpaired UTF-16 surrogate escape (\\ud800-\\udfff without its pair)")
    if body.startswith(b"\xef\xbb\xbf"):
        return BodyError("the request body starts with a byte order mark: send the JSON without it")
    return BodyError(f"the request body is not valid JSON: {exc}")


def decode_json(body: bytes, decoder: msgspec.json.Decoder = _json_decoder) -> Any:
    """Decode a JSON body; raises BodyError (400) naming what is wrong."""
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise body_error(body, exc) from None


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media in JSON_TYPES or media.endswith("+json")


class KuberagRequest(Request):
    """Litestar's Request with a JSON body decoder that never lets a malformed body become a 500
    (the same caching as ``Request.json``; the app registers no type decoders)."""

    async def json(self) -> Any:
        if self._json is Empty:
            content_type = self.headers.get("content-type", "")
            if not is_json_media_type(content_type):
                raise UnsupportedBodyType(f"the request body is declared as {content_type.split(';')[0]!r}: "
                                          "send it as application/json")
            if (cached := self._connection_state.json) is not Empty:
                self._json = cached
            else:
                self._json = self._connection_state.json = decode_json(await self.body() or b"null")
        return self._json
