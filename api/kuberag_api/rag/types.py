"""Values the RAG engine hands to the API: passages, ingestion results, document listings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IngestStatus = Literal["added", "replaced", "unchanged", "refused"]


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk. ``score`` is the fused hybrid score (higher is better)."""

    doc_id: str
    chunk_id: str
    source: str
    text: str
    score: float
    # heading, position (chunk index in its document), dense_score, bm25_score, ...
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IngestResult:
    doc_id: str
    source: str
    status: IngestStatus
    chunks: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    doc_id: str
    source: str
    content_type: str
    chunks: int
    bytes: int
    sha256: str
    added_at: str  # ISO 8601, UTC


class DocumentError(ValueError):
    """A document that cannot be indexed (empty, undecodable, corrupt); the message says why."""


class UnsupportedDocument(DocumentError):
    """A document whose type is not one of txt, md, html, pdf."""


class DocumentTooComplex(DocumentError):
    """A document past a parsing limit (nesting, size, time, memory); the message names the limit."""
