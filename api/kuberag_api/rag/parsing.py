"""Turns uploaded bytes (txt, md, html, pdf) into text sections with their headings."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from kuberag_api.rag.types import DocumentError, UnsupportedDocument

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


def parse_document(source: str, data: bytes, content_type: str | None = None) -> ParsedDocument:
    ctype = detect_content_type(source, content_type)
    if not data:
        raise DocumentError(f"{source}: the document is empty (0 bytes)")
    if ctype == "application/pdf":
        sections = _parse_pdf(source, data)
    else:
        text = _decode(source, data)
        if ctype == "text/html":
            sections = _parse_html(text)
        elif ctype == "text/markdown":
            sections = _parse_markdown(text)
        else:
            sections = [Section(None, text)]
    sections = [Section(s.heading, _clean(s.text), s.page) for s in sections]
    sections = [s for s in sections if s.text]
    if not sections:
        raise DocumentError(f"{source}: the document has no text to index")
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


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _parse_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    heading: str | None = None
    lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else _MD_HEADING.match(line)
        if match:
            if "".join(lines).strip():
                sections.append(Section(heading, "\n".join(lines)))
            heading, lines = match.group(2).strip(), []
        else:
            lines.append(line)
    if "".join(lines).strip():
        sections.append(Section(heading, "\n".join(lines)))
    return sections


_HTML_BLOCKS = [
    "p", "div", "section", "article", "main", "aside", "header", "li", "ul", "ol", "dl", "dt", "dd",
    "pre", "blockquote", "table", "tr", "td", "th", "figure", "figcaption", "form", "fieldset",
]
_HEADING_MARK = "\u27e6kuberag-heading\u27e7"  # a token no real page contains, kept by str.split()


def _parse_html(text: str) -> list[Section]:
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head", "nav", "footer", "iframe"]):
        tag.decompose()
    body = soup.body or soup
    # Keep every visible text node (also text sitting directly in a div): mark headings and
    # block boundaries, then read the text in document order.
    for heading in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        title = " ".join(heading.get_text(" ", strip=True).split())
        heading.replace_with(NavigableString(f"\n\n{_HEADING_MARK}{title}\n\n"))
    for br in body.find_all("br"):
        br.replace_with(NavigableString("\n"))
    for block in body.find_all(_HTML_BLOCKS):
        block.insert_before(NavigableString("\n\n"))
        block.insert_after(NavigableString("\n\n"))
    sections: list[Section] = []
    heading_text: str | None = None
    paragraphs: list[str] = []
    for paragraph in re.split(r"\n\s*\n", body.get_text()):
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


def _parse_pdf(source: str, data: bytes) -> list[Section]:
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
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError) as exc:
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
