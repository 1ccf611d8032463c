"""Fuzzed collection loaders: ``read_manifest`` (with the ``CollectionConfig`` it holds), ``read_search_defaults``,
``VectorFile.open``/``open_checked`` and the catalogue (``open_existing`` + ``read_snapshot``).

Random bytes, every truncation, flipped bits, every field renamed, mistyped or removed, and SQLite files
that are valid databases but wrong catalogues: each load either succeeds or raises a ``CollectionError``
naming the file, never another exception and never a crash (the loads run in one child process, which
reports one JSON line per case). Then end to end: a collection whose index file is damaged still answers
correctly, from an exact scan of its stored vectors.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonfuzz import edit_json, key_paths

from vidsearch.store.vectors import HEADER

CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np
from vidsearch.config import CollectionConfig
from vidsearch.errors import VidsearchError
from vidsearch.store import catalog
from vidsearch.store.manifest import read_manifest, read_search_defaults
from vidsearch.store.vectors import VectorFile, open_checked

for line in open(sys.argv[1]):
    case = json.loads(line)
    out, path = {"name": case["name"]}, Path(case["path"])
    try:
        if case["loader"] == "manifest":
            data = read_manifest(path)
            config = CollectionConfig.from_dict(data["config"])  # what every opener does next
            out["loaded"] = {"dims": data["dims"], "encoder": config.encode.encoder}
        elif case["loader"] == "defaults":
            out["loaded"] = read_search_defaults(path)
        elif case["loader"] == "vectors":
            vf = VectorFile.open(path)
            rows = vf.rows_on_disk()
            open_checked(path, case["dim"], case["dtype"])
            out["loaded"] = {"dim": vf.dim, "dtype": str(vf.dtype), "rows": rows,
                             "first": np.asarray(vf.view(min(rows, 1)), np.float64).ravel()[:4].tolist()}
        else:
            conn = catalog.open_existing(path)
            try:
                snap = catalog.read_snapshot(conn)
                catalog.meta(conn)
            finally:
                conn.close()
            out["loaded"] = {"segment_rows": snap.segment_rows, "videos": snap.video_ids,
                             "live": int((snap.segment_video >= 0).sum())}
    except Exception as exc:
        out["error"], out["vidsearch"], out["message"] = type(exc).__name__, isinstance(exc, VidsearchError), str(exc)
    print(json.dumps(out), flush=True)
"""

WRONG: dict[str, Any] = {"string": "x", "null": None, "list": ["x", None], "empty-list": [], "negative": -1,
                         "huge": 2**70, "bool": True, "float": 1.5, "object": {"a": 1}, "nan": float("nan"),
                         "int": 5, "zero": 0}





