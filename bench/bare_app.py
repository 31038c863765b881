"""The floor of the hit path: a bare Litestar route with kuberag's uvicorn flags, no middleware,
no dependency injection, a msgspec decode of the same request struct (``QueryRequest``) and a
precomputed response of the same byte size as kuberag's L1 hit (``BARE_RESPONSE_BYTES``).

``python -m bench.bare_app PORT BYTES [limits]``: ``limits`` serves it through kuberag's
header-limited httptools protocol instead of uvicorn's, to measure what the limits cost.
"""

from __future__ import annotations

import sys

import msgspec
import uvicorn
from kuberag_api.schemas import QueryRequest
from litestar import Litestar, Request, Response, post

_decoder = msgspec.json.Decoder(QueryRequest)


def build(response_bytes: int) -> Litestar:
    filler = b"x" * max(0, response_bytes - len(b'{"answer":""}'))
    payload = b'{"answer":"' + filler + b'"}'

    @post("/query", status_code=200)
    async def query(request: Request) -> Response:
        _decoder.decode(await request.body())
        return Response(payload, media_type="application/json")

    return Litestar([query], debug=False, logging_config=None, openapi_config=None)


def main() -> None:
    port, size = int(sys.argv[1]), int(sys.argv[2])
    http: object = "httptools"
    if len(sys.argv) > 3 and sys.argv[3] == "limits":
        from kuberag_api.http_protocol import LimitedHttpToolsProtocol

        http = LimitedHttpToolsProtocol
    uvicorn.run(build(size), host="127.0.0.1", port=port, workers=1, loop="uvloop", http=http,  # type: ignore[arg-type]
                access_log=False, log_config=None, lifespan="on", proxy_headers=False, log_level="warning")


if __name__ == "__main__":
    main()
