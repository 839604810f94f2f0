"""Helm chart values as `helm install` takes them: `-f values.yaml` files merged in order, then
`--set` pairs. Pure: the callers read the files; this module parses and merges text and data.

`--set` follows Helm's own syntax (its strvals parser):

    a.b.c=v            nested keys
    a=1,b=2            several pairs in one argument
    a={x,y}            a list
    a[0]=x, a[1].b=y   list items by index
    a\\.b=v             a dot that is part of the key (e.g. an annotation name)
    a=x\\,y             a comma that is part of the value
    a=true / 3 / null  typed as in Helm: bool, integer, null (null removes the key)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

import yaml

PathPart = Union[str, int]
Path = tuple[PathPart, ...]
MAX_LIST_INDEX = 65536  # as Helm: `a[99999999]=x` must not allocate a huge list


class ValuesError(Exception):
    """Values that cannot be read: the message names the argument or the file."""


def parse_values_yaml(text: str, origin: str) -> dict[str, Any]:
    """One values file -> its top-level mapping ({} for an empty file)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ValuesError(f"{origin}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesError(f"{origin}: the top level is a {type(data).__name__}, expected a mapping of keys")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of a later values source onto an earlier one: maps merge key by key, anything
    else is replaced; a null removes the key."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def typed(text: str) -> Any:
    """A --set value's type, as Helm infers it."""
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered == "null":
        return None
    if re.fullmatch(r"0|-?[1-9][0-9]*", text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    return text


def _split_top(text: str, separator: str, argument: str) -> list[str]:
    """Split on `separator` outside {...} and not escaped; escapes are kept for later steps."""
    parts, current, depth, index = [], [], 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValuesError(f"--set {argument!r}: '}}' without '{{'")
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    if depth:
        raise ValuesError(f"--set {argument!r}: '{{' without '}}'")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_key(key: str, argument: str) -> Path:
    """'a.b[0].c\\.d' -> ('a', 'b', 0, 'c.d')."""
    path: list[PathPart] = []
    current: list[str] = []
    index = 0
    pending_name = True  # a name must come next (at the start and after a dot)

    def end_name() -> None:
        name = "".join(current)
        if not name:
            raise ValuesError(f"--set {argument!r}: empty key name in {key!r}")
        path.append(name)
        current.clear()

    while index < len(key):
        char = key[index]
        if char == "\\" and index + 1 < len(key):
            current.append(key[index + 1])
            index += 2
            continue
        if char == ".":
            if pending_name or current:
                end_name()
            pending_name = True
            index += 1
            continue
        if char == "[":
            if current or pending_name:
                end_name()
            close = key.find("]", index)
            number = key[index + 1 : close] if close > 0 else ""
            if not number.isdigit():
                raise ValuesError(f"--set {argument!r}: a list index must be a whole number, e.g. name[0]")
            if int(number) > MAX_LIST_INDEX:
                raise ValuesError(f"--set {argument!r}: list index {number} is too large")
            path.append(int(number))
            pending_name = False
            index = close + 1
            if index < len(key) and key[index] not in ".[":
                raise ValuesError(f"--set {argument!r}: expected '.' or '[' after ']' in {key!r}")
            continue
        current.append(char)
        pending_name = False
        index += 1
    if current or pending_name:
        end_name()
    return tuple(path)


def _value(text: str, argument: str) -> Any:
    if text.startswith("{"):
        if not text.endswith("}"):
            raise ValuesError(f"--set {argument!r}: a list is written {{a,b}}")
        inner = text[1:-1]
        if not inner:
            return []
        return [typed(_unescape(item)) for item in _split_top(inner, ",", argument)]
    return typed(_unescape(text))


def parse_set(argument: str) -> list[tuple[Path, Any]]:
    """One --set argument -> [(path, value)], in order."""
    pairs = []
    for part in _split_top(argument, ",", argument):
        key, separator, value = _partition_unescaped(part, "=")
        if not separator:
            raise ValuesError(f"--set {argument!r}: {key.strip() or part!r} has no value (use key=value)")
        pairs.append((parse_key(key, argument), _value(value, argument)))
    return pairs


def _partition_unescaped(text: str, separator: str) -> tuple[str, str, str]:
    index = 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == separator:
            return text[:index], separator, text[index + 1 :]
        index += 1
    return text, "", ""


def set_path(values: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `values` with `value` at `path` (None removes the key, as Helm does)."""
    if isinstance(path[0], int):
        raise ValuesError(f"a list index cannot start a key ({path[0]})")
    result: dict[str, Any] = _set_in(values, path, value)
    return result


def _set_in(node: Any, path: Path, value: Any) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(node) if isinstance(node, list) else []
        while len(items) <= head:
            items.append(None)
        items[head] = value if not rest else _set_in(items[head], rest, value)
        return items
    mapping = dict(node) if isinstance(node, dict) else {}
    if not rest:
        if value is None:
            mapping.pop(head, None)
        else:
            mapping[head] = value
        return mapping
    mapping[head] = _set_in(mapping.get(head), rest, value)
    return mapping


def effective_values(files: Sequence[Mapping[str, Any]], sets: Sequence[str]) -> dict[str, Any]:
    """The user's values: the files merged in order, then each --set argument in order."""
    values: dict[str, Any] = {}
    for data in files:
        values = merge(values, data)
    for argument in sets:
        for path, value in parse_set(argument):
            values = set_path(values, path, value)
    return values


def flatten(values: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf by its path; an empty map is a leaf of its own ({})."""
    leaves: dict[Path, Any] = {}
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            leaves.update(flatten(value, path))
        else:
            leaves[path] = value
    return leaves


def dotted(path: Path) -> str:
    """('a', 'b.c', 0) -> 'a.b\\.c[0]', the way --set names it."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            escaped = part.replace("\\", "\\\\").replace(".", "\\.")
            text += ("." if text else "") + escaped
    return text
