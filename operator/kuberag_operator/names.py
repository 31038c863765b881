"""How a RagService's children are named, and why two RagServices' children can never collide.

Every child is named ``NAME`` or ``NAME-<suffix>`` with ``suffix`` from ``CHILD_NAME_SUFFIXES``
(single words, no ``-``). The CRD refuses a RagService name that ends in ``-<suffix>`` or is
longer than ``MAX_NAME_LENGTH`` (so ``NAME-<suffix>`` always fits a 63-character DNS label and is
never truncated). Within one kind, ``A-s1 == B-s2`` then forces ``s1 == s2`` (the last word) and
``A == B``, and ``A == B-s`` would need ``A`` to end in a reserved suffix: names are disjoint.
Objects the operator did not create can still hold a name (a hand-made Service ``docs``): the
reconcile loop checks ownership before applying and reports ``NameConflict`` instead.

A new kind of child takes its suffix from this list (add it here: the CRD rule follows).
``index`` is reserved for the corpus indexing Job.
"""

from __future__ import annotations

CHILD_NAME_SUFFIXES = ("config", "metrics", "index")
DNS_LABEL_MAX = 63
MAX_NAME_LENGTH = DNS_LABEL_MAX - 1 - max(len(s) for s in CHILD_NAME_SUFFIXES)


def child_name(owner: str, suffix: str | None = None) -> str:
    """``owner`` or ``owner-suffix``; ``suffix`` must be one of ``CHILD_NAME_SUFFIXES``."""
    if not suffix:
        return owner
    if suffix not in CHILD_NAME_SUFFIXES:
        raise ValueError(f"child name suffix {suffix!r} is not reserved in CHILD_NAME_SUFFIXES")
    return f"{owner}-{suffix}"


def name_rules() -> list[dict]:
    """The CRD's CEL rules on ``metadata.name`` that make child names collision-free."""
    suffixes = "|".join(CHILD_NAME_SUFFIXES)
    listed = ", ".join(f"-{s}" for s in CHILD_NAME_SUFFIXES)
    return [
        {"rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
         "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
                    f"(its children are named NAME-<suffix> within 63)"},
        {"rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
         "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter)"},
        {"rule": f"!self.metadata.name.matches('-({suffixes})$')",
         "message": f"metadata.name must not end in {listed}: those suffixes name the children of "
                    f"RagService NAME (e.g. Service NAME-metrics), so two RagServices could claim one object"},
    ]
