import pytest
from kuberag_api.rag import RagEngine
from kuberag_contract.config import Retrieval

from bench.corpora import INFO, build_index, index_info, sample_questions

pytestmark = pytest.mark.unit


def test_build_index_builds_about_n_chunks_then_reuses_it(tmp_path, embedder):
    path = build_index(tmp_path, 40, embedder=embedder, log=lambda _: None)
    info = index_info(path)
    assert 40 <= info["chunks"] < 40 + 60  # whole documents: at most one page over
    assert info["embedder"] == embedder.name and info["reopen_seconds"] < 5
    stamp = (path / INFO).stat().st_mtime_ns
    assert build_index(tmp_path, 40, embedder=embedder) == path
    assert (path / INFO).stat().st_mtime_ns == stamp  # reused, not rebuilt
    engine = RagEngine.open(path, retrieval=Retrieval(), embedder=embedder)
    assert engine.chunk_count == info["chunks"] and engine.corpus_version == info["corpus_version"]
    engine.close()


def test_sample_questions_are_distinct_and_mix_languages():
    questions = sample_questions(500)
    assert len(set(questions)) == 500
    assert any(q.startswith("¿") for q in questions)
    with pytest.raises(ValueError, match="distinct questions"):
        sample_questions(10**7)
