"""Answer generation: extractive (offline default) or any OpenAI-compatible chat endpoint.

The chat adapter survives its provider: bounded retries with exponential backoff and full jitter
on 429, 5xx, timeouts and connection errors (a ``Retry-After`` header is honoured, within the
call's total deadline), a circuit breaker, and connect / first-token / total timeouts. When the
call fails anyway it raises ``GenerationError`` and the query service answers extractively,
flagged ``degraded`` and never cached.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

from kuberag_contract.config import LLMEndpoint, Providers

from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.rag.bm25 import tokenize
from kuberag_api.rag.chunking import split_sentences
from kuberag_api.rag.language import SPANISH_HINTS, language_of
from kuberag_api.rag.types import Passage

NOT_FOUND_ANSWER = "I could not find this in the documents."
NOT_FOUND_ANSWER_ES = "No he encontrado esto en los documentos."
# A passage whose cosine similarity to the question is below this is not evidence for an answer.
# Measured on bench/data with all-MiniLM-L6-v2 (bench/retrieval.py): the best passage of 96% of
# the answerable questions scores >= 0.2 (median 0.51; the misses are Spanish), while 5 of 8
# unanswerable questions stay below it (median 0.19, max 0.34). Lower would answer more noise,
# higher would refuse Spanish questions the passages do answer.
RELEVANCE_FLOOR = 0.2
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


log = logging.getLogger("kuberag.llm")


@dataclass(frozen=True, slots=True)
class GeneratedAnswer:
    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class Generator(Protocol):
    name: str

    async def generate(self, question: str, passages: list[Passage]) -> GeneratedAnswer: ...

    def stream(self, question: str, passages: list[Passage], usage: dict | None = None) -> AsyncIterator[str]: ...


class GenerationError(RuntimeError):
    """The LLM endpoint failed; the message says how (the API answers extractively, degraded)."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        # For the fallback counter: error, timeout, rate_limited, server_error, circuit_open, malformed.
        self.reason = reason


def not_found_answer(question: str) -> str:
    """The "not in the documents" answer, in Spanish for a question that reads as Spanish."""
    words = re.findall(r"\w+", question.lower())
    spanish = "¿" in question or "¡" in question or sum(w in SPANISH_HINTS for w in words) >= 2
    return NOT_FOUND_ANSWER_ES if spanish else NOT_FOUND_ANSWER


def relevant(passage: Passage) -> bool:
    """Did the passage reach the relevance floor of the model that embedded it (the engine says so
    in ``metadata["relevant"]``), else the default floor on its cosine similarity?"""
    flag = passage.metadata.get("relevant")
    if flag is not None:
        return bool(flag)
    dense = passage.metadata.get("dense_score")
    return dense is None or dense >= RELEVANCE_FLOOR


# Said with an extractive answer whose quotes are in another language than the question.
_QUOTED_IN = {
    ("es", "en"): "(Citas de los documentos, en inglés.)",
    ("en", "es"): "(Quoted from the documents, in Spanish.)",
}


