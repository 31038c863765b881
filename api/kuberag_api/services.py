"""The work behind the controllers: answering questions through the caches, managing documents."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kuberag_contract.config import Retrieval

from kuberag_api.cache.entry import CachedAnswer, CachedSource
from kuberag_api.cache.keys import CacheScope, answer_key, normalise_question
from kuberag_api.cache.tiers import AnswerCache
from kuberag_api.log_format import truncate
from kuberag_api.metrics import Metrics
from kuberag_api.rag import (
    DocumentError,
    ExtractiveGenerator,
    GenerationError,
    Generator,
    IngestResult,
    RagEngine,
    RagStore,
)
from kuberag_api.rag.parse_worker import ParserProcess
from kuberag_api.rag.store import check_source
from kuberag_api.single_flight import SingleFlight
from kuberag_api.token_limit import Reservation, TokenDecision, TokenLimiter

log = logging.getLogger("kuberag.query")
T = TypeVar("T")


class IndexNotReady(RuntimeError):
    """The index is still loading (or failed to load); the message says which."""


class EngineSlot:
    """The RAG store once it is open. Opening (and indexing the corpus) runs in the background so
    the server answers its probes meanwhile; ``/readyz`` says 503 until the index is ready."""

    def __init__(self, engine: RagStore | None = None) -> None:
        self.engine = engine
        self.error: str | None = None
        self.loading = engine is None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.ready

    def require(self) -> RagStore:
        engine = self.engine
        if engine is None or not engine.ready:
            if self.error:
                raise IndexNotReady(f"the index failed to load: {self.error}")
            status = getattr(engine, "status", None)
            if status is not None:  # a shared store says what it waits for (Weaviate, the first index)
                raise IndexNotReady(f"the index is not ready: {status()['status']}")
            raise IndexNotReady("the index is still loading; retry shortly")
        return engine

    async def open_shared(self, executor: ThreadPoolExecutor, factory: Callable[[], RagStore]) -> None:
        """Create a shared store (loads the embedder) and let it connect and poll in the background:
        the replica indexes nothing itself (the indexing Job does)."""
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(executor, factory)
            store.start()  # type: ignore[attr-defined]
            self.engine = store
        except Exception as exc:  # shown by /readyz; the process stays up to say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the shared store failed to open")
        finally:
            self.loading = False

    async def open(self, executor: ThreadPoolExecutor, data_dir: Path, retrieval: Retrieval,
                   corpus_path: str | None, embedder=None) -> None:
        loop = asyncio.get_running_loop()
        try:
            engine = await loop.run_in_executor(
                executor,
                lambda: RagEngine.open(data_dir, retrieval=retrieval, corpus_path=corpus_path,
                                       embedder=embedder() if callable(embedder) else embedder, defer_corpus=True),
            )
            self.engine = engine
            if corpus_path is not None:
                results = await loop.run_in_executor(executor, engine.sync_corpus, corpus_path)
                refused = [r for r in results if r.status == "refused"]
                for r in refused:
                    log.warning("corpus file refused", extra={"source": r.source, "reason": r.reason})
                log.info("corpus indexed", extra={"documents": engine.document_count, "chunks": engine.chunk_count,
                                                  "refused": len(refused)})
        except Exception as exc:  # shown by /readyz; the process stays up to say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the index failed to load")
        finally:
            self.loading = False


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """Tokens one request made the LLM spend (zero for a cache hit or an extractive answer)."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class QueryOutcome:
    entry: CachedAnswer
    cache_level: str | None
    similarity: float | None
    degraded: tuple[str, ...]  # causes: "l2" (Redis sidecar down), "llm" (extractive fallback)
    usage: LLMUsage | None = None
    tokens: TokenDecision | None = None
    """The client's token-limit decision when this answer reserved LLM tokens (for its headers)."""


class TokenLimitExceeded(Exception):
    """The client's token budget cannot cover this answer's reservation (a 429)."""

    def __init__(self, decision: TokenDecision, needed: int) -> None:
        super().__init__(f"token limit exceeded: {decision.per_minute} tokens per minute with a burst of "
                         f"{decision.limit} per client; this answer reserves about {needed} tokens")
        self.decision = decision
        self.needed = needed


def _sources(passages) -> tuple[CachedSource, ...]:
    return tuple(
        CachedSource(p.doc_id, p.chunk_id, p.source, round(float(p.score), 6), p.text,
                     {k: v for k, v in p.metadata.items() if v is not None})
        for p in passages
    )


