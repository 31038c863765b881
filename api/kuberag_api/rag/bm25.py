"""BM25 over chunks with an inverted index held as numpy arrays (no per-query loop over chunks)."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
# Frequent English and Spanish function words: they carry no topic and only add noise.
STOPWORDS = frozenset(
    """a an and are as at be by can do does for from has have how i if in into is it its of on or
    that the their then there these this to was what when where which who why will with you your
    not no yes my we our they them than so such but all any each more most other some about after
    before over under again further once here both few own same too very just should would could
    el la los las un una unos unas y o de del al en que por para con sin es son como cual cuales
    qué cómo cuál cuáles cuándo dónde quién se su sus lo le les me mi mis tu tus nos es está
    están ser hay puedo puede pueden hace hacer este esta estos estas ese esa eso""".split()
)


def _fold(text: str) -> str:
    # Lowercase and strip accents so "configuración" and "configuracion" match.
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _stem(word: str) -> str:
    # A light plural/inflection strip: enough to match "pods"/"pod", "caches"/"cache".
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    words = _WORD.findall(_fold(text))
    return [_stem(w) for w in words if w not in STOPWORDS and len(w) > 1]


class BM25Index:
    """Okapi BM25 (k1, b) over a fixed list of chunk texts.

    Postings are stored sorted by term: ``doc_ids[offsets[t]:offsets[t+1]]`` are the chunks
    that contain term ``t`` and ``weights`` their precomputed term weights, so a query touches
    only the postings of its own terms.
    """

    def __init__(self, token_lists: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.n = len(token_lists)
        # One pass over all tokens, then numpy: (chunk, term) pairs counted with a single unique.
        all_tokens = list(itertools.chain.from_iterable(token_lists))
        vocab = {t: i for i, t in enumerate(dict.fromkeys(all_tokens))}
        ids = np.fromiter(map(vocab.__getitem__, all_tokens), dtype=np.int64, count=len(all_tokens))
        lengths = np.fromiter((len(tokens) for tokens in token_lists), dtype=np.int64, count=self.n)
        rows_all = np.repeat(np.arange(self.n, dtype=np.int64), lengths)
        pairs, tf = np.unique(rows_all * max(len(vocab), 1) + ids, return_counts=True)
        row = (pairs // max(len(vocab), 1)).astype(np.int32)
        term = pairs % max(len(vocab), 1)
        tf = tf.astype(np.float32)
        lengths = lengths.astype(np.float32)
        self.vocab = vocab
        order = np.argsort(term, kind="stable")
        self.doc_ids = row[order]
        df = np.bincount(term, minlength=len(vocab)).astype(np.float32)
        self.offsets = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
        self.idf = np.log1p((self.n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avg = float(lengths.mean()) if self.n else 1.0
        norm = k1 * (1 - b + b * lengths / max(avg, 1e-9))
        tf_sorted = tf[order]
        self.weights = (tf_sorted * (k1 + 1) / (tf_sorted + norm[self.doc_ids])).astype(np.float32)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for the query (zeros where no term matches)."""
        out = np.zeros(self.n, dtype=np.float32)
        for term in set(tokenize(query)):
            t = self.vocab.get(term)
            if t is None:
                continue
            lo, hi = self.offsets[t], self.offsets[t + 1]
            # doc_ids within one term's postings are unique, so plain fancy-index += is exact.
            out[self.doc_ids[lo:hi]] += self.idf[t] * self.weights[lo:hi]
        return out