class ExtractiveGenerator:
    """Builds an answer from the retrieved passages' most relevant sentences, each followed by a
    citation ``[n]`` where n is the passage's 1-based position in the sources list."""

    name = "extractive"

    def __init__(self, max_sentences: int = 3, max_chars: int = 700) -> None:
        self.max_sentences = max_sentences
        self.max_chars = max_chars

    def answer(self, question: str, passages: list[Passage]) -> str:
        useful = [(i, p) for i, p in enumerate(passages) if relevant(p)]
        if not useful:
            return not_found_answer(question)
        terms = set(tokenize(question))
        candidates = []
        for rank, (index, passage) in enumerate(useful):
            for position, sentence in enumerate(split_sentences(_flatten(passage.text))):
                # A list item's marker means nothing inside a prose answer.
                sentence = _LIST_MARKER.sub("", sentence)
                if len(sentence) < 20:
                    continue
                overlap = len(terms & set(tokenize(sentence)))
                # Lexical overlap with the question, the passage's similarity to it (its rank when
                # the retriever gave no dense score), then the order in the passage.
                closeness = passage.metadata.get("dense_score", 1.0 / (1 + rank))
                score = 2.0 * overlap / (1 + len(terms)) + 2.0 * closeness - 0.03 * position
                candidates.append((score, index, position, sentence))
        if not candidates:
            index, passage = useful[0]
            quoted = _flatten(passage.text)[: self.max_chars].rstrip()
            return _with_language_note(question, quoted, f"{quoted} [{index + 1}]")
        candidates.sort(key=lambda c: -c[0])
        chosen = []
        total = 0
        for candidate in candidates:
            if len(chosen) >= self.max_sentences or (chosen and total + len(candidate[3]) > self.max_chars):
                break
            chosen.append(candidate)
            total += len(candidate[3])
        # Present them in document order: by source, then position in the passage.
        chosen.sort(key=lambda c: (c[1], c[2]))
        answer = " ".join(f"{sentence} [{index + 1}]" for _, index, _, sentence in chosen)
        return _with_language_note(question, " ".join(c[3] for c in chosen), answer)

    async def generate(self, question: str, passages: list[Passage]) -> GeneratedAnswer:
        return GeneratedAnswer(self.answer(question, passages), self.name)

    async def stream(self, question: str, passages: list[Passage], usage: dict | None = None) -> AsyncIterator[str]:
        text = self.answer(question, passages)
        # Word-sized pieces, so a streaming client sees the answer arrive progressively.
        for piece in re.findall(r"\S+\s*", text):
            yield piece


def _with_language_note(question: str, quoted: str, answer: str) -> str:
    """The quotes stay in their language; when it is not the question's, the answer says so."""
    note = _QUOTED_IN.get((language_of(question), language_of(quoted)))
    return f"{note} {answer}" if note else answer


_LIST_MARKER = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])\s+")


def _flatten(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. Cite the passages you use "
    "with their numbers in square brackets, like [1]. If the context does not contain the answer, "
    f"say: {NOT_FOUND_ANSWER} Answer in the language of the question."
)
# No tokenizer of the remote model is available offline: a conservative estimate (about 3
# characters a token; real BPE vocabularies average ~4 for English and Spanish) so a trimmed
# prompt fits the context window.
CHARS_PER_TOKEN = 3.0
MESSAGE_OVERHEAD_TOKENS = 8


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _passage_block(i: int, p: Passage) -> str:
    return f"[{i + 1}] ({p.source}) {p.text}"


def fit_passages(question: str, passages: list[Passage], context_tokens: int, max_tokens: int) -> list[Passage]:
    """The highest-ranked passages whose prompt fits ``context_tokens`` minus the completion's
    ``max_tokens``: whole passages only (a cut passage could cut a citation), lowest ranked dropped
    first, so the kept ones keep their numbers [1]..[k] in the sources list."""
    budget = (context_tokens - max_tokens - estimate_tokens(SYSTEM_PROMPT) - estimate_tokens(question)
              - 3 * MESSAGE_OVERHEAD_TOKENS - 10)
    kept: list[Passage] = []
    for i, p in enumerate(passages):
        cost = estimate_tokens(_passage_block(i, p)) + 1
        if cost > budget:
            break
        kept.append(p)
        budget -= cost
    return kept


def build_messages(question: str, passages: list[Passage]) -> list[dict]:
    context = "\n\n".join(_passage_block(i, p) for i, p in enumerate(passages))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context:\n{context or '(no passages)'}\n\nQuestion: {question}"},
    ]


def prompt_tokens_estimate(messages: list[dict]) -> int:
    """Estimated prompt tokens of ``messages`` (token limits reserve this before the call)."""
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


REWRITE_PROMPT = (
    "Rewrite the user's last message as one self-contained question, using the earlier turns of the "
    "conversation only to resolve what it refers to. Keep its language. Reply with the question only."
)


