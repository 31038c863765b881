"""The OpenAPI document says what the API really answers: every status code a route can return,
errors as ``application/problem+json``, the stream as ``text/event-stream``, and the headers
(X-Request-ID everywhere, RateLimit-* on limited routes, Retry-After on 429 and 503).

Litestar documents a route's success response and its own 400 only; ``problems()`` gives each
route its error responses (``responses=`` of the route decorators), and ``complete_openapi()``
adds the response headers, which Litestar's ``ResponseSpec`` cannot carry.
"""

from __future__ import annotations

from litestar import Litestar, Response
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Encoding, OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import Scope

from kuberag_api.schemas import Problem

PROBLEM = "application/problem+json"
DESCRIPTIONS = {
    400: "The request is malformed (body, JSON, multipart); `detail` and `errors` name what is wrong",
    401: "A key the server does not know (client routes), or a missing or wrong admin key (admin routes)",
    403: "A verified client that is not the admin, or admin routes disabled (no admin key configured)",
    404: "No such document",
    413: "The body is larger than the route accepts",
    415: "The body's media type is not the one the route takes",
    422: "A document that cannot be indexed (unsupported content, no text, past a parsing limit)",
    429: "Over the caller's rate limit; retry after Retry-After seconds",
    431: "Request headers too large or too many (8 KiB a line, 64 KiB in all, 100 headers)",
    500: "An unexpected error, logged under the request id",
    502: "The shared vector store (Weaviate) refused the document's objects; the document was not changed",
    503: "Not ready (index loading, no shared index yet), shutting down, or the shared vector store is "
         "unreachable (cache hits still answer); retry after Retry-After seconds",
}
# Every route can answer these: header limits (before the app), unexpected errors.
ALWAYS = (431, 500)
# Routes behind the caller's identity and rate limit.
LIMITED = (401, 429)


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """The error responses of a route: ``codes`` plus the ones every route can give."""
    return {code: ResponseSpec(data_container=Problem, media_type=PROBLEM, description=DESCRIPTIONS[code],
                               generate_examples=False)
            for code in sorted({*codes, *ALWAYS})}


def _header(description: str, kind: OpenAPIType = OpenAPIType.STRING, required: bool = False) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=kind), description=description, required=required)


REQUEST_ID = _header("The request's id (the client's X-Request-ID when it is 1-64 safe characters)", required=True)
RATE_LIMIT = {
    "RateLimit-Limit": _header("Burst of the tightest bucket the request counted against", OpenAPIType.INTEGER),
    "RateLimit-Remaining": _header("Requests left in that bucket now", OpenAPIType.INTEGER),
    "RateLimit-Reset": _header("Seconds until that bucket is full again", OpenAPIType.INTEGER),
}
RETRY_AFTER = _header("Seconds to wait before retrying", OpenAPIType.INTEGER, required=True)


def complete_openapi(app: Litestar, limited_paths: frozenset[str], closed_schemas: tuple[str, ...],
                     patterns: dict[tuple[str, str], str]) -> None:
    """Add the response headers to the app's OpenAPI document (built once, then served as is),
    ``additionalProperties: false`` to the request bodies that refuse unknown fields, and the
    ``patterns`` of string fields (Litestar drops msgspec's ``extra_json_schema``)."""
    spec = app.openapi_schema
    schemas = spec.components.schemas if spec.components and spec.components.schemas else {}
    for name in closed_schemas:
        schemas[name].additional_properties = False
    for (name, field), pattern in patterns.items():
        schemas[name].properties[field].pattern = pattern  # type: ignore[index,union-attr]
    upload = spec.paths["/documents"].post  # type: ignore[index]
    if upload is not None and upload.request_body is not None:
        # The route reads its multipart body itself (RFC 5987 names): say what it takes.
        upload.request_body.content = {"multipart/form-data": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.OBJECT, required=["file"], properties={
                "file": Schema(type=OpenAPIType.STRING, format="binary",  # type: ignore[arg-type]
                               description="The document, with a file name (filename= or RFC 5987 filename*=)"),
            }),
            encoding={"file": Encoding(content_type="text/plain, text/markdown, text/html, application/pdf")},
        )}
    for path, item in (spec.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is None or not operation.responses:
                continue
            limited = path in limited_paths or path.startswith(tuple(p + "/" for p in limited_paths))
            for code, response in operation.responses.items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                headers = dict(response.headers or {})
                headers["X-Request-ID"] = REQUEST_ID
                if limited and code not in ("401", "431"):
                    headers.update(RATE_LIMIT)
                if code in ("429", "503") and not (code == "503" and path == "/readyz"):
                    headers["Retry-After"] = RETRY_AFTER
                response.headers = headers


def fix_options_allow(app: Litestar) -> None:
    """Make ``OPTIONS`` list every method of its path. (Litestar 2.25 merges a second handler of a
    path into a new route but keeps the first route's OPTIONS handler, whose ``Allow`` then names
    only the first handler's methods: ``OPTIONS /documents`` said ``OPTIONS, POST`` without GET.)"""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        allow = ", ".join(sorted(route.methods))

        def options_handler(scope: Scope, _allow: str = allow) -> Response:
            return Response(content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": _allow})

        handler._fn = options_handler  # the signature (scope only) is unchanged
