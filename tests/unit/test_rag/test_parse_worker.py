"""The parser process: documents past a limit are refused (422) instead of stalling a thread; a
parse that runs too long is killed, the process replaced; a stop ends the parse in progress."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import pytest
from kuberag_api.rag import DocumentError, DocumentTooComplex, UnsupportedDocument
from kuberag_api.rag.parse_worker import ParserProcess, ParserStopped
from kuberag_api.rag.parsing import ParseLimits, parse_document

pytestmark = pytest.mark.unit

DEEP_HTML = ("<html><body>" + "<div>x " * 200_000 + "</div>" * 200_000 + "</body></html>").encode()


@pytest.fixture
def parser():
    p = ParserProcess()
    yield p
    p.stop()


@pytest.mark.timeout(60)
def test_deeply_nested_html_is_refused_not_parsed_for_hours(parser):
    """The defect: 200,000 nested divs kept a thread busy for hours (16k levels: 33 s)."""
    with pytest.raises(DocumentTooComplex, match="nested more than 512 levels"):
        parser.parse("deep.html", DEEP_HTML)
    doc = parser.parse("ok.html", b"<h1>Title</h1><div><div><p>Nested a little.</p></div></div>")
    assert doc.sections[0].heading == "Title" and "Nested a little." in doc.text


def test_errors_keep_their_kind_across_the_process(parser):
    with pytest.raises(UnsupportedDocument):
        parser.parse("a.exe", b"MZ")
    with pytest.raises(DocumentError, match="not a PDF"):
        parser.parse("fake.pdf", b"hello")
    with pytest.raises(DocumentTooComplex, match="characters of text"):
        ParserProcess(ParseLimits(max_text_chars=100)).parse("long.txt", b"word " * 100)


def test_a_parse_past_the_time_limit_is_killed_and_the_process_replaced():
    """However fast or loaded the machine: the parser process is frozen (SIGSTOP), so the parse
    cannot answer within its limit; it is killed, and the next parse runs in a new process, with
    a limit no machine misses (process start included)."""
    parser = ParserProcess(ParseLimits(seconds=0.5))
    try:
        parser.start()
        frozen = parser.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        with pytest.raises(DocumentTooComplex, match="longer than 0.5 s"):
            parser.parse("stuck.txt", b"never answered")
        assert parser.kills == 1
        assert not _alive(frozen)
        parser.limits = replace(parser.limits, seconds=300)
        assert parser.parse("small.txt", b"still parses").text == "still parses"
        assert parser.pid not in (None, frozen)
    finally:
        parser.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_document_past_the_memory_limit_is_refused():
    parser = ParserProcess(ParseLimits(memory_bytes=64 << 20, max_text_chars=10**9, seconds=120))
    try:
        with pytest.raises(DocumentTooComplex, match="memory|ended"):
            parser.parse("huge.txt", b"abc def\n\n" * 20_000_000)
        assert parser.parse("small.txt", b"fine").text == "fine"
    finally:
        parser.stop()


def test_stop_ends_the_parse_in_progress():
    parser = ParserProcess(ParseLimits(seconds=120, max_text_chars=10**9))
    parser.parse("warm.txt", b"start the process")
    outcome: list[BaseException | object] = []

    def run():
        try:
            outcome.append(parser.parse("big.txt", b"word and another " * 6_000_000))
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    parser.stop()
    t.join(30)
    assert not t.is_alive() and isinstance(outcome[0], ParserStopped)
    with pytest.raises(ParserStopped):
        parser.parse("after.txt", b"refused")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("line", ["# a" + " " * 100_000 + "b", "#" * 6 + " " + "# " * 100_000 + "x"])
def test_markdown_headings_are_linear(line):
    """The heading regex backtracked: 2,000 spaces took 38 s, 100,000 would take days."""
    doc = parse_document("h.md", (line + "\n\nbody text").encode())
    assert doc.sections[0].text == "body text"


def test_markdown_closing_hashes():
    doc = parse_document("c.md", b"# C#\n\none\n\n## Title ##\n\ntwo\n\n### x #y\n\nthree")
    assert [s.heading for s in doc.sections] == ["C#", "Title", "x #y"]
