import math
import random

import numpy as np
import pytest
from kuberag_api.rag.bm25 import BM25Index, tokenize

pytestmark = pytest.mark.unit


def reference_bm25(docs: list[list[str]], query: list[str], k1=1.2, b=0.75) -> list[float]:
    """The textbook formula, one document at a time, to check the vectorised index against."""
    n = len(docs)
    avg = sum(len(d) for d in docs) / n
    scores = []
    for d in docs:
        s = 0.0
        for term in set(query):
            df = sum(1 for x in docs if term in x)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = d.count(term)
            s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avg))
        scores.append(s)
    return scores


def test_matches_the_textbook_formula_on_random_documents():
    rng = random.Random(7)
    words = [f"w{i}" for i in range(40)]
    docs = [[rng.choice(words) for _ in range(rng.randint(1, 30))] for _ in range(200)]
    index = BM25Index(docs)
    for _ in range(20):
        query = rng.sample(words, 3)
        np.testing.assert_allclose(index.scores(" ".join(query)), reference_bm25(docs, query), rtol=1e-4, atol=1e-5)


def test_ranks_the_document_with_the_rare_term_first():
    texts = ["the cache stores answers", "redis is the cache sidecar", "the operator reconciles deployments"]
    index = BM25Index([tokenize(t) for t in texts])
    scores = index.scores("which component reconciles?")
    assert int(np.argmax(scores)) == 2
    assert scores[0] == 0 and scores[1] == 0


def test_tokenizer_folds_accents_plurals_and_drops_stopwords():
    assert tokenize("La configuración de los Pods") == ["configuracion", "pod"]
    assert tokenize("policies") == ["policy"]


def test_no_matching_term_gives_zero_scores_and_empty_index_works():
    index = BM25Index([tokenize("alpha beta")])
    assert index.scores("gamma").tolist() == [0.0]
    assert BM25Index([]).scores("anything").shape == (0,)
