"""Indexes of a given size for the HTTP benchmark of cold queries (1k and 10k chunks).

Text: the 76 Python documentation pages of the evaluation set (bench/data/pydoc, ~2.1k chunks),
then the Python standard library's own source files, read as plain text, until the index holds
about ``n_chunks`` chunks. Both ship with every Python, so the benchmark needs no download.

An index is built once and reused while its ``bench-index.json`` matches (same embedder,
chunking and target size); an interrupted build resumes, since unchanged files are not
re-embedded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sysconfig
import time
from pathlib import Path

from kuberag_api.rag import RagEngine, load_default_embedder
from kuberag_api.rag.chunking import chunk_sections
from kuberag_api.rag.embedding import Embedder
from kuberag_api.rag.parsing import parse_document
from kuberag_contract.config import Retrieval

DOCS = Path(__file__).parent / "data" / "pydoc"
QUESTIONS = Path(__file__).parent / "data" / "questions.json"
INFO = "bench-index.json"


def _candidates() -> list[tuple[str, Path, str | None]]:
    """(source name, file, content type) in a fixed order: documentation first, then code."""
    docs = [(f"pydoc/{p.name}", p, None) for p in sorted(DOCS.glob("*.md"))]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [
        (f"stdlib/{p.relative_to(stdlib).as_posix()}", p, "text/plain")
        for p in sorted(stdlib.rglob("*.py"))
        if not any(part in {"test", "tests", "idle_test", "site-packages", "lib2to3"} for part in p.relative_to(stdlib).parts)
    ]
    return docs + code


def _select(n_chunks: int, retrieval: Retrieval) -> list[tuple[str, Path, str | None, int]]:
    chosen, total = [], 0
    for source, path, ctype in _candidates():
        if total >= n_chunks:
            break
        try:
            data = path.read_bytes()
            sections = parse_document(source, data, ctype).sections
        except (OSError, ValueError):
            continue  # an empty or undecodable stdlib file is simply not part of the corpus
        count = len(chunk_sections(sections, retrieval.chunk_size, retrieval.chunk_overlap))
        chosen.append((source, path, ctype, count))
        total += count
    return chosen


def build_index(data_dir: Path, n_chunks: int, embedder: Embedder | None = None,
                retrieval: Retrieval | None = None, log=print) -> Path:
    """Directory of an index of about ``n_chunks`` chunks (built, or reused when up to date).

    Point the API at it with ``KUBERAG_DATA_DIR=<returned path>`` and no corpus path."""
    retrieval = retrieval or Retrieval()
    target = Path(data_dir) / f"index-{n_chunks}"
    selection = _select(n_chunks, retrieval)
    embedder_name = embedder.name if embedder is not None else None
    key = {
        "n_chunks": n_chunks,
        "chunk_size": retrieval.chunk_size,
        "chunk_overlap": retrieval.chunk_overlap,
        "files": hashlib.sha256("\n".join(s for s, *_ in selection).encode()).hexdigest()[:16],
    }
    info_path = target / INFO
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("key") == key and (embedder_name is None or info.get("embedder") == embedder_name):
            return target
    embedder = embedder or load_default_embedder()
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    engine = RagEngine.open(target, retrieval=retrieval, embedder=embedder)
    opened = time.perf_counter() - started
    before = engine.chunk_count
    done = itertools.count(1)

    def progress(result) -> None:
        n = next(done)
        if n % 50 == 0 or n == len(selection):
            log(f"  index-{n_chunks}: {n}/{len(selection)} files")

    started = time.perf_counter()
    results = engine.ingest_many(((s, p.read_bytes(), t) for s, p, t, _ in selection), progress=progress)
    seconds = time.perf_counter() - started
    embedded = sum(r.chunks for r in results if r.status in ("added", "replaced"))
    keep = {r.doc_id for r in results}
    for doc in engine.documents():
        if doc.doc_id not in keep:
            engine.delete(doc.doc_id)
    info = {
        "key": key,
        "embedder": embedder.name,
        "documents": engine.document_count,
        "chunks": engine.chunk_count,
        "corpus_version": engine.corpus_version,
        "build_seconds": round(seconds, 1),
        "chunks_embedded": embedded,
        "chunks_per_s": round(embedded / seconds, 1) if embedded and seconds else None,
        "resumed_from_chunks": before,
        "first_open_seconds": round(opened, 3),
    }
    engine.close()
    info["reopen_seconds"] = reopen_seconds(target, embedder, retrieval)
    info_path.write_text(json.dumps(info, indent=1))
    return target


def reopen_seconds(index_dir: Path, embedder: Embedder | None = None, retrieval: Retrieval | None = None) -> float:
    """Time to open an existing index (load vectors, chunks and build BM25), model already loaded."""
    embedder = embedder or load_default_embedder()
    started = time.perf_counter()
    engine = RagEngine.open(index_dir, retrieval=retrieval or Retrieval(), embedder=embedder)
    elapsed = time.perf_counter() - started
    engine.close()
    return round(elapsed, 3)


def index_info(index_dir: Path) -> dict:
    return json.loads((Path(index_dir) / INFO).read_text())


_TEMPLATES = [
    "What does the {m} module offer for {t}?",
    "How would I use {m} when dealing with {t}?",
    "Is there an example of {t} with {m}?",
    "Which function in {m} is relevant to {t}?",
    "¿Cómo se usa {m} para {t_es}?",
]
_TOPICS = [
    ("error handling", "manejar errores"), ("reading files", "leer ficheros"),
    ("parsing text", "analizar texto"), ("concurrency", "concurrencia"),
    ("performance", "rendimiento"), ("configuration", "configuración"),
    ("network access", "acceso a la red"), ("dates and times", "fechas y horas"),
]


def sample_questions(n: int) -> list[str]:
    """``n`` distinct questions for cold-query benchmarking: the evaluation questions first, then
    questions about standard-library modules and topics. Send them with ``Cache-Control:
    no-cache`` to measure retrieval, since two generated questions may still be close enough for
    the semantic cache."""
    questions = [q["question"] for q in json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted({p.stem for p in stdlib.glob("*.py") if not p.stem.startswith("_")})
    for m, (t, t_es), template in itertools.product(modules, _TOPICS, _TEMPLATES):
        if len(questions) >= n:
            break
        questions.append(template.format(m=m, t=t, t_es=t_es))
    if len(questions) < n:
        raise ValueError(f"only {len(questions)} distinct questions are available, {n} asked")
    return questions[:n]


if __name__ == "__main__":
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / ".bench-cache"
    for size in (1000, 10000):
        path = build_index(root, size)
        print(path, json.dumps(index_info(path)))
