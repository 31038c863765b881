import re

import pytest
from kuberag_api.rag import (
    NOT_FOUND_ANSWER,
    NOT_FOUND_ANSWER_ES,
    ExtractiveGenerator,
    OpenAIChatGenerator,
    Passage,
    build_generator,
    not_found_answer,
)
from kuberag_contract.config import Endpoint, Providers

pytestmark = pytest.mark.unit


def passage(i: int, source: str, text: str, dense: float) -> Passage:
    return Passage(f"d{i}", f"d{i}:0", source, text, dense, {"dense_score": dense, "heading": None})


PASSAGES = [
    passage(1, "caching.md", "Answers are cached in three levels. The L2 level is a Redis sidecar on localhost. "
            "Keys include the corpus version.", 0.62),
    passage(2, "limits.md", "The rate limit is enforced per client. Each pod keeps its own counters.", 0.41),
    passage(3, "unrelated.md", "Bananas are yellow and grow in bunches on large plants.", 0.05),
]


async def test_extractive_answer_uses_relevant_sentences_with_citations():
    answer = await ExtractiveGenerator().generate("Where is the Redis cache level?", PASSAGES)
    assert answer.model == "extractive"
    assert "The L2 level is a Redis sidecar on localhost. [1]" in answer.text
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)}
    assert cited and cited <= {1, 2}  # the irrelevant passage 3 is never cited
    assert "Bananas" not in answer.text


async def test_nothing_relevant_gives_the_not_found_answer():
    answer = await ExtractiveGenerator().generate("Who won the 2014 world cup?", [PASSAGES[2]])
    assert answer.text == NOT_FOUND_ANSWER
    assert (await ExtractiveGenerator().generate("anything", [])).text == NOT_FOUND_ANSWER


async def test_stream_yields_the_same_answer_in_pieces():
    generator = ExtractiveGenerator()
    pieces = [p async for p in generator.stream("How is the rate limit enforced?", PASSAGES)]
    assert len(pieces) > 3
    assert "".join(pieces) == (await generator.generate("How is the rate limit enforced?", PASSAGES)).text


def test_build_generator_follows_the_providers_config():
    assert isinstance(build_generator(Providers(), None), ExtractiveGenerator)
    llm = build_generator(Providers(llm=Endpoint(url="http://127.0.0.1:1/v1", model="m")), "k")
    assert isinstance(llm, OpenAIChatGenerator) and llm.name == "openai:m"


async def test_the_not_found_answer_follows_the_question_language():
    generator = ExtractiveGenerator()
    spanish = await generator.generate("¿Cuál es la montaña más alta de Sudamérica?", [PASSAGES[2]])
    assert spanish.text == NOT_FOUND_ANSWER_ES
    assert not_found_answer("Que es la capital de Francia y donde esta") == NOT_FOUND_ANSWER_ES
    assert not_found_answer("What is the capital of France?") == NOT_FOUND_ANSWER


async def test_the_extractive_answer_quotes_in_the_passages_language_and_says_so():
    generator = ExtractiveGenerator()
    spanish = await generator.generate("¿Dónde está el nivel de caché de Redis?", PASSAGES)
    assert spanish.text.startswith("(Citas de los documentos, en inglés.) ")
    assert "The L2 level is a Redis sidecar on localhost. [1]" in spanish.text  # quoted as written
    english = await generator.generate("Where is the Redis cache level?", PASSAGES)
    assert not english.text.startswith("(")
    es_passages = [passage(1, "df.md", "df muestra el espacio libre de cada sistema de archivos montado. "
                                       "Por defecto, el espacio en disco se muestra en bloques de 1K.", 0.9)]
    quoted = await generator.generate("How do I see the free disk space?", es_passages)
    assert quoted.text.startswith("(Quoted from the documents, in Spanish.) ") and "[1]" in quoted.text
    same = await generator.generate("¿Cómo veo el espacio libre del disco?", es_passages)
    assert not same.text.startswith("(")


def test_language_of_tells_spanish_from_english():
    from kuberag_api.rag.generation import language_of

    assert language_of("¿Cómo creo un entorno virtual?") == "es"
    assert language_of("Como creo un entorno virtual para mi proyecto") == "es"
    assert language_of("How do I create a virtual environment?") == "en"
