"""The three patch formats the API server accepts for JSON: pure functions on JSON values.

- JSON merge patch (RFC 7386), `application/merge-patch+json`
- JSON patch (RFC 6902), `application/json-patch+json`
- strategic merge patch, `application/strategic-merge-patch+json`: like a merge patch, except
  that lists whose Go field carries `patchStrategy:"merge"` are merged by their `patchMergeKey`,
  and the directives `$patch`, `$retainKeys`, `$setElementOrder/<f>`,
  `$deleteFromPrimitiveList/<f>` are honoured. Every other list is replaced whole. Note that
  `NodeSpec.Taints` has no patch strategy in k8s.io/api, so a strategic patch of `spec.taints`
  replaces the whole list, as on a real server.

Inputs are never modified; results may share unchanged sub-trees with the input, so callers
clone the result before storing it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple, Union


class PatchError(ValueError):
    """The patch is malformed or cannot be applied."""


# ---------------------------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------
# RFC 6902


def _pointer(path: str) -> List[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("JSON pointer must start with '/': %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, tokens: List[str], path: str) -> Any:
    cur = doc
    for tok in tokens:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchError("doc is missing path: %s" % path)
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_index(tok, len(cur), path)]
        else:
            raise PatchError("doc is missing path: %s" % path)
    return cur


def _index(tok: str, length: int, path: str, allow_end: bool = False) -> int:
    if tok == "-" and allow_end:
        return length
    if not tok.isdigit() or (len(tok) > 1 and tok[0] == "0"):
        raise PatchError("invalid array index %r in path %s" % (tok, path))
    i = int(tok)
    if i > length or (i == length and not allow_end):
        raise PatchError("array index out of bounds in path %s" % path)
    return i


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    doc = _copy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError("invalid json patch operation: %r" % (op,))
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError("missing value for %s operation" % kind)
        if kind == "add":
            doc = _add(doc, path, _copy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path)
            doc = _add(doc, path, _copy(op["value"]))
        elif kind == "move":
            doc, value = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, value)
        elif kind == "copy":
            value = _copy(_container(doc, _pointer(op.get("from", "")), op.get("from", "")))
            doc = _add(doc, path, value)
        elif kind == "test":
            actual = _container(doc, _pointer(path), path)
            if actual != op["value"]:
                raise PatchError("testing value %s failed" % path)
        else:
            raise PatchError("unexpected operation %r" % kind)
    return doc


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _container(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), path, allow_end=True), value)
    else:
        raise PatchError("doc is missing path: %s" % path)
    return doc


def _remove(doc: Any, path: str) -> Tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        return None, doc
    parent = _container(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("unable to remove nonexistent key: %s: missing value" % last)
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), path))
    raise PatchError("doc is missing path: %s" % path)


# ---------------------------------------------------------------------------------------------
# strategic merge patch

# A schema maps a field to either a nested schema (dict), or a list strategy:
# ("merge", "<mergeKey>", <item schema>) for lists of maps, ("merge", None, None) for sets of primitives.
ListStrategy = Tuple[str, Optional[str], Optional[dict]]
Schema = Dict[str, Union[dict, ListStrategy]]

_OBJECT_META: Schema = {
    "ownerReferences": ("merge", "uid", None),
    "finalizers": ("merge", None, None),
}

NODE_SCHEMA: Schema = {
    "metadata": _OBJECT_META,
    "spec": {"podCIDRs": ("merge", None, None)},  # spec.taints: no patch strategy -> replaced whole
    "status": {"conditions": ("merge", "type", None), "addresses": ("merge", "type", None)},
}

_CONTAINER: Schema = {"ports": ("merge", "containerPort", None), "env": ("merge", "name", None),
                      "volumeMounts": ("merge", "mountPath", None)}

POD_SCHEMA: Schema = {
    "metadata": _OBJECT_META,
    "spec": {"containers": ("merge", "name", _CONTAINER), "initContainers": ("merge", "name", _CONTAINER),
             "volumes": ("merge", "name", None), "imagePullSecrets": ("merge", "name", None)},
    "status": {"conditions": ("merge", "type", None)},
}

GENERIC_SCHEMA: Schema = {"metadata": _OBJECT_META}

_DIRECTIVE_PREFIXES = ("$setElementOrder/", "$deleteFromPrimitiveList/")


def strategic_merge_patch(original: Any, patch: Any, schema: Optional[Schema] = None) -> Any:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    result = _smp_map(original if isinstance(original, dict) else {}, patch, schema or {})
    return {} if result is None else result


def _strip(value: Any) -> Any:
    """A value taken over whole: drop directive keys inside it."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()
                if k not in ("$patch", "$retainKeys") and not k.startswith(_DIRECTIVE_PREFIXES)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _smp_map(original: dict, patch: dict, schema: Schema) -> Optional[dict]:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(patch)
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError("unknown patch type: %s in map" % directive)
    result = dict(original)
    orders: Dict[str, list] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in drop]
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = schema.get(key)
        current = result.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = _smp_map(current, value, sub if isinstance(sub, dict) else {})
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = _strip(value)
        elif isinstance(value, list) and isinstance(sub, tuple) and sub[0] == "merge":
            result[key] = _smp_list(current if isinstance(current, list) else [], value, sub[1], sub[2] or {})
        else:
            result[key] = _strip(value)
    for field, order in orders.items():
        sub = schema.get(field)
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, sub[1] if isinstance(sub, tuple) else None)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(original: list, patch: list, merge_key: Optional[str], item_schema: Schema) -> list:
    if merge_key is None:  # a set of primitives: union, in order
        for item in patch:
            if isinstance(item, dict) and item.get("$patch") == "replace":
                return [v for v in patch if not (isinstance(v, dict) and "$patch" in v)]
        out = list(original)
        for item in patch:
            if item not in out:
                out.append(item)
        return out
    for item in patch:
        if isinstance(item, dict) and item.get("$patch") == "replace":
            return [_strip(v) for v in patch if not (isinstance(v, dict) and v.get("$patch") == "replace")]
    out = list(original)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError("list items with merge key %r must be maps" % merge_key)
        if merge_key not in item:
            raise PatchError("map: %r does not contain declared merge key: %s" % (item, merge_key))
        key_value = item[merge_key]
        pos = next((i for i, cur in enumerate(out)
                    if isinstance(cur, dict) and cur.get(merge_key) == key_value), None)
        if item.get("$patch") == "delete":
            out = [cur for cur in out if not (isinstance(cur, dict) and cur.get(merge_key) == key_value)]
            continue
        if pos is None:
            out.append(_strip(item))
        else:
            merged = _smp_map(out[pos], item, item_schema)
            if merged is None:
                out.pop(pos)
            else:
                out[pos] = merged
    return out


def _reorder(items: list, order: list, merge_key: Optional[str]) -> list:
    def key_of(v: Any) -> Any:
        if merge_key is not None and isinstance(v, dict):
            return json.dumps(v.get(merge_key))
        return json.dumps(v, sort_keys=True)

    rank = {key_of(v): i for i, v in enumerate(order)}
    listed = [v for v in items if key_of(v) in rank]
    unlisted = [v for v in items if key_of(v) not in rank]
    listed.sort(key=lambda v: rank[key_of(v)])
    return listed + unlisted


PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply",
}


def apply_patch(kind: str, original: dict, patch: Any, schema: Optional[Schema] = None) -> dict:
    """Apply a decoded patch of the given kind ("json", "merge", "strategic")."""
    if kind == "json":
        result = json_patch(original, patch)
    elif kind == "merge":
        if not isinstance(patch, dict):
            raise PatchError("merge patch must be a JSON object")
        result = merge_patch(original, patch)
    elif kind == "strategic":
        result = strategic_merge_patch(original, patch, schema)
    else:
        raise PatchError("unsupported patch type %r" % kind)
    if not isinstance(result, dict):
        raise PatchError("patch did not produce an object")
    return _copy(result)
