"""Turns uploaded bytes (txt, md, html, pdf) into text sections with their headings.

Bounded work: every parser here is linear in the input (lxml/libxml2 for HTML, a scan without
backtracking regexes for Markdown headings), and ``ParseLimits`` caps HTML nesting and elements,
PDF pages and the extracted text; a document past a limit raises ``DocumentTooComplex`` (a 422).
Time and memory are bounded by running uploads in a parser process (``parse_worker``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from kuberag_api.rag.types import DocumentError, DocumentTooComplex, UnsupportedDocument

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
_MIME_ALIASES = {
    "text/plain": "text/plain",
    "text/markdown": "text/markdown",
    "text/x-markdown": "text/markdown",
    "text/html": "text/html",
    "application/xhtml+xml": "text/html",
    "application/pdf": "application/pdf",
}
# Generic types clients send for any file: fall back to the file name's extension.
_GENERIC_TYPES = {"application/octet-stream", "binary/octet-stream", ""}
SUPPORTED = "txt, md, html, pdf"


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """How much work one document may take. Past a limit the document is refused (422)."""

    max_depth: int = 512
    """HTML element nesting (browsers stop nesting at 512 too; real pages stay under ~100)."""
    max_elements: int = 500_000
    """HTML elements."""
    max_pdf_pages: int = 2_000
    max_text_chars: int = 5_000_000
    """Extracted text: about 6,500 chunks of 800 characters (each one embedded)."""
    seconds: float = 30.0
    """Wall time of one parse in the parser process (killed and replaced past it)."""
    memory_bytes: int = 1 << 30
    """Address space the parser process may add while parsing (a MemoryError past it)."""


DEFAULT_LIMITS = ParseLimits()


@dataclass(frozen=True, slots=True)
class Section:
    heading: str | None
    text: str
    page: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    content_type: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def detect_content_type(source: str, content_type: str | None) -> str:
    """The canonical content type from the declared type, else from the file name's extension."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared and declared not in _GENERIC_TYPES:
        if declared in _MIME_ALIASES:
            return _MIME_ALIASES[declared]
        raise UnsupportedDocument(f"{source}: unsupported content type {declared!r} (supported: {SUPPORTED})")
    suffix = PurePosixPath(source).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    what = f"extension {suffix!r}" if suffix else "no file extension"
    raise UnsupportedDocument(f"{source}: unsupported document type ({what}; supported: {SUPPORTED})")


def parse_document(source: str, data: bytes, content_type: str | None = None,
                   limits: ParseLimits = DEFAULT_LIMITS) -> ParsedDocument:
    ctype = detect_content_type(source, content_type)
    if not data:
        raise DocumentError(f"{source}: the document is empty (0 bytes)")
    if ctype == "application/pdf":
        sections = _parse_pdf(source, data, limits)
    else:
        text = _decode(source, data)
        if ctype == "text/html":
            sections = _parse_html(source, text, limits)
        elif ctype == "text/markdown":
            sections = _parse_markdown(text)
        else:
            sections = [Section(None, text)]
    sections = [Section(s.heading, _clean(s.text), s.page) for s in sections]
    sections = [s for s in sections if s.text]
    if not sections:
        raise DocumentError(f"{source}: the document has no text to index")
    chars = sum(len(s.text) for s in sections)
    if chars > limits.max_text_chars:
        raise DocumentTooComplex(f"{source}: the document has {chars:,} characters of text; at most "
                                 f"{limits.max_text_chars:,} are indexed per document (split it)")
    return ParsedDocument(ctype, sections)