class Cases:
    """Case files under ``root``, and the cases.jsonl the child reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: list[dict[str, Any]] = []
        self.expect: dict[str, str] = {}  # name -> "error", "loads" or "either"

    def add(self, name: str, loader: str, content: bytes | None, filename: str, expect: str = "either",
            **extra: Any) -> Path:
        """A case directory holding ``filename`` with ``content`` (None: leave it absent)."""
        d = self.root / name
        d.mkdir()
        if content is not None:
            (d / filename).write_bytes(content)
        target = d if loader in ("manifest", "defaults") else d / filename
        self.rows.append({"name": name, "loader": loader, "path": str(target), **extra})
        self.expect[name] = expect
        return d

    def bytes_cases(self, stem: str, loader: str, data: bytes, filename: str, flip_upto: int, rng: random.Random,
                    cuts: list[int] | None = None, **extra: Any) -> None:
        """Random bytes, truncations, and a flipped bit in each of the first ``flip_upto`` bytes."""
        for size in (0, 1, 16, 100, 4096):
            self.add(f"{stem}-random-{size}", loader, rng.randbytes(size), filename, "error", **extra)
        for cut in cuts if cuts is not None else range(len(data)):
            self.add(f"{stem}-truncated-{cut}", loader, data[:cut], filename, "either", **extra)
        for i in range(min(flip_upto, len(data))):
            flipped = data[:i] + bytes([data[i] ^ (1 << (i % 8))]) + data[i + 1 :]
            self.add(f"{stem}-flip-{i}", loader, flipped, filename, "either", **extra)
        self.add(f"{stem}-original", loader, data, filename, "loads", **extra)
        self.add(f"{stem}-missing", loader, None, filename, "loads" if loader == "defaults" else "error", **extra)
        d = self.add(f"{stem}-directory", loader, None, filename, "error", **extra)
        (d / filename).mkdir()

    def json_cases(self, stem: str, loader: str, data: dict[str, Any], filename: str, **extra: Any) -> None:
        """Every key path renamed, removed and set to each wrong value; JSON of other shapes."""
        for path in key_paths(data):
            label = ".".join(path)
            self.add(f"{stem}-{label}-removed", loader, json.dumps(edit_json(data, path, "remove")).encode(), filename, **extra)
            self.add(f"{stem}-{label}-renamed", loader, json.dumps(edit_json(data, path, "rename")).encode(), filename, **extra)
            for kind, value in WRONG.items():
                self.add(f"{stem}-{label}-{kind}", loader, json.dumps(edit_json(data, path, "set", value)).encode(),
                         filename, **extra)
        for label, raw in (("array", b"[]"), ("string", b'"x"'), ("null", b"null"), ("nested", b"[" * 100_000),
                           ("not-utf8", b"\xff\xfe{}"), ("empty", b"")):
            self.add(f"{stem}-json-{label}", loader, raw, filename, "error", **extra)

    def run(self) -> list[dict[str, Any]]:
        with open(self.root / "cases.jsonl", "w") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        proc = subprocess.run([sys.executable, "-c", CHILD, str(self.root / "cases.jsonl")],
                              capture_output=True, text=True, timeout=600)
        outcomes = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        names = [r["name"] for r in self.rows]
        assert proc.returncode == 0, (f"a loader crashed (exit {proc.returncode}) on case "
                                      f"{names[len(outcomes)] if len(outcomes) < len(names) else '?'}: {proc.stderr[-2000:]}")
        assert [o["name"] for o in outcomes] == names
        return outcomes

    def problems(self, outcomes: list[dict[str, Any]], culprit: str) -> list[str]:
        """Cases that raised anything but a CollectionError naming ``culprit``, or broke their expectation."""
        out = []
        for o in outcomes:
            name, expect = o["name"], self.expect[o["name"]]
            if "error" not in o:
                if expect == "error":
                    out.append(f"{name}: loaded {str(o['loaded'])[:200]}, expected a CollectionError")
            elif o["error"] != "CollectionError" or not o["vidsearch"]:
                out.append(f"{name}: {o['error']}: {o['message'][:300]}")
            elif culprit not in o["message"]:
                out.append(f"{name}: the message does not name {culprit}: {o['message'][:300]}")
            elif expect == "loads":
                out.append(f"{name}: refused: {o['message'][:300]}")
        return out


def _assert_clean(cases: Cases, outcomes: list[dict[str, Any]], culprit: str) -> None:
    problems = cases.problems(outcomes, culprit)
    assert not problems, f"{len(problems)} of {len(outcomes)} cases:\n" + "\n".join(problems[:60])


# ---------------------------------------------------------------------------------------------- manifest, defaults
def test_manifest_and_search_defaults_loaders(built_collection: Path, tmp_path: Path):
    rng = random.Random(6)
    cases = Cases(tmp_path)
    raw = (built_collection / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    cases.bytes_cases("manifest", "manifest", raw, "manifest.json", flip_upto=len(raw), rng=rng)
    cases.json_cases("manifest", "manifest", manifest, "manifest.json")
    for label, value in (("format_version-2", 2), ("format_version-0", 0), ("format-other", "other")):
        key, _, v = label.rpartition("-")
        cases.add(f"manifest-set-{label}", "manifest", json.dumps({**manifest, key: value}).encode(), "manifest.json",
                  "error")
    # the examples: config sub-fields of the wrong type
    for path, value in ((("config", "decode", "fps"), "x"), (("config", "segment", "window"), None),
                        (("config", "encode", "encoder"), 5), (("config", "index", "kind"), []),
                        (("config", "encode", "encoder"), "no-such-encoder"), (("config", "decode", "fps"), 1e308),
                        (("config", "segment", "stride"), 99.0), (("config", "index", "nlist"), 2**40)):
        cases.add(f"manifest-example-{'.'.join(path)}-{value!r}", "manifest",
                  json.dumps(edit_json(manifest, path, "set", value)).encode(), "manifest.json", "error")
    cases.add("manifest-extra-stage", "manifest",
              json.dumps(edit_json(manifest, ("config", "train"), "set", {"epochs": 1})).encode(), "manifest.json", "error")

    defaults = {"par_threshold": 0.82, "source": "vidsearch calibrate"}
    raw_defaults = json.dumps(defaults).encode()
    cases.bytes_cases("defaults", "defaults", raw_defaults, "search_defaults.json", flip_upto=len(raw_defaults), rng=rng)
    cases.json_cases("defaults", "defaults", defaults, "search_defaults.json")
    for label, value in (("above-1", 1.5), ("below-minus-1", -2), ("infinity", float("inf"))):
        cases.add(f"defaults-par_threshold-{label}", "defaults", json.dumps({"par_threshold": value}).encode(),
                  "search_defaults.json", "error")
    outcomes = cases.run()
    _assert_clean(cases, [o for o in outcomes if o["name"].startswith("manifest")], "manifest.json")
    _assert_clean(cases, [o for o in outcomes if o["name"].startswith("defaults")], "search_defaults.json")
    loaded = {o["name"] for o in outcomes if "error" not in o}
    assert "manifest-original" in loaded and "defaults-original" in loaded


# ---------------------------------------------------------------------------------------------- vector files
def test_vector_file_loader(built_collection: Path, tmp_path: Path):
    rng = random.Random(7)
    cases = Cases(tmp_path)
    manifest = json.loads((built_collection / "manifest.json").read_text())
    for name, dtype, dim in (("segments.f32", "float32", manifest["dims"]["segment"]),
                             ("frames.f16", "float16", manifest["dims"]["frame"])):
        stem = name.split(".")[0]
        data = (built_collection / name).read_bytes()
        cases.bytes_cases(stem, "vectors", data, name, flip_upto=0, rng=rng, cuts=list(range(HEADER.size + 1)),
                          dim=dim, dtype=dtype)
        for i in range(HEADER.size):  # every bit of the header
            for bit in range(8):
                flipped = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
                # magic, version, dtype and dim must be refused; the 16 reserved bytes are ignored
                cases.add(f"{stem}-header-flip-{i}-{bit}", "vectors", flipped, name, "error" if i < 20 else "loads",
                          dim=dim, dtype=dtype)
        for label, offset, fmt, value in (("version-0", 8, "<I", 0), ("version-2", 8, "<I", 2),
                                          ("dtype-2", 12, "<I", 2), ("dtype-huge", 12, "<I", 2**32 - 1),
                                          ("dim-0", 16, "<I", 0), ("dim-huge", 16, "<I", 2**32 - 1),
                                          ("dim-1", 16, "<I", 1)):
            edited = data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]
            cases.add(f"{stem}-set-{label}", "vectors", edited, name, "error", dim=dim, dtype=dtype)
    outcomes = cases.run()
    _assert_clean(cases, [o for o in outcomes if o["name"].startswith("segments")], "segments.f32")
    _assert_clean(cases, [o for o in outcomes if o["name"].startswith("frames")], "frames.f16")


# ---------------------------------------------------------------------------------------------- catalogue
def _catalog_edit(*sql: str, params: tuple[Any, ...] = ()):
    """A mutation of a copy of the catalogue through plain SQLite (foreign keys off, as in any other tool)."""
    def mutate(path: Path) -> None:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            for statement in sql:
                conn.execute(statement, params if "?" in statement else ())
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    return mutate


def _loose_meta(rows: list[tuple[str, Any]]):
    """The meta table re-created without its constraints, holding ``rows`` (any SQLite values)."""
    inserts = [f"INSERT INTO meta VALUES ('{k}', {v})" for k, v in rows]
    return _catalog_edit("DROP TABLE meta", "CREATE TABLE meta (key, value)", *inserts)


def _set_meta(key: str, value: Any):
    return _catalog_edit("UPDATE meta SET value = ? WHERE key = ?", params=(value, key))


# name -> (mutation of catalog.sqlite, expected: "error", "loads" or "either")
CATALOG_EDITS: dict[str, tuple[Any, str]] = {
    "segment_rows-below-highest-id": (_catalog_edit("UPDATE meta SET value = (SELECT MAX(id) FROM segments) "
                                                    "WHERE key = 'segment_rows'"), "error"),
    "segment_rows-0": (_set_meta("segment_rows", 0), "error"),
    "segment_rows-negative": (_set_meta("segment_rows", -1), "error"),
    "segment_rows-text": (_set_meta("segment_rows", "many"), "error"),
    "segment_rows-numeric-text": (_set_meta("segment_rows", "12"), "either"),  # SQLite's INTEGER affinity makes it 12
    "segment_rows-real": (_set_meta("segment_rows", 2.5), "error"),
    "segment_rows-blob": (_set_meta("segment_rows", b"\x00\x01"), "error"),
    "segment_rows-huge": (_set_meta("segment_rows", 2**40), "error"),  # 4 TiB of arrays: refused, not allocated
    "segment_rows-max": (_set_meta("segment_rows", 2**63 - 1), "error"),
    "segment_rows-null": (_loose_meta([("generation", 5), ("segment_rows", "NULL"), ("frame_rows", 10**6)]), "error"),
    "frame_rows-below-frames": (_set_meta("frame_rows", 3), "error"),
    "frame_rows-negative": (_set_meta("frame_rows", -5), "error"),
    "generation-text": (_set_meta("generation", "five"), "error"),
    "generation-missing": (_catalog_edit("DELETE FROM meta WHERE key = 'generation'"), "error"),
    "meta-empty": (_catalog_edit("DELETE FROM meta"), "error"),
    "meta-dropped": (_catalog_edit("DROP TABLE meta"), "error"),
    "meta-extra-text-row": (_catalog_edit("INSERT INTO meta VALUES ('note', 'hello')"), "error"),
    "segment-of-missing-video": (_catalog_edit("DELETE FROM videos WHERE rowid = (SELECT MIN(rowid) FROM videos)"),
                                 "error"),
    "segment-id-negative": (_catalog_edit("UPDATE segments SET id = -7 WHERE id = (SELECT MAX(id) FROM segments)"),
                            "error"),
    "segment-start-text": (_catalog_edit("UPDATE segments SET start = 'soon' WHERE id = 0"), "error"),
    "segment-start-infinite": (_catalog_edit("UPDATE segments SET start = 9e999 WHERE id = 0"), "error"),
    "segment-end-blob": (_catalog_edit("UPDATE segments SET \"end\" = x'00ff' WHERE id = 0"), "error"),
    "segment-video-integer": (_catalog_edit("UPDATE segments SET video_id = 5 WHERE id = 0"), "error"),
    "segments-dropped": (_catalog_edit("DROP TABLE segments"), "error"),
    "videos-dropped": (_catalog_edit("DROP TABLE videos"), "error"),
    "videos-without-frame-times": (_catalog_edit("ALTER TABLE videos DROP COLUMN frame_times"), "error"),
    "video-frame_row-negative": (_catalog_edit("UPDATE videos SET frame_row = -1"), "error"),
    "video-n_frames-huge": (_catalog_edit("UPDATE videos SET n_frames = 1000000000"), "error"),
    "video-n_frames-text": (_catalog_edit("UPDATE videos SET n_frames = 'lots'"), "error"),
    "video-frame_times-short": (_catalog_edit("UPDATE videos SET frame_times = x'0000'"), "error"),
    "video-frame_times-integer": (_catalog_edit("UPDATE videos SET frame_times = 5"), "error"),
    "video-path-integer": (_catalog_edit("UPDATE videos SET path = 5"), "either"),  # TEXT affinity: stored as '5'
    "video-id-integer": (_catalog_edit("UPDATE videos SET id = 5 WHERE rowid = (SELECT MIN(rowid) FROM videos)"),
                         "error"),
    "all-videos-removed": (_catalog_edit("DELETE FROM segments", "DELETE FROM videos"), "loads"),
    "empty-database": (_catalog_edit("DROP TABLE segments", "DROP TABLE videos", "DROP TABLE meta"), "error"),
    "wal-journal-mode": (_catalog_edit("PRAGMA journal_mode=DELETE"), "loads"),
}


def test_catalogue_loader(built_collection: Path, tmp_path: Path):
    rng = random.Random(8)
    cases = Cases(tmp_path)
    data = (built_collection / "catalog.sqlite").read_bytes()
    assert data[:16] == b"SQLite format 3\x00" and not (built_collection / "catalog.sqlite-wal").exists()
    cuts = sorted({*range(0, 120), *range(0, len(data), 512), len(data) - 1})
    cases.bytes_cases("catalog", "catalog", data, "catalog.sqlite", flip_upto=100, rng=rng, cuts=cuts)
    for i in range(100):  # a second bit of each header byte
        flipped = data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1 :]
        cases.add(f"catalog-flip-high-{i}", "catalog", flipped, "catalog.sqlite")
    for i in range(len(data) // 4, len(data), len(data) // 16):  # noise in the pages
        noisy = data[:i] + rng.randbytes(64) + data[i + 64 :]
        cases.add(f"catalog-noise-{i}", "catalog", noisy, "catalog.sqlite")
    for name, (mutate, expect) in CATALOG_EDITS.items():
        d = cases.add(f"catalog-edit-{name}", "catalog", data, "catalog.sqlite", expect)
        mutate(d / "catalog.sqlite")
    # beside its vector files: a counter past their rows is refused before arrays of that size are made
    for name, rows in (("segment_rows", 10**9), ("frame_rows", 10**9), ("segment_rows", 2**62)):
        d = cases.add(f"catalog-beside-files-{name}-{rows}", "catalog", data, "catalog.sqlite", "error")
        for vectors in ("segments.f32", "frames.f16"):
            shutil.copyfile(built_collection / vectors, d / vectors)
        _set_meta(name, rows)(d / "catalog.sqlite")
    d = cases.add("catalog-beside-files-original", "catalog", data, "catalog.sqlite", "loads")
    for vectors in ("segments.f32", "frames.f16"):
        shutil.copyfile(built_collection / vectors, d / vectors)
    outcomes = cases.run()
    _assert_clean(cases, outcomes, "catalog.sqlite")
    original = next(o for o in outcomes if o["name"] == "catalog-original")["loaded"]
    assert original["live"] == original["segment_rows"] > 0 and len(original["videos"]) == 5


# ---------------------------------------------------------------------------------------------- end to end
E2E_CHILD = r"""
import json, sys
from vidsearch.errors import VidsearchError
from vidsearch.search.engine import Engine
from vidsearch.search.results import SearchParams
queries = json.loads(sys.argv[1])
for case in sys.argv[2:]:
    out = {"case": case, "top": []}
    try:
        with Engine(case) as engine:
            for query in queries:
                top = engine.search(query, k=3, params=SearchParams(norm_beta=0.0, insets=False)).results[0]
                out["top"].append([top.path, top.score])
            out["info"] = engine.index_info()
    except Exception as exc:
        out["error"], out["vidsearch"], out["message"] = type(exc).__name__, isinstance(exc, VidsearchError), str(exc)
    print(json.dumps(out, default=str), flush=True)