_CITATION = re.compile(r"\[(\d{1,2})\]")


def _doc_ids(passages, answer: str) -> tuple[str, ...]:
    """The documents the answer cites ([n] = the n-th source); all sources when it cites none."""
    cited = [int(n) - 1 for n in _CITATION.findall(answer)]
    chosen = [passages[i] for i in cited if 0 <= i < len(passages)] or list(passages)
    return tuple(dict.fromkeys(p.doc_id for p in chosen))


class QueryService:
    def __init__(self, slot: EngineSlot, generator: Generator, cache: AnswerCache, metrics: Metrics,
                 executor: ThreadPoolExecutor, tokens: TokenLimiter | None = None) -> None:
        self.slot = slot
        self.tokens = tokens
        self.generator = generator
        self.fallback = ExtractiveGenerator()
        self.cache = cache
        self.metrics = metrics
        self.executor = executor
        self.flight: SingleFlight[QueryOutcome] = SingleFlight()
        llm = getattr(generator, "config", None)
        self.llm_configured = llm is not None
        self.prices = dict(llm.prices) if llm is not None else {}
        self._scope_parts: tuple | None = None
        self._scope_token = ""
        self._fingerprint: tuple[int, str] | None = None

    # --- helpers --------------------------------------------------------------------------------
    def _scope(self, engine: RagStore) -> str:
        # The retrieval fingerprint is fixed for an engine (static config) but costs a sha256 of
        # JSON to compute: once per engine, not per request.
        if self._fingerprint is None or self._fingerprint[0] != id(engine):
            self._fingerprint = (id(engine), engine.retrieval_fingerprint)
            default = getattr(engine.embedder, "l3_threshold", None)
            if default is not None:
                self.cache.l3.model_threshold = default
        parts = (engine.corpus_version, self.generator.name, engine.embedder.name, self._fingerprint[1],
                 self.cache.epoch)
        if parts != self._scope_parts:
            self._scope_token = CacheScope(*parts).token()
            self._scope_parts = parts
        return self._scope_token

    def degraded(self, llm_failed: bool = False) -> tuple[str, ...]:
        """The parts of the pipeline this answer skipped: the L2 cache (down), the LLM (failed)."""
        cache = self.cache
        l2_down = cache.l2_enabled and not (cache.l2.up and cache.epoch_known)
        return ("llm",) * llm_failed + ("l2",) * l2_down

    async def _cpu(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.metrics.observe_stage(stage, time.perf_counter() - started)

    def account(self, model: str, prompt: int, completion: int) -> LLMUsage:
        """Count an LLM call's tokens and estimated cost by model (the response's model, priced by
        its own entry, else by the configured model's)."""
        price = self.prices.get(model) or self.prices.get(getattr(self.generator, "model", ""))
        cost = None
        if price is not None:
            cost = round(prompt / 1000 * price.prompt_per_1k + completion / 1000 * price.completion_per_1k, 8)
            self.metrics.llm_cost.labels(model).inc(cost)
        if prompt:
            self.metrics.llm_tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.metrics.llm_tokens.labels(model, "completion").inc(completion)
        return LLMUsage(model, prompt, completion, cost)

    def no_usage(self) -> LLMUsage | None:
        """The usage of a request the LLM did not answer (a cache hit): zero, or None without an LLM."""
        if not self.llm_configured:
            return None
        return LLMUsage(getattr(self.generator, "model", self.generator.name), 0, 0, 0.0 if self.prices else None)

    def record_llm_failure(self, exc: GenerationError) -> None:
        log.error("LLM failed, answering extractively (not cached)", extra={"error": str(exc)[:300]})
        self.metrics.errors.labels("llm").inc()
        self.metrics.llm_fallbacks.labels(getattr(exc, "reason", "error")).inc()
        breaker = getattr(self.generator, "breaker", None)
        if breaker is not None:
            self.metrics.llm_breaker_open.set(1 if breaker.state == "open" else 0)

    def _llm_ok(self) -> None:
        if getattr(self.generator, "breaker", None) is not None:
            self.metrics.llm_breaker_open.set(0)

    async def _reserve(self, client: str | None, question: str, passages
                       ) -> tuple[TokenDecision | None, Reservation | None]:
        """Reserve this answer's worst-case LLM tokens against the client's budget, or raise."""
        limiter = self.tokens
        estimate = getattr(self.generator, "reservation", None)
        if limiter is None or estimate is None or client is None or not limiter.enabled:
            return None, None
        needed = estimate(question, passages)
        if needed <= 0:
            return None, None
        decision, reservation = await limiter.reserve(client, needed)
        if not decision.allowed:
            self.metrics.token_limited.inc()
            self.metrics.summary.rate_limited += 1
            raise TokenLimitExceeded(decision, needed)
        return decision, reservation

    async def _settle(self, reservation: Reservation | None, usage: LLMUsage | None, degraded: bool) -> None:
        if reservation is not None and self.tokens is not None:
            used = 0 if degraded else (usage.total_tokens if usage is not None and usage.total_tokens else None)
            await self.tokens.settle(reservation, used)

    async def _generate(self, question: str, passages) -> tuple[str, str, LLMUsage | None, bool]:
        started = time.perf_counter()
        try:
            g = await self.generator.generate(question, passages)
            degraded = False
            self._llm_ok()
        except GenerationError as exc:
            self.record_llm_failure(exc)
            g = await self.fallback.generate(question, passages)
            degraded = True
        finally:
            self.metrics.observe_stage("generate", time.perf_counter() - started)
        usage = self.no_usage()
        if g.prompt_tokens is not None or g.completion_tokens is not None:
            usage = self.account(g.model, g.prompt_tokens or 0, g.completion_tokens or 0)
        return g.text, g.model, usage, degraded

    # --- answering ------------------------------------------------------------------------------
    def l1_entry(self, question: str) -> CachedAnswer | None:
        """The answer L1 holds for ``question`` (the whole lookup of the hot path), or None (also
        while the index is not ready: the full path then says why)."""
        engine = self.slot.engine
        if engine is None or not engine.ready:
            return None
        return self.cache.l1.get(answer_key(normalise_question(question), self._scope(engine)))

    async def answer(self, question: str, *, lookup: bool = True, store: bool = True,
                     client: str | None = None) -> QueryOutcome:
        """The answer, from a cache or computed; ``client`` (the verified identity's limiter key)
        is charged the LLM tokens the computation reserves."""
        engine = self.slot.require()
        norm = normalise_question(question)
        scope = self._scope(engine)
        key = answer_key(norm, scope)
        if lookup:
            hit = await self.cache.get(key, scope, promote=store)
            if hit is not None:
                return QueryOutcome(hit[0], hit[1], None, self.degraded(), self.no_usage())
        if not lookup:
            return await self._compute(engine, question, norm, key, scope, lookup, store, client)
        outcome, shared = await self.flight.run(
            key + ("s" if store else "n"),
            lambda: self._compute(engine, question, norm, key, scope, lookup, store, client),
        )
        if shared:
            self.metrics.single_flight_shared.inc()
        return outcome

    async def _compute(self, engine: RagStore, question: str, norm: str, key: str, scope: str,
                       lookup: bool, store: bool, client: str | None = None) -> QueryOutcome:
        vector = await self._cpu("embed", engine.embedder.embed_query, question)
        if lookup:
            started = time.perf_counter()
            similar = self.cache.get_similar(scope, vector, norm)
            self.metrics.observe_stage("l3_lookup", time.perf_counter() - started)
            if similar is not None:
                entry, similarity = similar
                if store:
                    self.cache.promote(key, entry)
                return QueryOutcome(entry, "l3", similarity, self.degraded(), self.no_usage())
        passages = await self._cpu("retrieve", engine.retrieve, question, vector)
        decision, reservation = await self._reserve(client, question, passages)
        try:
            text, model, usage, llm_degraded = await self._generate(question, passages)
        except BaseException:
            await self._settle(reservation, None, True)
            raise
        await self._settle(reservation, usage, llm_degraded)
        entry = CachedAnswer(text, _sources(passages), model, question, time.time(), _doc_ids(passages, text),
                             usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
        # A fallback answer is never stored: it must not be replayed later as the LLM's answer.
        if store and not llm_degraded:
            self.cache.put(key, scope, entry, vector, norm)
        log.info("answered", extra={"question": truncate(question), "passages": len(passages), "model": model})
        return QueryOutcome(entry, None, None, self.degraded(llm_failed=llm_degraded), usage, decision)

    async def stream(self, question: str, *, lookup: bool = True, store: bool = True, client: str | None = None
                     ) -> AsyncIterator[tuple[str, Any]]:
        """Events: ("sources", tuple[CachedSource]), ("delta", str)..., ("done", QueryOutcome)."""
        engine = self.slot.require()
        norm = normalise_question(question)
        scope = self._scope(engine)
        key = answer_key(norm, scope)
        vector = None
        if lookup:
            hit = await self.cache.get(key, scope, promote=store)
            similarity = None
            if hit is None:
                vector = await self._cpu("embed", engine.embedder.embed_query, question)
                similar = self.cache.get_similar(scope, vector, norm)
                if similar is not None:
                    hit = (similar[0], "l3")
                    similarity = similar[1]
                    if store:
                        self.cache.promote(key, similar[0])
            if hit is not None:
                entry, level = hit
                yield "sources", entry.sources
                yield "delta", entry.answer
                yield "done", QueryOutcome(entry, level, similarity, self.degraded(), self.no_usage())
                return
        if vector is None:
            vector = await self._cpu("embed", engine.embedder.embed_query, question)
        passages = await self._cpu("retrieve", engine.retrieve, question, vector)
        # Before the first event: a refused reservation is a 429, not a broken stream.
        decision, reservation = await self._reserve(client, question, passages)
        sources = _sources(passages)
        yield "sources", sources
        parts: list[str] = []
        degraded = False
        started = time.perf_counter()
        reported: dict = {}
        settled = False
        try:
            try:
                async for delta in self.generator.stream(question, passages, reported):
                    parts.append(delta)
                    yield "delta", delta
                self._llm_ok()
            except GenerationError as exc:
                self.record_llm_failure(exc)
                degraded = True
                # The extractive answer follows whatever part of the model's answer was already sent.
                text = (await self.fallback.generate(question, passages)).text
                delta = f"\n\n{text}" if parts else text
                parts.append(delta)
                yield "delta", delta
            finally:
                self.metrics.observe_stage("generate", time.perf_counter() - started)
            text = "".join(parts)
            usage = self.no_usage()
            if reported:
                usage = self.account(reported["model"], reported.get("prompt_tokens") or 0,
                                     reported.get("completion_tokens") or 0)
            await self._settle(reservation, usage if reported else None, degraded)
            settled = True
        finally:
            if not settled:  # the client went away mid-stream: keep what the reservation says was used
                await self._settle(reservation, None, False)
        entry = CachedAnswer(text, sources, self.generator.name, question, time.time(), _doc_ids(passages, text),
                             usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
        if store and not degraded:
            self.cache.put(key, scope, entry, vector, norm)
        yield "done", QueryOutcome(entry, None, None, self.degraded(llm_failed=degraded), usage, decision)


class DocumentService:
    """Ingestion and deletion. Uploads are parsed in the parser process (bounded in time and memory,
    stoppable) and chunked and embedded on ``executor``, the ingestion thread: never on the threads
    that serve queries."""

    def __init__(self, slot: EngineSlot, metrics: Metrics, executor: ThreadPoolExecutor,
                 parser: ParserProcess | None = None) -> None:
        self.slot = slot
        self.metrics = metrics
        self.executor = executor
        self.parser = parser

    def refresh_gauges(self) -> None:
        engine = self.slot.engine
        if engine is not None:
            self.metrics.corpus_chunks.set(engine.chunk_count)
            self.metrics.corpus_documents.set(engine.document_count)

    async def ingest(self, source: str, data: bytes, content_type: str | None) -> IngestResult:
        engine = self.slot.require()
        loop = asyncio.get_running_loop()
        try:
            parsed = None
            if self.parser is not None and not engine.is_unchanged(source, data):
                check_source(source)  # before the parser gets it
                parsed = await loop.run_in_executor(self.executor, self.parser.parse, source, data, content_type)
            result = await loop.run_in_executor(self.executor, engine.ingest, source, data, content_type, parsed)
        except DocumentError:  # includes UnsupportedDocument, DocumentTooComplex: the app maps them to 415/422
            self.metrics.documents_ingested.labels("refused").inc()
            raise
        self.metrics.documents_ingested.labels(result.status).inc()
        self.refresh_gauges()
        log.info("document ingested", extra={"doc_id": result.doc_id, "source": truncate(source),
                                             "status": result.status, "chunks": result.chunks})
        return result

    async def delete(self, doc_id: str) -> bool:
        engine = self.slot.require()
        deleted = await asyncio.get_running_loop().run_in_executor(self.executor, engine.delete, doc_id)
        self.refresh_gauges()
        if deleted:
            log.info("document deleted", extra={"doc_id": doc_id})
        return deleted
