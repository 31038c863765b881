"""Splits document sections into overlapping chunks on paragraph and sentence boundaries."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kuberag_api.rag.parsing import Section

# A sentence ends at . ! ? (optionally followed by a quote or bracket) and whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?。])[\"')\]]*\s+(?=[\"'(\[¿¡]?[A-Z0-9ÁÉÍÓÚÑ#*`-])")


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    heading: str | None
    position: int  # index of the chunk in its document
    page: int | None = None


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _units(text: str, chunk_size: int) -> list[tuple[str, bool]]:
    """(piece, starts_paragraph) pairs, each piece at most chunk_size characters."""
    units: list[tuple[str, bool]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        first = True
        for sentence in split_sentences(paragraph):
            while len(sentence) > chunk_size:
                # A sentence longer than a chunk: cut at the last space before the limit.
                cut = sentence.rfind(" ", chunk_size // 2, chunk_size)
                cut = cut if cut > 0 else chunk_size
                units.append((sentence[:cut].strip(), first))
                sentence, first = sentence[cut:].strip(), False
            if sentence:
                units.append((sentence, first))
                first = False
    return units


def _join(units: list[tuple[str, bool]]) -> str:
    out = ""
    for i, (piece, starts_paragraph) in enumerate(units):
        if i:
            out += "\n\n" if starts_paragraph else " "
        out += piece
    return out


def chunk_sections(sections: list[Section], chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """Chunks of at most ``chunk_size`` characters; consecutive chunks of a section share up to
    ``chunk_overlap`` characters of whole sentences. Chunks never span two sections, so each
    keeps its heading."""
    if chunk_overlap >= chunk_size:
        raise ValueError("chunk_overlap must be smaller than chunk_size")
    chunks: list[Chunk] = []
    for section in sections:
        units = _units(section.text, chunk_size)
        current: list[tuple[str, bool]] = []
        length = 0
        fresh = 0  # units in `current` not already emitted in the previous chunk
        for unit in units:
            added = len(unit[0]) + (1 if current else 0)
            if current and length + added > chunk_size:
                chunks.append(Chunk(_join(current), section.heading, len(chunks), section.page))
                # Carry whole trailing sentences, up to chunk_overlap characters, into the next chunk.
                tail: list[tuple[str, bool]] = []
                tail_len = 0
                for piece in reversed(current):
                    if tail_len + len(piece[0]) + 1 > chunk_overlap or len(tail) >= len(current) - 1:
                        break
                    tail.insert(0, piece)
                    tail_len += len(piece[0]) + 1
                # The overlap must leave room for the new unit.
                while tail and tail_len + len(unit[0]) + 1 > chunk_size:
                    tail_len -= len(tail.pop(0)[0]) + 1
                current, length, fresh = tail, max(tail_len - 1, 0), 0
                added = len(unit[0]) + (1 if current else 0)
            current.append(unit)
            length += added
            fresh += 1
        if current and fresh:
            chunks.append(Chunk(_join(current), section.heading, len(chunks), section.page))
    return chunks
