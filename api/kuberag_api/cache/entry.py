"""What a cache stores: a completed answer and what it was built from."""

from __future__ import annotations

from typing import Any

import msgspec


class CachedSource(msgspec.Struct, frozen=True):
    doc_id: str
    chunk_id: str
    source: str
    score: float
    text: str
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class CachedAnswer(msgspec.Struct, frozen=True):
    answer: str
    sources: tuple[CachedSource, ...]
    model: str
    question: str
    created_at: float
    # The documents the answer cited: for inspection and targeted purge.
    doc_ids: tuple[str, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CachedAnswer)


def encode_answer(entry: CachedAnswer) -> bytes:
    return _encoder.encode(entry)


def decode_answer(raw: bytes) -> CachedAnswer:
    return _decoder.decode(raw)
