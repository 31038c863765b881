"""Cache keys: everything that changes an answer is inside the key."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.¿¡:;,]+$")
_LEADING = re.compile(r"^[\s¿¡]+")


def normalise_question(question: str) -> str:
    """Case, Unicode form, runs of whitespace and trailing punctuation do not change a question."""
    q = unicodedata.normalize("NFKC", question).casefold()
    q = _SPACE.sub(" ", q)
    q = _LEADING.sub("", q)
    return _TRAILING.sub("", q)


@dataclass(frozen=True)
class CacheScope:
    """What, besides the question, an answer depends on. Entries of another scope never match."""

    corpus_version: str
    model: str
    embedder: str
    retrieval_fingerprint: str
    epoch: int

    def token(self) -> str:
        raw = "\x1f".join(
            (self.corpus_version, self.model, self.embedder, self.retrieval_fingerprint, str(self.epoch))
        )
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def answer_key(normalised_question: str, scope_token: str) -> str:
    return hashlib.blake2b(
        f"{scope_token}\x1f{normalised_question}".encode(), digest_size=16
    ).hexdigest()