"""


def _index_file(d: Path) -> Path:
    [path] = d.glob("index-*.faiss")
    return path


def _rewrite_index(change):
    def mutate(d: Path) -> None:
        path = _index_file(d)
        path.write_bytes(change(path.read_bytes()))
    return mutate


def _header_field(key: str, value: Any):
    """The container's JSON header with ``key`` set to ``value`` (the blob and its checksum kept)."""
    def change(data: bytes) -> bytes:
        n = struct.unpack_from("<Q", data, 12)[0]
        meta = json.loads(data[20 : 20 + n])
        meta[key] = value
        raw = json.dumps(meta).encode()
        return data[:12] + struct.pack("<Q", len(raw)) + raw + data[20 + n :]
    return change


INDEX_DAMAGE = {
    "random": _rewrite_index(lambda b: random.Random(1).randbytes(len(b))),
    "truncated": _rewrite_index(lambda b: b[: len(b) // 2]),
    "empty": _rewrite_index(lambda b: b""),
    "blob-byte-flipped": _rewrite_index(lambda b: b[:-100] + bytes([b[-100] ^ 0x01]) + b[-99:]),
    "version-0": _rewrite_index(lambda b: b[:8] + struct.pack("<I", 0) + b[12:]),
    "dim-string": _rewrite_index(_header_field("dim", "512")),
    "kind-list": _rewrite_index(_header_field("kind", [])),
    "bare-faiss-random": _rewrite_index(lambda b: b"IxM2" + random.Random(2).randbytes(200)),
    "bare-faiss-huge-count": _rewrite_index(  # an old bare flat file whose float count claims 2^40
        lambda b: b[20 + struct.unpack_from("<Q", b, 12)[0] :][:74] + struct.pack("<Q", 2**40)
        + b[20 + struct.unpack_from("<Q", b, 12)[0] :][82:]),
    "directory": lambda d: (_index_file(d).unlink(), (d / "index-5.faiss").mkdir()),
}


def test_collection_with_a_damaged_index_still_answers(built_collection: Path, small_refs: list[Path], tmp_path: Path):
    dirs = {}
    for name, mutate in INDEX_DAMAGE.items():
        d = tmp_path / name
        shutil.copytree(built_collection, d)
        assert _index_file(d).name == "index-5.faiss"  # five videos, one generation each
        mutate(d)
        dirs[name] = d
    queries = [str(small_refs[3])]  # v1.m4v: the quickest of them to encode (~1 s a search)
    proc = subprocess.run([sys.executable, "-c", E2E_CHILD, json.dumps(queries), *map(str, dirs.values())],
                          capture_output=True, text=True, timeout=600)
    outcomes = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"crashed after {len(outcomes)} cases: {proc.stderr[-2000:]}"
    assert len(outcomes) == len(dirs)
    for name, out in zip(dirs, outcomes):
        assert "error" not in out, (name, out)
        assert [Path(p).name for p, _ in out["top"]] == [Path(q).name for q in queries], (name, out)
        assert all(score > 0.99 for _, score in out["top"]), (name, out)
        assert out["info"]["state"] == "exact" and out["info"]["kind"] == "exact-scan", (name, out["info"])
        assert "index-5.faiss" in out["info"]["reason"], (name, out["info"])