def _decode(source: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{source}: the content is binary, not text (NUL bytes found)")
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise DocumentError(f"{source}: the text is not valid UTF-8 (nor Windows-1252)") from None
    # cp1252 decodes almost anything; mostly control characters means it was binary after all.
    controls = sum(1 for ch in text[:4096] if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > 0.05 * min(len(text), 4096):
        raise DocumentError(f"{source}: the content is binary, not text")
    return text


def _markdown_heading(line: str) -> str | None:
    """An ATX heading's title (``## Title ##``), or None. A scan, not a regex: the earlier
    pattern backtracked for minutes on a heading line of a few thousand spaces."""
    if not line.startswith("#"):
        return None
    level = len(line) - len(line.lstrip("#"))
    rest = line[level:]
    if level > 6 or not rest[:1].isspace():
        return None
    title = rest.strip()
    closed = title.rstrip("#")
    if closed != title and (not closed or closed[-1].isspace()):  # an optional closing sequence
        title = closed.strip()
    return title or None


def _parse_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    heading: str | None = None
    lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        title = None if in_fence else _markdown_heading(line)
        if title is not None:
            if "".join(lines).strip():
                sections.append(Section(heading, "\n".join(lines)))
            heading, lines = title, []
        else:
            lines.append(line)
    if "".join(lines).strip():
        sections.append(Section(heading, "\n".join(lines)))
    return sections


_HTML_BLOCKS = frozenset([
    "p", "div", "section", "article", "main", "aside", "header", "li", "ul", "ol", "dl", "dt", "dd",
    "pre", "blockquote", "table", "tr", "td", "th", "figure", "figcaption", "form", "fieldset",
])
_HTML_SKIPPED = frozenset(["script", "style", "noscript", "template", "svg", "head", "nav", "footer", "iframe"])
_HTML_HEADINGS = frozenset(["h1", "h2", "h3", "h4", "h5", "h6"])
_HEADING_MARK = "\u27e6kuberag-heading\u27e7"  # a token no real page contains, kept by str.split()


def _parse_html(source: str, text: str, limits: ParseLimits) -> list[Section]:
    """Visible text in document order, split at headings. lxml (libxml2) builds the tree in linear
    time; BeautifulSoup's html.parser took 33 s for 16k nested divs and grew faster than n^2."""
    import lxml.etree
    import lxml.html

    parser = lxml.html.HTMLParser(encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True)
    try:
        root = lxml.html.document_fromstring(text.encode("utf-8", "surrogatepass"), parser=parser)
    except lxml.etree.ParserError:  # "Document is empty"
        return []
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        # libxml2 stops at 2048 levels (and would silently drop the rest): say so instead.
        raise DocumentTooComplex(f"{source}: the HTML is nested more than {limits.max_depth} levels deep")
    body = root.find("body")
    body = body if body is not None else root
    parts: list[str] = []
    depth = elements = 0
    walk = lxml.etree.iterwalk(body, events=("start", "end"))
    for event, el in walk:
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "end":
            depth -= 1
            if tag in _HTML_BLOCKS:
                parts.append("\n\n")
            if el.tail and el is not body:
                parts.append(el.tail)
            continue
        depth += 1
        elements += 1
        if depth > limits.max_depth:
            raise DocumentTooComplex(f"{source}: the HTML is nested more than {limits.max_depth} levels deep")
        if elements > limits.max_elements:
            raise DocumentTooComplex(f"{source}: the HTML has more than {limits.max_elements:,} elements")
        if tag in _HTML_SKIPPED or not tag:
            walk.skip_subtree()
        elif tag in _HTML_HEADINGS:
            title = " ".join(el.text_content().split())
            parts.append(f"\n\n{_HEADING_MARK}{title}\n\n")
            walk.skip_subtree()
        elif tag == "br":
            parts.append("\n")
        else:
            if tag in _HTML_BLOCKS:
                parts.append("\n\n")
            if el.text:
                parts.append(el.text)
    sections: list[Section] = []
    heading_text: str | None = None
    paragraphs: list[str] = []
    for paragraph in re.split(r"\n\s*\n", "".join(parts)):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if paragraph.startswith(_HEADING_MARK):
            if paragraphs:
                sections.append(Section(heading_text, "\n\n".join(paragraphs)))
            heading_text, paragraphs = paragraph[len(_HEADING_MARK):].strip() or None, []
        else:
            paragraphs.append(paragraph)
    if paragraphs:
        sections.append(Section(heading_text, "\n\n".join(paragraphs)))
    return sections


def _parse_pdf(source: str, data: bytes, limits: ParseLimits) -> list[Section]:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentError(f"{source}: not a PDF file (no %PDF header)")
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(f"{source}: the PDF is encrypted")
        if len(reader.pages) > limits.max_pdf_pages:
            raise DocumentTooComplex(f"{source}: the PDF has {len(reader.pages):,} pages; at most "
                                     f"{limits.max_pdf_pages:,} are indexed per document (split it)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except RecursionError:
        raise DocumentTooComplex(f"{source}: the PDF's objects are nested too deeply to read") from None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError,
            AssertionError, ZeroDivisionError) as exc:
        raise DocumentError(f"{source}: corrupt or unreadable PDF ({exc})") from None
    sections = [Section(f"page {i + 1}", text, page=i + 1) for i, text in enumerate(pages) if text.strip()]
    if not sections:
        raise DocumentError(f"{source}: the PDF has no extractable text (scanned images are not supported)")
    return sections


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n\s*")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _BLANKS.sub("\n\n", text)
    return text.strip()
