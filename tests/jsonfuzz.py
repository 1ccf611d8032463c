"""Edits of JSON headers for the loader fuzz tests (index container, manifest): every key path, and a
copy with one key removed, renamed (``dim`` -> ``diM``) or set to another value."""

from __future__ import annotations

import json
from typing import Any


def key_paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a JSON object, nested objects included."""
    out = []
    for key, value in data.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += key_paths(value, (*prefix, key))
    return out


def edit_json(data: dict[str, Any], path: tuple[str, ...], action: str, value: Any = None) -> dict[str, Any]:
    """A deep copy of ``data`` with the key at ``path`` removed, renamed (last letter's case flipped) or set."""
    data = json.loads(json.dumps(data))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if action == "remove":
        del parent[key]
    elif action == "rename":
        parent[key[:-1] + key[-1].swapcase() if key[-1].isalpha() else key + "x"] = parent.pop(key)
    else:
        parent[key] = value
    return data
