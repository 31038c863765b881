"""Answer generation: extractive (offline default) or any OpenAI-compatible chat endpoint."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kuberag_contract.config import Providers

from kuberag_api.rag.bm25 import tokenize
from kuberag_api.rag.chunking import split_sentences
from kuberag_api.rag.types import Passage

NOT_FOUND_ANSWER = "I could not find this in the documents."
NOT_FOUND_ANSWER_ES = "No he encontrado esto en los documentos."
_SPANISH_HINTS = frozenset(
    "qué cómo cuál cuáles cuándo dónde quién por para una los las del está están puedo puede hay "
    "el la es son se con sin".split()
)
# A passage whose cosine similarity to the question is below this is not evidence for an answer.
# Measured on bench/data with all-MiniLM-L6-v2 (bench/retrieval.py): the best passage of 96% of
# the answerable questions scores >= 0.2 (median 0.51; the misses are Spanish), while 5 of 8
# unanswerable questions stay below it (median 0.19, max 0.34). Lower would answer more noise,
# higher would refuse Spanish questions the passages do answer.
RELEVANCE_FLOOR = 0.2
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


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

    def stream(self, question: str, passages: list[Passage]) -> AsyncIterator[str]: ...


class GenerationError(RuntimeError):
    """The LLM endpoint failed; the message says how (the API reports it as degraded / 502)."""


def not_found_answer(question: str) -> str:
    """The "not in the documents" answer, in Spanish for a question that reads as Spanish."""
    words = re.findall(r"\w+", question.lower())
    spanish = "¿" in question or "¡" in question or sum(w in _SPANISH_HINTS for w in words) >= 2
    return NOT_FOUND_ANSWER_ES if spanish else NOT_FOUND_ANSWER


def relevant(passage: Passage) -> bool:
    dense = passage.metadata.get("dense_score")
    return dense is None or dense >= RELEVANCE_FLOOR


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
            return f"{_flatten(passage.text)[: self.max_chars].rstrip()} [{index + 1}]"
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
        return " ".join(f"{sentence} [{index + 1}]" for _, index, _, sentence in chosen)

    async def generate(self, question: str, passages: list[Passage]) -> GeneratedAnswer:
        return GeneratedAnswer(self.answer(question, passages), self.name)

    async def stream(self, question: str, passages: list[Passage]) -> AsyncIterator[str]:
        text = self.answer(question, passages)
        # Word-sized pieces, so a streaming client sees the answer arrive progressively.
        for piece in re.findall(r"\S+\s*", text):
            yield piece


_LIST_MARKER = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])\s+")


def _flatten(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. Cite the passages you use "
    "with their numbers in square brackets, like [1]. If the context does not contain the answer, "
    f"say: {NOT_FOUND_ANSWER} Answer in the language of the question."
)


def build_messages(question: str, passages: list[Passage]) -> list[dict]:
    context = "\n\n".join(f"[{i + 1}] ({p.source}) {p.text}" for i, p in enumerate(passages))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context:\n{context or '(no passages)'}\n\nQuestion: {question}"},
    ]


class OpenAIChatGenerator:
    """Any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama) via AsyncOpenAI."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_tokens: int = 512, temperature: float = 0.0) -> None:
        from openai import AsyncOpenAI

        # Local servers (vLLM, Ollama) accept any key; the client refuses to start without one.
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=1)
        self.model = model
        self.name = f"openai:{model}"
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def generate(self, question: str, passages: list[Passage]) -> GeneratedAnswer:
        import openai

        if not any(relevant(p) for p in passages):
            return GeneratedAnswer(not_found_answer(question), self.name, 0, 0)
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=build_messages(question, passages),
                max_tokens=self.max_tokens, temperature=self.temperature,
            )
        except openai.OpenAIError as exc:
            raise GenerationError(f"LLM endpoint failed: {exc}") from exc
        if not response.choices:
            raise GenerationError("LLM endpoint returned no choices")
        usage = response.usage
        return GeneratedAnswer(
            (response.choices[0].message.content or "").strip(),
            response.model or self.model,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
        )

    async def stream(self, question: str, passages: list[Passage]) -> AsyncIterator[str]:
        import openai

        if not any(relevant(p) for p in passages):
            yield not_found_answer(question)
            return
        try:
            events = await self._client.chat.completions.create(
                model=self.model, messages=build_messages(question, passages),
                max_tokens=self.max_tokens, temperature=self.temperature, stream=True,
            )
            async for event in events:
                for choice in event.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except openai.OpenAIError as exc:
            raise GenerationError(f"LLM endpoint failed: {exc}") from exc


def build_generator(providers: Providers, api_key: str | None) -> Generator:
    """The configured LLM, or the offline extractive generator when none is configured."""
    if providers.llm is None:
        return ExtractiveGenerator()
    return OpenAIChatGenerator(providers.llm.url, providers.llm.model or DEFAULT_OPENAI_MODEL, api_key)
