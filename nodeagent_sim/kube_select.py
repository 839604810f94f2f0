"""Label and field selectors, as the API server parses and applies them. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple


class SelectorError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# label selectors (k8s.io/apimachinery/pkg/labels)


@dataclass(frozen=True)
class LabelReq:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: Tuple[str, ...] = ()

    def matches(self, labels: Dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt"):
            if not has:
                return False
            try:
                n = int(value or "")
            except ValueError:
                return False
            return n > int(self.values[0]) if self.op == "gt" else n < int(self.values[0])
        return False


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_RE_SET = re.compile(r"^(%s)\s+(in|notin)\s*\((.*)\)$" % _KEY)
_RE_CMP = re.compile(r"^(%s)\s*(==|=|!=)\s*(%s)$" % (_KEY, _VALUE))
_RE_ORD = re.compile(r"^(%s)\s*(>|<)\s*(-?\d+)$" % _KEY)
_RE_EXISTS = re.compile(r"^(%s)$" % _KEY)
_RE_NOT_EXISTS = re.compile(r"^!\s*(%s)$" % _KEY)


def _split_top_level(text: str) -> List[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_label_selector(text: Optional[str]) -> List[LabelReq]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`. An empty selector matches everything."""
    reqs: List[LabelReq] = []
    if not text or not text.strip():
        return reqs
    for raw in _split_top_level(text):
        term = raw.strip()
        if not term:
            raise SelectorError("unable to parse requirement: found '', expected: identifier")
        m = _RE_SET.match(term)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(LabelReq(m.group(1), m.group(2), values))
            continue
        m = _RE_CMP.match(term)
        if m:
            reqs.append(LabelReq(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
            continue
        m = _RE_ORD.match(term)
        if m:
            reqs.append(LabelReq(m.group(1), "gt" if m.group(2) == ">" else "lt", (m.group(3),)))
            continue
        m = _RE_NOT_EXISTS.match(term)
        if m:
            reqs.append(LabelReq(m.group(1), "!"))
            continue
        m = _RE_EXISTS.match(term)
        if m:
            reqs.append(LabelReq(m.group(1), "exists"))
            continue
        raise SelectorError("unable to parse requirement: %r" % term)
    return reqs


def label_selector_from_object(sel: Optional[dict]) -> Optional[List[LabelReq]]:
    """metav1.LabelSelectorAsSelector. None for a nil selector (matches nothing)."""
    if sel is None:
        return None
    reqs = [LabelReq(k, "=", (str(v),)) for k, v in sorted((sel.get("matchLabels") or {}).items())]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in sel.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError("%r is not a valid label selector operator" % expr.get("operator"))
        reqs.append(LabelReq(expr["key"], op, tuple(expr.get("values") or ())))
    return reqs


def labels_match(reqs: List[LabelReq], labels: Optional[Dict[str, str]]) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


# ---------------------------------------------------------------------------------------------
# field selectors (k8s.io/apimachinery/pkg/fields)


@dataclass(frozen=True)
class FieldReq:
    field: str
    op: str  # "=" or "!="
    value: str


def _split_unescaped(text: str, sep: str) -> List[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _find_op(term: str) -> Tuple[int, str]:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return i, "!="
        if term.startswith("==", i):
            return i, "=="
        if term[i] == "=":
            return i, "="
        i += 1
    return -1, ""


def parse_field_selector(text: Optional[str]) -> List[FieldReq]:
    """Parse `spec.nodeName=n,status.phase!=Failed` (also `==`; `\\,` and `\\=` escapes)."""
    reqs: List[FieldReq] = []
    if not text or not text.strip():
        return reqs
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        pos, op = _find_op(term)
        if pos < 0:
            raise SelectorError("invalid selector: '%s'; can't understand '%s'" % (text, term))
        field = term[:pos].strip()
        value = _unescape(term[pos + len(op):])
        reqs.append(FieldReq(field, "!=" if op == "!=" else "=", value))
    return reqs


def exact_match(reqs: List[FieldReq], field: str) -> Optional[str]:
    """fields.Selector.RequiresExactMatch: the value a `field=value` term pins, if any."""
    for r in reqs:
        if r.field == field and r.op == "=":
            return r.value
    return None


def _get(obj: dict, *path: str) -> object:
    cur: object = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _s(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


FieldGetter = Callable[[dict], str]

_META_FIELDS: Dict[str, FieldGetter] = {
    "metadata.name": lambda o: _s(_get(o, "metadata", "name")),
    "metadata.namespace": lambda o: _s(_get(o, "metadata", "namespace")),
}

FIELDS: Dict[str, Dict[str, FieldGetter]] = {
    "pods": dict(_META_FIELDS, **{
        "spec.nodeName": lambda o: _s(_get(o, "spec", "nodeName")),
        "spec.restartPolicy": lambda o: _s(_get(o, "spec", "restartPolicy")),
        "spec.schedulerName": lambda o: _s(_get(o, "spec", "schedulerName")),
        "spec.serviceAccountName": lambda o: _s(_get(o, "spec", "serviceAccountName")),
        "spec.hostNetwork": lambda o: _s(bool(_get(o, "spec", "hostNetwork"))),
        "status.phase": lambda o: _s(_get(o, "status", "phase")),
        "status.podIP": lambda o: _s(_get(o, "status", "podIP")),
        "status.nominatedNodeName": lambda o: _s(_get(o, "status", "nominatedNodeName")),
    }),
    "nodes": dict(_META_FIELDS, **{
        "spec.unschedulable": lambda o: _s(bool(_get(o, "spec", "unschedulable"))),
    }),
    "events": dict(_META_FIELDS, **{
        "involvedObject.kind": lambda o: _s(_get(o, "involvedObject", "kind")),
        "involvedObject.namespace": lambda o: _s(_get(o, "involvedObject", "namespace")),
        "involvedObject.name": lambda o: _s(_get(o, "involvedObject", "name")),
        "involvedObject.uid": lambda o: _s(_get(o, "involvedObject", "uid")),
        "involvedObject.apiVersion": lambda o: _s(_get(o, "involvedObject", "apiVersion")),
        "involvedObject.resourceVersion": lambda o: _s(_get(o, "involvedObject", "resourceVersion")),
        "involvedObject.fieldPath": lambda o: _s(_get(o, "involvedObject", "fieldPath")),
        "reason": lambda o: _s(o.get("reason")),
        "reportingComponent": lambda o: _s(o.get("reportingComponent")),
        "source": lambda o: _s(_get(o, "source", "component")),
        "type": lambda o: _s(o.get("type")),
    }),
}


def check_fields(resource: str, reqs: List[FieldReq]) -> None:
    """Raise SelectorError for a field the resource does not support (the server answers 400)."""
    known = FIELDS.get(resource, _META_FIELDS)
    for r in reqs:
        if r.field not in known:
            raise SelectorError('field label not supported: %s' % r.field)


def fields_match(resource: str, reqs: List[FieldReq], obj: dict) -> bool:
    known = FIELDS.get(resource, _META_FIELDS)
    for r in reqs:
        value = known[r.field](obj)
        if (value == r.value) != (r.op == "="):
            return False
    return True
