"""The interface every document store implements, and the steps they share.

Two stores: ``RagEngine`` (embedded: SQLite + in-memory search, one pod) and ``WeaviateStore``
(shared: every replica queries one Weaviate). The API, the CLI and the bench use only this
interface; parsing, chunking and embedding are the same for both (``prepare_document``).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from kuberag_contract.config import Retrieval

from kuberag_api.rag.chunking import Chunk, chunk_sections
from kuberag_api.rag.embedding import Embedder
from kuberag_api.rag.parsing import CONTENT_TYPES, ParsedDocument, Section, parse_document
from kuberag_api.rag.types import DocumentError, DocumentInfo, IngestResult, Passage

# Bumped when chunking, tokenisation or fusion change in a way that changes answers.
ALGORITHM_VERSION = "1"


class RagStore(Protocol):
    """Documents, their chunks and vectors, and hybrid retrieval over them."""

    retrieval: Retrieval
    dense_weight: float

    @property
    def embedder(self) -> Embedder: ...

    @property
    def ready(self) -> bool:
        """True once an index can be queried (loaded, or, for a shared store, first built)."""

    @property
    def chunk_count(self) -> int: ...

    @property
    def document_count(self) -> int: ...

    @property
    def corpus_version(self) -> str:
        """Changes on any ingest, replace or delete (part of every cache key)."""

    @property
    def retrieval_fingerprint(self) -> str: ...

    def retrieve(self, question: str, query_vector: np.ndarray | None = None,
                 top_k: int | None = None) -> list[Passage]: ...

    def documents(self) -> list[DocumentInfo]: ...

    def document(self, doc_id: str) -> DocumentInfo | None: ...

    def ingest(self, source: str, data: bytes, content_type: str | None = None,
               parsed: ParsedDocument | None = None) -> IngestResult: ...

    def is_unchanged(self, source: str, data: bytes) -> bool:
        """The index holds these bytes under this source already (answered from memory)."""

    def delete(self, doc_id: str) -> bool: ...

    def ingest_many(self, documents: Iterable[tuple[str, bytes, str | None]],
                    progress: Callable[[IngestResult], None] | None = None) -> list[IngestResult]: ...

    def sync_corpus(self, corpus_path: str | Path) -> list[IngestResult]: ...

    def close(self) -> None: ...


def doc_id_for(source: str) -> str:
    """Stable id from the source name, so every replica (and a re-ingest) gets the same id."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def embedding_text(source: str, heading: str | None, text: str) -> str:
    # The heading (or file name) gives a chunk the topic its sentences often leave implicit.
    title = heading or Path(source).stem.replace("-", " ").replace("_", " ")
    return f"{title}\n{text}"


def chunk_and_embed(source: str, sections: list[Section], retrieval: Retrieval,
                    embedder: Embedder) -> tuple[list[Chunk], np.ndarray]:
    chunks = chunk_sections(sections, retrieval.chunk_size, retrieval.chunk_overlap)
    vectors = embedder.embed([embedding_text(source, c.heading, c.text) for c in chunks])
    return chunks, vectors


def sections_json(sections: list[Section]) -> str:
    """The parsed text kept with each document, so a new model or chunking can rebuild it."""
    return json.dumps([{"heading": s.heading, "text": s.text, "page": s.page} for s in sections])


def sections_from_json(raw: str) -> list[Section]:
    return [Section(s["heading"], s["text"], s.get("page")) for s in json.loads(raw)]


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """A document parsed, chunked and embedded: everything a store writes."""

    doc_id: str
    source: str
    content_type: str
    sha256: str
    size: int
    sections: list[Section]
    chunks: list[Chunk]
    vectors: np.ndarray


MAX_SOURCE_CHARS = 1024
_SOURCE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_source(source: str) -> str:
    """A document's source name as it is stored and cited: a relative path of ``/``-separated
    names (the corpus directory's layout), never absolute, never ``.``/``..``/empty parts, no
    control characters (NUL, newline, ...). Raises DocumentError naming what is wrong; uploads
    are normalised to their base name before they get here (``normalise_upload_name``)."""
    source = source.strip()
    if not source:
        raise DocumentError("a document needs a source name")
    if len(source) > MAX_SOURCE_CHARS:
        raise DocumentError(f"the source name is longer than {MAX_SOURCE_CHARS} characters")
    bad = _SOURCE_FORBIDDEN.search(source)
    if bad:
        raise DocumentError(f"the source name {source!r} contains a control character ({bad.group()!r}): "
                            "rename the file")
    if source.startswith("/") or "\\" in source:
        raise DocumentError(f"the source name {source!r} must be a relative path with '/' separators")
    if any(part in ("", ".", "..") for part in source.split("/")):
        raise DocumentError(f"the source name {source!r} must not contain empty, '.' or '..' path parts")
    return unicodedata.normalize("NFC", source)


def normalise_upload_name(filename: str) -> str:
    """The source name of an uploaded file: its base name (clients send a name, and some a whole
    path: ``../../etc/passwd.txt`` -> ``passwd.txt``, ``C:\\docs\\a.md`` -> ``a.md``), NFC. Control
    characters are refused, not removed (``check_source``)."""
    return filename.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip()


def prepare_document(source: str, data: bytes, content_type: str | None, retrieval: Retrieval,
                     embedder: Embedder, parsed: ParsedDocument | None = None) -> PreparedDocument:
    """Parse (unless ``parsed``: done by the parser process), chunk and embed (the slow part).
    Raises DocumentError for a bad document."""
    source = check_source(source)
    if parsed is None:
        parsed = parse_document(source, data, content_type)
    chunks, vectors = chunk_and_embed(source, parsed.sections, retrieval, embedder)
    return PreparedDocument(doc_id_for(source), source, parsed.content_type, hashlib.sha256(data).hexdigest(),
                            len(data), parsed.sections, chunks, vectors)


def refused(source: str, reason: str) -> IngestResult:
    return IngestResult(doc_id_for(source.strip() or "?"), source, "refused", 0, reason)


def corpus_files(root: Path) -> list[tuple[Path, str]]:
    """(file, source name) of every file under ``root`` except hidden ones, sorted. Source names
    are paths relative to the corpus directory, so replicas (and shards of a Job) agree."""
    if not root.is_dir():
        raise DocumentError(f"corpus path {str(root)!r} is not a directory")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [(p, p.relative_to(root).as_posix()) for p in files]


def unsupported_reason(path: Path) -> str | None:
    if path.suffix.lower() not in CONTENT_TYPES:
        return f"unsupported document type {path.suffix or '(none)'!r}"
    return None


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
