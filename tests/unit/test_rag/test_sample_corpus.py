import re
from importlib import resources

import pytest
from kuberag_api.rag import NOT_FOUND_ANSWER, ExtractiveGenerator, RagEngine
from kuberag_contract.config import Retrieval

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def sample_engine(tmp_path_factory, embedder):
    corpus = resources.files("kuberag_api") / "data" / "sample_corpus"
    engine = RagEngine.open(tmp_path_factory.mktemp("sample"), retrieval=Retrieval(), corpus_path=str(corpus),
                            embedder=embedder)
    yield engine
    engine.close()


def test_the_bundled_corpus_is_package_data_and_indexes_cleanly(sample_engine):
    assert sample_engine.document_count >= 6
    assert sample_engine.chunk_count > sample_engine.document_count


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("What happens to cached answers after I upload a new file?", "caching.md"),
        ("How many requests per minute may one client send?", "rate-limiting.md"),
        ("Which Kubernetes objects does the controller own?", "operator.md"),
        ("¿Qué formatos de archivo puedo subir?", "documents-and-retrieval.md"),
    ],
)
async def test_it_answers_questions_about_kuberag_with_citations(sample_engine, question, source):
    passages = sample_engine.retrieve(question)
    assert source in [p.source for p in passages[:3]]
    answer = await ExtractiveGenerator().generate(question, passages)
    assert answer.text != NOT_FOUND_ANSWER
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)}
    assert cited and cited <= set(range(1, len(passages) + 1))


async def test_an_unrelated_question_is_not_answered(sample_engine):
    question = "What is the best recipe for chocolate cake?"
    answer = await ExtractiveGenerator().generate(question, sample_engine.retrieve(question))
    assert answer.text == NOT_FOUND_ANSWER
