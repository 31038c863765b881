"""What the operator corrects in a child, and how it knows a child drifted (pure, no I/O).

Server-side apply with force takes back every field the operator declares, but it never removes a
field another field manager added (``kubectl set env``, ``kubectl edit``, another tool's apply).
The policy (the README states it):

- what runs is exactly what the RagService declares: anything another manager adds to a
  Deployment's pod template, a ConfigMap's data, or the ``spec`` of a Service, HPA, PDB,
  NetworkPolicy or ServiceMonitor is removed (``kubectl rollout restart``'s ``restartedAt``
  annotation excepted: it is how a user restarts pods);
- other metadata stays: labels and annotations that tools add to a child's own metadata, and
  fields of a Deployment outside its pod template that the operator does not set (``paused``,
  ``progressDeadlineSeconds``...).

Removal uses server-side apply itself: the foreign fields are moved into the operator's own
``managedFields`` entry, and the next apply (which does not declare them) deletes them, as it
deletes any field its manager stops declaring.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.utils import parse_quantity

# Value paths whose content is the operator's alone, by kind (default: the whole spec).
PROTECTED_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "template"),),
    "ConfigMap": (("data",), ("binaryData",)),
}
DEFAULT_PROTECTED = (("spec",),)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
EXEMPT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "template", "metadata", "annotations", RESTARTED_AT),),
}


def protected_paths(kind: str) -> tuple[tuple[str, ...], ...]:
    return PROTECTED_PATHS.get(kind, DEFAULT_PROTECTED)


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # The API server stores quantities canonically ("0.5" comes back as "500m", 1 as "1").
    if isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        try:
            return parse_quantity(want) == parse_quantity(have)
        except ValueError:
            return False
    return False


def matches(desired: Any, live: Any) -> bool:
    """Whether ``live`` holds every value ``desired`` sets (fields it does not set are ignored)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(matches(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            matches(d, lv) for d, lv in zip(desired, live, strict=True))
    return _same_scalar(desired, live)


def project(desired: Any, live: Any) -> Any:
    """``live`` restricted to the fields ``desired`` sets: two projections differ iff one of them changed."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return {k: project(v, live.get(k)) for k, v in desired.items()}
    if isinstance(desired, list) and isinstance(live, list):
        return [project(desired[i] if i < len(desired) else None, v) for i, v in enumerate(live)]
    return live


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def protected_view(obj: dict | None) -> list:
    """The protected content of a child (exemptions left out), to compare before and after."""
    if obj is None:
        return []
    view = copy.deepcopy([_get(obj, p) for p in protected_paths(obj.get("kind", ""))])
    for path in EXEMPT_PATHS.get(obj.get("kind", ""), ()):
        for i, base in enumerate(protected_paths(obj.get("kind", ""))):
            if path[:len(base)] == base:
                parent = _get(view[i], path[len(base):-1])
                if isinstance(parent, dict):
                    parent.pop(path[-1], None)
    return view


# --- managedFields (fieldsV1 trees: {"f:spec": {"f:template": {...}}}, {} marks an owned leaf) ----------------

def _fields_path(path: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"f:{p}" for p in path)


def _restrict(tree: dict, path: tuple[str, ...]) -> dict:
    """The part of ``tree`` under ``path`` (with the path's own keys), or {}."""
    if not path:
        return copy.deepcopy(tree)
    sub = tree.get(path[0])
    if not isinstance(sub, dict):
        return {}
    inner = _restrict(sub, path[1:])
    return {path[0]: inner} if inner else {}


def _union(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if k not in out or not out[k]:
            out[k] = copy.deepcopy(v)
        elif v:
            out[k] = _union(out[k], v)
    return out


def _minus(a: dict, b: dict) -> dict:
    """``a`` without the fields of ``b`` (a subtree of ``a``)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if k not in out:
            continue
        if not v or out[k] == v:
            del out[k]
        else:
            out[k] = _minus(out[k], v)
            if not out[k]:
                del out[k]
    return out


def _drop(tree: dict, path: tuple[str, ...]) -> dict:
    if not path or path[0] not in tree:
        return tree
    out = dict(tree)
    if len(path) == 1:
        del out[path[0]]
    else:
        out[path[0]] = _drop(out[path[0]], path[1:])
        if not out[path[0]]:
            del out[path[0]]
    return out


def foreign_fields(obj: dict, manager: str) -> dict[str, dict]:
    """Protected fields other managers own in ``obj``: ``{manager: fieldsV1 tree}`` (empty: none)."""
    kind = obj.get("kind", "")
    found = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource") or (entry.get("manager") == manager and entry.get("operation") == "Apply"):
            continue  # status/scale writers, and the operator's own apply
        tree: dict = {}
        for path in protected_paths(kind):
            tree = _union(tree, _restrict(entry.get("fieldsV1") or {}, _fields_path(path)))
        for path in EXEMPT_PATHS.get(kind, ()):
            tree = _drop(tree, _fields_path(path))
        tree = _drop_markers_only(tree)
        if tree:
            found[f"{entry.get('manager')}/{entry.get('operation')}"] = tree
    return found


def _drop_markers_only(tree: dict) -> dict:
    """Drop branches that own nothing but "." (a map's existence, which the operator also sets)."""
    out = {}
    for k, v in tree.items():
        if k == ".":
            continue
        if v:
            inner = _drop_markers_only(v)
            if inner:
                out[k] = {**inner, **({".": {}} if "." in v else {})}
        else:
            out[k] = v
    return out


def take_foreign_fields(obj: dict, manager: str) -> list[dict] | None:
    """``obj``'s managedFields with every foreign protected field moved into ``manager``'s Apply
    entry, or None when there is nothing to take (or no such entry to take it into)."""
    entries = copy.deepcopy((obj.get("metadata") or {}).get("managedFields") or [])
    ours = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"
                 and not e.get("subresource")), None)
    foreign = foreign_fields(obj, manager)
    if ours is None or not foreign:
        return None
    kept = []
    for entry in entries:
        key = f"{entry.get('manager')}/{entry.get('operation')}"
        if entry is not ours and key in foreign and not entry.get("subresource") \
                and entry.get("apiVersion") == ours.get("apiVersion"):
            ours["fieldsV1"] = _union(ours.get("fieldsV1") or {}, foreign[key])
            entry["fieldsV1"] = _minus(entry.get("fieldsV1") or {}, foreign[key])
            if not entry["fieldsV1"]:
                continue  # an entry that owns nothing is dropped
        kept.append(entry)
    return kept
