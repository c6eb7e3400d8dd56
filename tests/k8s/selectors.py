"""Label selectors, field selectors and patch flavours, as the real API server applies them.

kmock ignores ``labelSelector``/``fieldSelector`` and merges every patch as a naive dict merge;
KubeSpawner's reflectors, the fake kubelet and the product's drain watcher all depend on the
real behaviour, so the rig implements the parts they use here, in plain functions that the
unit-level rig tests can exercise without a server.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch

__all__ = [
    "SelectorError",
    "parse_label_selector",
    "match_label_selector_object",
    "parse_field_selector",
    "merge_patch",
    "strategic_merge_patch",
    "json_patch",
    "scaled_int_or_percent",
]


class SelectorError(ValueError):
    """A selector the real API server would reject with 400 BadRequest."""


Requirement = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_RE_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_RE_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_RE_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Callable[[Mapping[str, str] | None], bool]:
    """Compile a ``labelSelector`` query string into a predicate over an object's labels.

    Supports the full string grammar: ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``,
    ``k in (a,b)``, ``k notin (a,b)``. An empty selector matches everything (as in a list).
    """
    requirements: list[Requirement] = []
    for part in _split_top_level(text or ""):
        if m := _RE_SET.match(part):
            key, op, raw = m.group(1), m.group(3), m.group(4)
            values = {v.strip() for v in raw.split(",") if v.strip()}
            if op == "in":
                requirements.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                requirements.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif m := _RE_EQ.match(part):
            key, op, value = m.group(1), m.group(3), m.group(4)
            if op == "!=":
                requirements.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                requirements.append(lambda lb, k=key, v=value: k in lb and lb[k] == v)
        elif m := _RE_EXISTS.match(part):
            neg, key = m.group(1), m.group(2)
            if neg:
                requirements.append(lambda lb, k=key: k not in lb)
            else:
                requirements.append(lambda lb, k=key: k in lb)
        else:
            raise SelectorError(f"unable to parse requirement: {part!r}")

    def predicate(labels: Mapping[str, str] | None) -> bool:
        lb = labels or {}
        return all(req(lb) for req in requirements)

    return predicate


def match_label_selector_object(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Match a ``metav1.LabelSelector`` object (matchLabels + matchExpressions).

    A nil or empty selector matches *nothing* here: that is what the eviction subresource does
    for PodDisruptionBudgets ("it should match nothing, not everything").
    """
    if not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions")):
        return False
    lb = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if lb.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        if op == "In" and lb.get(key) not in values:
            return False
        if op == "NotIn" and key in lb and lb[key] in values:
            return False
        if op == "Exists" and key not in lb:
            return False
        if op == "DoesNotExist" and key in lb:
            return False
        if op not in {"In", "NotIn", "Exists", "DoesNotExist"}:
            return False
    return True


# Field labels each resource supports, as in the real API server (others -> 400 BadRequest).
_COMMON_FIELDS = {"metadata.name", "metadata.namespace"}
SUPPORTED_FIELDS: dict[str, set[str]] = {
    "pods": _COMMON_FIELDS
    | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "events": _COMMON_FIELDS
    | {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "nodes": _COMMON_FIELDS | {"spec.unschedulable"},
    "secrets": _COMMON_FIELDS | {"type"},
    "namespaces": _COMMON_FIELDS | {"status.phase"},
}


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if cur is None:
        # unset bools read as "false" (spec.unschedulable, spec.hostNetwork), anything else as ""
        return "false" if path in {"spec.unschedulable", "spec.hostNetwork"} else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, plural: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile a ``fieldSelector`` (``a=b``, ``a==b``, ``a!=b``, comma-joined) for one resource."""
    supported = SUPPORTED_FIELDS.get(plural, _COMMON_FIELDS)
    terms: list[tuple[str, bool, str]] = []
    for part in [p for p in (text or "").split(",") if p.strip()]:
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
        field, op, value = m.group(1), m.group(2), m.group(3)
        if field not in supported:
            raise SelectorError(f'field label not supported: {field}')
        terms.append((field, op != "!=", value))

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, f) == v) == positive for f, positive, v in terms)

    return predicate


# ----------------------------------------------------------------------------------------------
# Patches
# ----------------------------------------------------------------------------------------------

# patchMergeKey of the list fields the rig's users touch (core/v1 and policy/v1 types);
# every other list is replaced wholesale, as strategic merge does for lists without a key
# (e.g. Node spec.taints, Pod spec.tolerations, status.containerStatuses).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resizePolicy": "resourceName",
}
# lists of primitives with patchStrategy "merge" (set union)
MERGE_PRIMITIVE_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``application/merge-patch+json``): lists replace, null deletes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch for the fields in :data:`MERGE_KEYS` (``$patch: delete/replace``,
    ``$deleteFromPrimitiveList/<field>`` supported); other lists replace, null deletes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [x for x in result.get(field) or [] if x not in value]
            continue
        if key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: ordering/pruning hints, not needed here
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(result.get(key), value)
        elif isinstance(value, list) and key in MERGE_KEYS and all(isinstance(x, dict) for x in value):
            result[key] = _merge_keyed_list(result.get(key) or [], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in MERGE_PRIMITIVE_LISTS:
            merged = list(result.get(key) or [])
            merged += [x for x in value if x not in merged]
            result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_keyed_list(old: list[Any], patch: list[dict[str, Any]], merge_key: str) -> list[Any]:
    result = copy.deepcopy(old)
    for item in patch:
        key_value = item.get(merge_key)
        index = next(
            (i for i, x in enumerate(result) if isinstance(x, dict) and x.get(merge_key) == key_value),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (``application/json-patch+json``)."""
    return jsonpatch.apply_patch(copy.deepcopy(target), operations)


def scaled_int_or_percent(value: int | str, total: int, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: ints as is, "N%" of ``total``."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        return int(text)
    raw = int(text[:-1]) * total / 100
    return math.ceil(raw) if round_up else math.floor(raw)
