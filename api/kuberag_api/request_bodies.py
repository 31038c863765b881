"""Request bodies (JSON, multipart uploads): every malformed body is a 4xx problem naming the
cause, never a 500.

msgspec raises ``UnicodeDecodeError`` for invalid UTF-8 inside a string, ``RecursionError`` for
JSON nested deeper than the interpreter's recursion limit (a few hundred levels), and reports an
unpaired UTF-16 surrogate escape as "Input data was truncated"; Litestar's ``Request.json`` lets
the first two through as 500s. ``KuberagRequest`` (the app's ``request_class``) decodes with
those mapped to 400s.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException, ValidationException
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState
from multipart import MultipartSegment, ParserLimitReached, PushMultipartParser
from multipart import ParserError as MultipartParserError

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


_AT_FIELD = re.compile(r" - at `\$\.?([^`]*)`$")


def validation_error(exc: msgspec.ValidationError) -> ValidationException:
    """A typed decode's error as Litestar's ValidationException: 400 naming the field."""
    message = str(exc)
    m = _AT_FIELD.search(message)
    field = m.group(1) if m and m.group(1) else "body"
    if m:
        message = message[:m.start()]
    return ValidationException(message, extra=[{"key": field, "message": message, "source": "body"}])


def decode_json(body: bytes, decoder: msgspec.json.Decoder = _json_decoder) -> Any:
    """Decode a JSON body; raises BodyError (400) naming what is wrong, or (typed decoders)
    ValidationException naming the field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        if decoder is _json_decoder:  # untyped: only a number out of range gets here
            raise body_error(body, exc) from None
        raise validation_error(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise body_error(body, exc) from None


_typed_decoders: dict[type, msgspec.json.Decoder] = {}


def decoder_for(handler: Any) -> msgspec.json.Decoder:
    """A strict decoder of the route's body type when it is a msgspec Struct (one pass from bytes
    to the struct; no lenient conversion turning ``"use_cache": 0`` into False), else untyped."""
    field = getattr(handler, "parsed_data_field", None)
    annotation = getattr(field, "annotation", None)
    if not (isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)):
        return _json_decoder
    decoder = _typed_decoders.get(annotation)
    if decoder is None:
        decoder = _typed_decoders[annotation] = msgspec.json.Decoder(annotation)
    return decoder


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
                self._json = self._connection_state.json = decode_json(await self.body() or b"null",
                                                                       decoder_for(self.route_handler))
        return self._json


# --- multipart uploads -------------------------------------------------------------------------
_EXT_VALUE = re.compile(r"^(?P<charset>[A-Za-z0-9!#$%&+^_`{}~-]+)'(?P<lang>[A-Za-z0-9-]*)'(?P<value>.+)$")
_FILENAME_STAR = re.compile(r";\s*filename\*\s*=\s*([^;]+)", re.IGNORECASE)


def rfc5987_filename(content_disposition: str) -> str | None:
    """The ``filename*`` of a Content-Disposition (RFC 5987/6266: ``UTF-8''na%C3%AFve.txt``), which
    takes precedence over ``filename``; None when absent. Raises BodyError when it is malformed."""
    m = _FILENAME_STAR.search(content_disposition)
    if m is None:
        return None
    raw = m.group(1).strip().strip('"')
    ext = _EXT_VALUE.match(raw)
    if ext is None:
        raise BodyError(f"the file name {raw!r} in filename*= is not charset'language'percent-encoded (RFC 5987), "
                        "e.g. filename*=UTF-8''na%C3%AFve.txt")
    charset = ext.group("charset").lower()
    if charset not in ("utf-8", "iso-8859-1"):
        raise BodyError(f"the file name in filename*= uses charset {charset!r}: use UTF-8 (or ISO-8859-1)")
    try:
        return unquote_to_bytes(ext.group("value")).decode(charset)
    except UnicodeDecodeError:
        raise BodyError("the file name in filename*= is not valid UTF-8 once percent-decoded") from None


async def parse_multipart_upload(request: Request) -> None:
    """``before_request`` of the upload route: parse the multipart body into Litestar's form state
    (which its ``MultipartBody`` extractor then reuses), honouring RFC 5987 ``filename*``.

    Litestar's own parser (through the ``multipart`` package) ignores ``filename*``, so a file sent
    that way became a plain text field and the upload was refused with a misleading "no file" message.
    """
    content_type, options = request.content_type
    if content_type != "multipart/form-data":
        raise UnsupportedBodyType(f"upload the document as multipart/form-data with a field named 'file' "
                                  f"(the request body is declared as {content_type or 'nothing'!r})")
    boundary = options.get("boundary", "")
    if not boundary:
        raise BodyError("multipart/form-data needs a boundary parameter in Content-Type")
    fields: dict[str, list[Any]] = {}
    data: UploadFile | bytearray = bytearray()
    segment: MultipartSegment | None = None
    try:
        with PushMultipartParser(boundary.encode("latin-1"), max_segment_count=request.app.multipart_form_part_limit,
                                 max_header_size=8192, max_header_count=16) as parser:
            async for chunk in request.stream():
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        segment = part
                        filename = rfc5987_filename(part.header("Content-Disposition", "")) or part.filename
                        data = (UploadFile(content_type=part.content_type or "application/octet-stream",
                                           filename=filename, headers=dict(part.headerlist))
                                if filename is not None else bytearray())
                    elif part:
                        if isinstance(data, UploadFile):
                            await data.write(part)
                        else:
                            data.extend(part)
                    else:
                        assert segment is not None  # the parser emits a segment before its data
                        if isinstance(data, UploadFile):
                            await data.seek(0)
                            fields.setdefault(segment.name or "", []).append(data)
                        else:
                            fields.setdefault(segment.name or "", []).append(
                                bytes(data).decode(segment.charset or "utf-8", "replace"))
                        data, segment = bytearray(), None
            if not parser.closed:
                raise MultipartParserError("the body ends before the closing boundary")
    except (MultipartParserError, ParserLimitReached) as exc:
        for values in fields.values():
            for value in values:
                if isinstance(value, UploadFile):
                    await value.close()
        if isinstance(data, UploadFile):
            await data.close()
        raise BodyError(f"the multipart/form-data body is malformed: {exc}") from None
    ScopeState.from_scope(request.scope).form = {k: v if len(v) > 1 else v[0] for k, v in fields.items()}
