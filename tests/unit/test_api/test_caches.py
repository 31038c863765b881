"""L1 LRU+TTL, L3 semantic index, cache keys, the circuit breaker and single-flight."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from kuberag_api.cache.entry import CachedAnswer, decode_answer, encode_answer
from kuberag_api.cache.keys import CacheScope, answer_key, normalise_question
from kuberag_api.cache.memory import MemoryCache
from kuberag_api.cache.semantic import SemanticCache, negation_signature
from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.single_flight import SingleFlight

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(text: str = "a") -> CachedAnswer:
    return CachedAnswer(text, (), "m", "q", 0.0, ("d1",))


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_memory_cache_lru_ttl_and_live_resize():
    clock = Clock()
    c = MemoryCache(2, 10, clock=clock)
    c.set("a", 1)
    c.set("b", 2)
    assert c.get("a") == 1  # a is now the most recent
    c.set("c", 3)
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3
    clock.now = 11
    assert c.get("a") is None
    c.set("x", 1)
    c.set("y", 2)
    c.resize(1, 5)
    assert len(c) == 1 and c.get("y") == 2
    c.resize(0, 5)
    c.set("z", 1)
    assert len(c) == 0


def test_keys_normalise_and_cover_every_input():
    assert normalise_question("  What IS  Redis? ") == normalise_question("what is redis")
    assert normalise_question("¿Qué es Redis?") == "qué es redis"
    base = CacheScope("v1", "extractive", "minilm", "fp", 0)
    q = normalise_question("what is redis")
    keys = {answer_key(q, base.token())}
    for changed in (CacheScope("v2", "extractive", "minilm", "fp", 0), CacheScope("v1", "gpt", "minilm", "fp", 0),
                    CacheScope("v1", "extractive", "other", "fp", 0), CacheScope("v1", "extractive", "minilm", "fp2", 0),
                    CacheScope("v1", "extractive", "minilm", "fp", 1)):
        keys.add(answer_key(q, changed.token()))
    assert len(keys) == 6
    assert answer_key("what is redis not", base.token()) not in keys


def test_entry_roundtrip_keeps_cited_documents():
    e = CachedAnswer("x", (), "m", "q", 1.5, ("d1", "d2"), 3, 4)
    assert decode_answer(encode_answer(e)) == e


def test_negation_signature():
    assert negation_signature("Is Redis persistent?") == ()
    assert negation_signature("Isn't Redis persistent?") == ("not",)
    assert negation_signature("Is Redis not persistent?") == ("not",)
    assert negation_signature("¿Redis no guarda datos?") == ("no",)


def test_semantic_cache_threshold_negation_scope_and_exact():
    clock = Clock()
    c = SemanticCache(100, 60, 0.9, clock=clock)
    v = unit([1, 0, 0, 0])
    c.put("s1", "k1", answer("one"), v, "is redis persistent")
    assert c.get_exact("s1", "k1").answer == "one"
    hit = c.get_similar("s1", unit([1, 0.1, 0, 0]), "is redis really persistent")
    assert hit is not None and hit[0].answer == "one" and hit[1] > 0.99
    assert c.get_similar("s1", unit([1, 1, 0, 0]), "something else") is None  # cos 0.71 < 0.9
    assert c.get_similar("s1", unit([1, 0.1, 0, 0]), "is redis not persistent") is None
    assert c.get_similar("s2", v, "is redis persistent") is None  # another scope never matches
    clock.now = 61
    assert c.get_similar("s1", v, "is redis persistent") is None
    assert c.get_exact("s1", "k1") is None


def test_semantic_cache_bounded_and_scope_change_clears():
    c = SemanticCache(3, 60, 0.9)
    rng = np.random.default_rng(1)
    vecs = [unit(rng.standard_normal(16)) for _ in range(5)]
    for i, v in enumerate(vecs):
        c.put("s", f"k{i}", answer(str(i)), v, f"q{i}")
    assert len(c) == 3
    assert c.get_similar("s", vecs[0], "q0") is None  # evicted
    assert c.get_similar("s", vecs[4], "q4")[0].answer == "4"
    c.resize(1, 60, 0.9)
    assert len(c) == 1
    c.put("other", "k9", answer("9"), vecs[1], "q9")
    assert len(c) == 1 and c.get_similar("s", vecs[4], "q4") is None


def test_semantic_cache_reuses_slots_after_many_evictions():
    c = SemanticCache(50, 60, 0.95)
    rng = np.random.default_rng(2)
    for i in range(3000):
        c.put("s", f"k{i}", answer(str(i)), unit(rng.standard_normal(32)), f"q{i}")
    assert len(c) == 50
    assert c._index.get_max_elements() <= 2048


def test_circuit_breaker_opens_and_probes():
    clock = Clock()
    b = CircuitBreaker(3, 2.0, clock=clock)
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.state == "open" and not b.allow()
    clock.now = 2.5
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()
    assert b.state == "open"
    clock.now = 5
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


async def test_single_flight_shares_one_computation():
    sf: SingleFlight[int] = SingleFlight()
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(sf.run("k", compute) for _ in range(10)))
    assert calls == 1
    assert [r for r, _ in results] == [42] * 10
    assert sum(shared for _, shared in results) == 9
    assert len(sf) == 0


async def test_single_flight_propagates_errors_and_forgets_them():
    sf: SingleFlight[int] = SingleFlight()

    async def boom() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("nope")

    results = await asyncio.gather(*(sf.run("k", boom) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    await asyncio.sleep(0)

    async def ok() -> int:
        return 1

    assert (await sf.run("k", ok)) == (1, False)


def test_cached_answer_records_the_cited_documents():
    from kuberag_api.rag import Passage
    from kuberag_api.services import _doc_ids

    passages = [Passage(f"d{i}", f"d{i}:0", f"s{i}", "t", 1.0) for i in range(4)]
    assert _doc_ids(passages, "First [2]. Second [4]. Again [2].") == ("d1", "d3")
    assert _doc_ids(passages, "No citation.") == ("d0", "d1", "d2", "d3")
    assert _doc_ids(passages, "Out of range [9].") == ("d0", "d1", "d2", "d3")
