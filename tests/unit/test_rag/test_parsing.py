import pytest
from kuberag_api.rag import DocumentError, UnsupportedDocument
from kuberag_api.rag.parsing import detect_content_type, parse_document

from tests.unit.test_rag.minimal_pdf import text_pdf

pytestmark = pytest.mark.unit


def test_plain_text_is_cleaned_but_kept():
    doc = parse_document("notes.txt", b"First  line\r\nsecond line.\n\n\n\nNew paragraph.")
    assert doc.content_type == "text/plain"
    assert doc.text == "First line\nsecond line.\n\nNew paragraph."


def test_markdown_sections_follow_headings_and_ignore_hashes_in_code():
    text = "# Title\nIntro text.\n\n## Install\nRun it.\n```\n# not a heading\n```\n## Use\nAsk."
    doc = parse_document("guide.md", text.encode())
    assert [s.heading for s in doc.sections] == ["Title", "Install", "Use"]
    assert "# not a heading" in doc.sections[1].text


def test_html_drops_scripts_styles_and_keeps_headings():
    html = b"""<html><head><title>t</title><style>p{color:red}</style></head><body>
    <script>alert('x')</script><h1>Caching</h1><p>Answers are cached in <b>three</b> levels.</p>
    <h2>Keys</h2><ul><li>corpus version</li><li>model</li></ul></body></html>"""
    doc = parse_document("page.html", html)
    assert [s.heading for s in doc.sections] == ["Caching", "Keys"]
    assert "alert" not in doc.text and "color" not in doc.text
    assert "Answers are cached in three levels." in doc.text
    assert "corpus version" in doc.sections[1].text


def test_pdf_text_per_page():
    data = text_pdf([["Kuberag answers questions."], ["Second page text."]])
    doc = parse_document("manual.pdf", data)
    assert doc.content_type == "application/pdf"
    assert [s.page for s in doc.sections] == [1, 2]
    assert "Kuberag answers questions." in doc.sections[0].text


def test_content_type_wins_over_extension_and_generic_types_fall_back():
    assert detect_content_type("x.bin", "text/markdown; charset=utf-8") == "text/markdown"
    assert detect_content_type("x.md", "application/octet-stream") == "text/markdown"


@pytest.mark.parametrize(
    ("source", "data", "content_type", "message"),
    [
        ("report.docx", b"PK\x03\x04", None, "unsupported document type (extension '.docx'"),
        ("README", b"hello", None, "no file extension"),
        ("image.txt", b"\x89PNG", "image/png", "unsupported content type 'image/png'"),
        ("empty.txt", b"", None, "empty (0 bytes)"),
        ("blank.md", b"   \n\n\t ", None, "no text to index"),
        ("junk.txt", b"abc\x00\x01\x02" * 50, None, "binary"),
        ("fake.pdf", b"hello, not a pdf", None, "not a PDF file"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", None, "corrupt or unreadable PDF"),
        ("empty.pdf", text_pdf([[]]), None, "no extractable text"),
    ],
)
def test_bad_documents_are_refused_with_a_message_naming_the_problem(source, data, content_type, message):
    with pytest.raises(DocumentError) as info:
        parse_document(source, data, content_type)
    assert message in str(info.value)
    assert source in str(info.value)


def test_unsupported_is_a_document_error_and_a_value_error():
    with pytest.raises(UnsupportedDocument):
        parse_document("a.exe", b"MZ")
    assert issubclass(UnsupportedDocument, ValueError)


def test_windows_1252_text_is_decoded():
    doc = parse_document("old.txt", "Caf\xe9 con leche".encode("cp1252"))
    assert doc.text == "Café con leche"


def test_html_keeps_text_outside_paragraph_tags_and_line_breaks():
    html = b"""<body><div>Intro sitting directly in a div.<p>A paragraph.</p>Tail text.</div>
    <h2>Next</h2><span>Loose span text</span><br>after a break<table><tr><td>cell one</td><td>cell two</td></tr></table>
    </body>"""
    doc = parse_document("loose.html", html)
    assert [s.heading for s in doc.sections] == [None, "Next"]
    first, second = doc.sections[0].text, doc.sections[1].text
    assert "Intro sitting directly in a div." in first and "A paragraph." in first and "Tail text." in first
    assert "Loose span text" in second and "after a break" in second and "cell one" in second
