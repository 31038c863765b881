import numpy as np
import pytest
from kuberag_api.rag.fusion import (
    DEFAULT_DENSE_WEIGHT,
    Ranking,
    linear_fusion,
    rrf_fusion,
    top_indices,
)

pytestmark = pytest.mark.unit

DENSE = np.array([0.9, 0.2, 0.5, 0.1], dtype=np.float32)
BM25 = np.array([0.0, 8.0, 2.0, 4.0], dtype=np.float32)


def test_weight_one_is_dense_and_weight_zero_is_bm25():
    assert top_indices(linear_fusion(DENSE, BM25, 1.0), 4).tolist() == [0, 2, 1, 3]
    assert top_indices(linear_fusion(DENSE, BM25, 0.0), 4).tolist() == [1, 3, 2, 0]


def test_intermediate_weight_mixes_both_signals():
    fused = linear_fusion(DENSE, BM25, 0.5)
    # doc 2 (0.5 dense, 0.25 lexical) beats doc 0 (0.9, 0) only when lexical counts enough.
    np.testing.assert_allclose(fused, 0.5 * DENSE + 0.5 * BM25 / 8.0)


def test_no_lexical_match_keeps_the_dense_order():
    fused = linear_fusion(DENSE, np.zeros(4, np.float32), DEFAULT_DENSE_WEIGHT)
    assert top_indices(fused, 4).tolist() == [0, 2, 1, 3]


def test_rrf_ignores_chunks_without_lexical_match():
    fused = rrf_fusion(DENSE, BM25, 0.0)
    assert fused[0] == 0.0 and fused[1] > fused[3] > fused[2] > 0


def test_top_indices_handles_k_larger_than_n_and_zero():
    assert top_indices(np.array([1.0, 3.0, 2.0]), 10).tolist() == [1, 2, 0]
    assert top_indices(np.array([1.0]), 0).tolist() == []



def test_ranking_fuses_with_the_weight_of_the_question_language():
    ranking = Ranking("linear", 0.5, (("en", 1.0), ("es", 0.0)))
    assert ranking.weight_for("How do I read a file?") == 1.0 and ranking.weight_for("¿Cómo leo un archivo?") == 0.0
    np.testing.assert_allclose(ranking.fuse("¿Cómo leo un archivo?", DENSE, BM25), linear_fusion(DENSE, BM25, 0.0))
    np.testing.assert_allclose(Ranking("rrf", 0.7).fuse("anything", DENSE, BM25), rrf_fusion(DENSE, BM25, 0.7))
    assert Ranking("linear", 0.8).weight_for("¿Qué?") == 0.8
