import pytest
from kuberag_api.rag.chunking import chunk_sections, split_sentences
from kuberag_api.rag.parsing import Section

pytestmark = pytest.mark.unit

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)]


def test_chunks_respect_size_and_overlap_on_sentence_boundaries():
    text = " ".join(SENTENCES[:30]) + "\n\n" + " ".join(SENTENCES[30:])
    chunks = chunk_sections([Section("Intro", text)], chunk_size=300, chunk_overlap=80)
    assert len(chunks) > 5
    assert all(len(c.text) <= 300 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(c.heading == "Intro" for c in chunks)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        tail = split_sentences(prev.text)[-1]
        # The last whole sentence of a chunk opens the next one (the overlap).
        assert nxt.text.startswith(tail), (prev.text, nxt.text)
    # Every sentence is in some chunk.
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in SENTENCES)


def test_no_overlap_means_disjoint_chunks():
    chunks = chunk_sections([Section(None, " ".join(SENTENCES))], chunk_size=200, chunk_overlap=0)
    total = sum(len(split_sentences(c.text)) for c in chunks)
    assert total == len(SENTENCES)


def test_chunks_never_span_sections_and_keep_their_heading():
    chunks = chunk_sections([Section("A", "Alpha text here."), Section("B", "Beta text here.")], 500, 50)
    assert [(c.heading, c.text) for c in chunks] == [("A", "Alpha text here."), ("B", "Beta text here.")]


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces():
    long = "word " * 200
    chunks = chunk_sections([Section(None, long)], chunk_size=150, chunk_overlap=20)
    assert all(len(c.text) <= 150 for c in chunks)
    assert sum(c.text.count("word") for c in chunks) >= 200


def test_overlap_must_be_smaller_than_size():
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_sections([Section(None, "x")], 100, 100)


def test_sentence_split_handles_spanish_and_abbreviated_endings():
    assert split_sentences("¿Qué es? Es un sistema. ¡Funciona!") == ["¿Qué es?", "Es un sistema.", "¡Funciona!"]
