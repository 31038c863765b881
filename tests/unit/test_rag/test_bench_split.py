import collections

import pytest

from bench.retrieval import HELD_OUT, TUNING, load_questions, split_of

pytestmark = pytest.mark.unit


def test_split_keeps_each_page_and_each_translation_in_one_half():
    data = load_questions()
    halves, unanswerable = split_of(data)
    by_page = collections.defaultdict(set)
    for half, item in zip(halves, data["questions"], strict=True):
        by_page[item["relevant"][0]].add(half)
    assert all(len(h) == 1 for h in by_page.values())
    originals = [(q, h) for q, h in zip(data["questions"], halves, strict=True) if q["set"] == "original" and q["lang"] == "en"]
    translations = [(q, h) for q, h in zip(data["questions"], halves, strict=True) if q["set"] == "translation"]
    assert len(originals) == len(translations) == 53
    # Translations follow their originals in file order.
    for (en, en_half), (es, es_half) in zip(originals, translations, strict=True):
        assert en["relevant"] == es["relevant"] and en_half == es_half
    assert set(halves) == set(unanswerable) == {TUNING, HELD_OUT}


def test_split_is_the_committed_one():
    # The halves were fixed before any parameter was chosen on them: a change here is a new split.
    data = load_questions()
    halves, unanswerable = split_of(data)
    counts = collections.Counter((h, q["lang"]) for h, q in zip(halves, data["questions"], strict=True))
    assert counts == {(TUNING, "en"): 30, (TUNING, "es"): 34, (HELD_OUT, "en"): 29, (HELD_OUT, "es"): 42}
    assert collections.Counter(unanswerable) == {TUNING: 4, HELD_OUT: 4}
