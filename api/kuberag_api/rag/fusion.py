"""Fusion of dense (cosine) and BM25 scores into one hybrid ranking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Weight of the dense score in the linear fusion; 1.0 is dense only, 0.0 BM25 only.
# Chosen by measurement on bench/data (bench/retrieval.py reports every weight tried).
DEFAULT_DENSE_WEIGHT = 0.9
RRF_K = 60


def linear_fusion(dense: np.ndarray, bm25: np.ndarray, dense_weight: float) -> np.ndarray:
    """``w * cosine + (1 - w) * bm25 / max(bm25)``: both terms on [0, 1]-ish scales, so a
    question with no lexical match is ranked by its dense score alone."""
    top = float(bm25.max()) if bm25.size else 0.0
    lexical = bm25 / top if top > 0 else np.zeros_like(bm25)
    return dense_weight * dense + (1.0 - dense_weight) * lexical


def rrf_fusion(dense: np.ndarray, bm25: np.ndarray, dense_weight: float, k: int = RRF_K) -> np.ndarray:
    """Weighted reciprocal-rank fusion (for comparison in the benchmark)."""
    n = dense.size
    dense_rank = np.empty(n, dtype=np.float32)
    dense_rank[np.argsort(-dense, kind="stable")] = np.arange(1, n + 1)
    bm25_rank = np.empty(n, dtype=np.float32)
    bm25_rank[np.argsort(-bm25, kind="stable")] = np.arange(1, n + 1)
    lexical = np.where(bm25 > 0, 1.0 / (k + bm25_rank), 0.0)
    return dense_weight / (k + dense_rank) + (1.0 - dense_weight) * lexical


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (argpartition: O(n) instead of a full sort)."""
    k = min(k, scores.size)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]



@dataclass(frozen=True)
class Ranking:
    """How chunks are ranked for a question: the fusion of dense and BM25 scores, with the dense
    weight chosen per question language (``rag.language.language_of``) when a model has one."""

    fusion: str = "linear"  # "linear" or "rrf"
    dense_weight: float = DEFAULT_DENSE_WEIGHT  # for languages not in language_weights
    language_weights: tuple[tuple[str, float], ...] = ()

    def weight_for(self, question: str) -> float:
        if not self.language_weights:
            return self.dense_weight
        from kuberag_api.rag.language import language_of

        return dict(self.language_weights).get(language_of(question), self.dense_weight)

    def fuse(self, question: str, dense: np.ndarray, bm25: np.ndarray) -> np.ndarray:
        weight = self.weight_for(question)
        if self.fusion == "rrf":
            return rrf_fusion(dense, bm25, weight)
        return linear_fusion(dense, bm25, weight)

    def describe(self) -> dict:
        return {"fusion": self.fusion, "dense_weight": self.dense_weight,
                "language_weights": dict(self.language_weights)}