def _retry_after_seconds(headers) -> float | None:
    """Seconds from a ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms`` header."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _classify(exc: BaseException) -> tuple[bool, str, float | None]:
    """(retryable, reason, Retry-After seconds) of a failed attempt."""
    import httpx
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after_seconds(exc.response.headers if exc.response is not None else None)
        if status == 429:
            return True, "rate_limited", retry_after
        if status >= 500 or status in (408, 409):
            return True, "server_error", retry_after
        return False, f"http_{status}", None
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)):
        return True, "timeout", None
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError, ConnectionError)):
        return True, "connection", None
    return False, "malformed", None


class OpenAIChatGenerator:
    """Any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama) via AsyncOpenAI.

    Retries are ours, not the client's (``max_retries=0``): the client retries each request on its
    own clock, while one answer needs one deadline over every attempt and backoff, a breaker that
    sees each logical call once, and retries of a stream only before its first token.
    """

    BACKOFF_BASE_SECONDS = 0.5
    BACKOFF_MAX_SECONDS = 8.0

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 endpoint: LLMEndpoint | None = None, temperature: float = 0.0,
                 on_retry: Callable[[str], None] | None = None, sleep=asyncio.sleep) -> None:
        import httpx
        from openai import AsyncOpenAI

        self.config = endpoint or LLMEndpoint(url=base_url, model=model)
        t = self.config.timeouts
        # read = the wait for the first byte (and between streamed chunks).
        self._timeout = httpx.Timeout(connect=t.connect_seconds, read=t.first_token_seconds,
                                      write=t.connect_seconds, pool=t.connect_seconds)
        # Local servers (vLLM, Ollama) accept any key; the client refuses to start without one.
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", timeout=self._timeout,
                                   max_retries=0)
        self.model = model
        self.name = f"openai:{model}"
        self.max_tokens = self.config.max_tokens
        self.temperature = temperature
        self.breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset_seconds)
        self._on_retry = on_retry or (lambda reason: None)
        self._sleep = sleep

    # --- the prompt -----------------------------------------------------------------------------
    def messages_for(self, question: str, passages: list[Passage]) -> list[dict]:
        kept = fit_passages(question, passages, self.config.context_tokens, self.config.max_tokens)
        if len(kept) < len(passages):
            log.info("prompt trimmed to the context budget", extra={"kept": len(kept), "dropped": len(passages) - len(kept)})
        return build_messages(question, kept)

    def reservation(self, question: str, passages: list[Passage]) -> int:
        """Tokens to reserve against a token limit before calling: the prompt and max_tokens."""
        if not any(relevant(p) for p in passages):
            return 0
        return prompt_tokens_estimate(self.messages_for(question, passages)) + self.config.max_tokens

    # --- calling with retries ---------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter (AWS architecture blog): spreads clients that failed together.
        delay = random.uniform(0, min(self.BACKOFF_MAX_SECONDS, self.BACKOFF_BASE_SECONDS * 2 ** attempt))
        return max(delay, retry_after) if retry_after is not None else delay

    async def _with_retries(self, call, deadline: float):
        if not self.breaker.allow():
            raise GenerationError("LLM circuit breaker is open after repeated failures; answering extractively",
                                  "circuit_open")
        attempt = 0
        while True:
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("total deadline reached")
                async with asyncio.timeout(remaining):
                    result = await call()
                self.breaker.success()
                return result
            except Exception as exc:  # every failure is classified below; none may escape unlabelled
                retryable, reason, retry_after = _classify(exc)
                delay = self._backoff(attempt, retry_after)
                if not retryable or attempt >= self.config.max_retries or time.monotonic() + delay >= deadline:
                    self.breaker.failure()
                    raise GenerationError(f"LLM endpoint failed ({reason}) after {attempt + 1} attempt(s): "
                                          f"{type(exc).__name__}: {exc}"[:500], reason) from exc
                attempt += 1
                self._on_retry(reason)
                log.warning("LLM call failed, retrying", extra={"reason": reason, "attempt": attempt,
                                                                "delay_s": round(delay, 3)})
                await self._sleep(delay)

    async def complete(self, messages: list[dict], *, max_tokens: int | None = None) -> GeneratedAnswer:
        """One chat completion with retries (also the follow-up rewriting of the front door)."""
        import httpx

        deadline = time.monotonic() + self.config.timeouts.total_seconds
        # Not streaming: the whole answer arrives at once, so the read timeout is the total one.
        t = self.config.timeouts
        timeout = httpx.Timeout(connect=t.connect_seconds, read=t.total_seconds, write=t.connect_seconds,
                                pool=t.connect_seconds)

        async def call():
            return await self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens or self.max_tokens,
                temperature=self.temperature, timeout=timeout,
            )

        response = await self._with_retries(call, deadline)
        choices = getattr(response, "choices", None)
        if not choices or choices[0].message is None:
            self.breaker.failure()
            raise GenerationError("LLM endpoint returned no choices", "malformed")
        usage = response.usage
        return GeneratedAnswer(
            (choices[0].message.content or "").strip(),
            response.model or self.model,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
        )

    async def generate(self, question: str, passages: list[Passage]) -> GeneratedAnswer:
        if not any(relevant(p) for p in passages):
            return GeneratedAnswer(not_found_answer(question), self.name, 0, 0)
        return await self.complete(self.messages_for(question, passages))

    async def stream(self, question: str, passages: list[Passage], usage: dict | None = None) -> AsyncIterator[str]:
        """The answer's text as it arrives; ``usage`` (when given) receives the model and the token
        counts of the last chunk. Retried only until the first token."""
        import openai

        if not any(relevant(p) for p in passages):
            yield not_found_answer(question)
            return
        messages = self.messages_for(question, passages)
        deadline = time.monotonic() + self.config.timeouts.total_seconds

        async def open_stream():
            events = await self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=self.temperature,
                stream=True, stream_options={"include_usage": True},
            )
            iterator = events.__aiter__()
            first = await iterator.__anext__()  # the first-token timeout covers this wait
            return events, iterator, first

        events, iterator, first = await self._with_retries(open_stream, deadline)
        finished = False
        try:
            event = first
            while True:
                for choice in event.choices or ():
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
                    finished = finished or choice.finish_reason is not None
                if usage is not None and getattr(event, "usage", None):
                    usage.update(model=event.model or self.model, prompt_tokens=event.usage.prompt_tokens,
                                 completion_tokens=event.usage.completion_tokens)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("total deadline reached mid-stream")
                try:
                    async with asyncio.timeout(remaining):
                        event = await iterator.__anext__()
                except StopAsyncIteration:
                    break
            if not finished:
                # The client ends quietly when the connection closes; a stream without a
                # finish_reason was cut mid-answer.
                raise ConnectionError("the stream ended before the model finished its answer")
        except (openai.OpenAIError, TimeoutError, ValueError, ConnectionError) as exc:
            self.breaker.failure()
            _, reason, _ = _classify(exc)
            raise GenerationError(f"LLM stream failed mid-answer ({reason}): {type(exc).__name__}: {exc}"[:500],
                                  reason) from exc
        finally:
            await events.close()


def build_generator(providers: Providers, api_key: str | None, on_retry: Callable[[str], None] | None = None
                    ) -> Generator:
    """The configured LLM, or the offline extractive generator when none is configured."""
    if providers.llm is None:
        return ExtractiveGenerator()
    llm = providers.llm
    if not isinstance(llm, LLMEndpoint):
        llm = LLMEndpoint(url=llm.url, model=llm.model)
    return OpenAIChatGenerator(llm.url, llm.model or DEFAULT_OPENAI_MODEL, api_key, endpoint=llm, on_retry=on_retry)
