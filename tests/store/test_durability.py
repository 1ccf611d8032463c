"""A writer killed at any moment loses at most the video it was writing; damaged files give clear errors.

The kills are real: ``vidsearch index`` runs in a subprocess and is SIGKILLed, either by itself at
a commit point (``VIDSEARCH_CRASH_AT``) or from outside at seeded moments of a multi-file run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vidsearch import Collection
from vidsearch.errors import CollectionError, NotFoundError
from vidsearch.search.results import SearchParams
from vidsearch.store.vectors import HEADER, VectorFile

RAW = SearchParams(norm_beta=0.0, insets=False)  # raw whole-frame cosines, as at indexing: an exact copy scores ~1
CLI = [sys.executable, "-m", "vidsearch.cli"]
SEED_VIDEO = "v1.m4v"  # indexed before any kill
RUN = ["carphone_pristine.mp4", "v2s.mov", "rgb.m4v", "bikes.mp4", "bigbuckbunny.mp4", "v2.m4v"]
CORE_FILES = {"manifest.json", "catalog.sqlite", "segments.f32", "frames.f16"}
ALLOWED_EXTRA = {".lock", "catalog.sqlite-wal", "catalog.sqlite-shm"}


@pytest.fixture(scope="module", autouse=True)
def encode_each_file_once():
    """In this process each real video is decoded and encoded once for the module (``MediaEncoder.cache``):
    it is the query of most checks here, and what is checked is the collection on disk. The killed
    writers run in their own processes, without the cache."""
    from vidsearch.encode.pipeline import MediaEncoder

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MediaEncoder, "cache", {})
        yield


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, footage: dict[str, Path]) -> Path:
    """A collection holding one video, so that 'committed before the kill' is never empty."""
    path = tmp_path_factory.mktemp("seeded") / "coll"
    with Collection.create(path) as coll:
        [r] = coll.add([footage[SEED_VIDEO]])
    assert r.status == "indexed"
    return path


@pytest.fixture()
def coll_dir(seeded: Path, tmp_path: Path) -> Path:
    target = tmp_path / "coll"
    shutil.copytree(seeded, target)
    return target


def _index_cmd(coll: Path, files: list[Path]) -> list[str]:
    return [*CLI, "index", "--collection", str(coll), "--json", *map(str, files)]


def _committed_ids(coll: Path) -> set[str]:
    """Read the catalogue directly, as any concurrent reader may."""
    conn = sqlite3.connect(str(coll / "catalog.sqlite"), timeout=30)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM videos")}
    finally:
        conn.close()


def _assert_consistent(coll: Collection) -> dict[str, str]:
    """info() agrees with the catalogue and the vector files; returns id -> path."""
    info, videos = coll.info(), coll.videos()
    assert info["videos"] == len(videos)
    assert info["segments"] == sum(v["segments"] for v in videos)
    assert info["frames"] == sum(v["n_frames"] for v in videos)  # nothing was removed in these runs
    assert info["generation"] == len(videos)  # one generation per committed video
    assert info["duration_s"] == pytest.approx(sum(v["duration"] for v in videos), abs=0.01)
    conn = sqlite3.connect(str(coll.path / "catalog.sqlite"))
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM segments ORDER BY id")]
        frame_ranges = conn.execute("SELECT frame_row, n_frames FROM videos ORDER BY frame_row").fetchall()
    finally:
        conn.close()
    assert ids == list(range(info["segments"])), "segment rows are contiguous"
    starts = [0]
    for row, n in frame_ranges:
        assert row == starts[-1], "frame rows are contiguous"
        starts.append(row + n)
    for name, committed in (("segments.f32", info["segments"]), ("frames.f16", info["frames"])):
        assert VectorFile.open(coll.path / name).rows_on_disk() >= committed
    return {v["id"]: v["path"] for v in videos}


def _assert_searchable(coll: Collection, paths: dict[str, str]) -> None:
    """Each video, used as the query, ranks itself first with a near-perfect score."""
    for video_id, path in paths.items():
        top = coll.search(path, k=3, params=RAW).results[0]
        assert top.video_id == video_id and top.score > 0.99, (path, top)


def _assert_clean_directory(coll: Path) -> None:
    names = set(os.listdir(coll))
    index_files = {n for n in names if n.startswith("index-")}
    assert CORE_FILES <= names and names - CORE_FILES - index_files <= ALLOWED_EXTRA, names
    with Collection.open(coll) as c:
        assert index_files == {f"index-{c.info()['generation']}.faiss"}, index_files


# ---------------------------------------------------------------------------------------------- kills
@pytest.mark.parametrize("point", ["after-vectors", "before-commit", "after-commit"])
def test_crash_point_loses_only_the_video_being_written(point: str, coll_dir: Path, footage: dict[str, Path]):
    files = [footage["carphone_pristine.mp4"], footage["v2s.mov"]]
    before = _committed_ids(coll_dir)
    seg_rows_before = VectorFile.open(coll_dir / "segments.f32").rows_on_disk()

    proc = subprocess.run(_index_cmd(coll_dir, files), env={**os.environ, "VIDSEARCH_CRASH_AT": point},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout == ""  # killed before any report was printed

    after = _committed_ids(coll_dir)
    # the kill really happened where it says: vectors written, commit done or not
    assert VectorFile.open(coll_dir / "segments.f32").rows_on_disk() > seg_rows_before
    assert len(after - before) == (1 if point == "after-commit" else 0)
    assert before <= after

    with Collection.open(coll_dir) as coll:
        paths = _assert_consistent(coll)
        assert set(paths) == after
        _assert_searchable(coll, paths)
        if point != "after-commit":  # the uncommitted rows on disk are invisible to search
            hits = coll.search(files[0], k=5).results
            assert all(Path(h.path).name != "carphone_pristine.mp4" for h in hits)

    again = subprocess.run(_index_cmd(coll_dir, files), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    statuses = [f["status"] for f in json.loads(again.stdout)["files"]]
    assert statuses == (["skipped", "indexed"] if point == "after-commit" else ["indexed", "indexed"])
    with Collection.open(coll_dir) as coll:
        paths = _assert_consistent(coll)
        assert len(paths) == len(before) + 2 and before <= set(paths)
        for name in ("segments.f32", "frames.f16"):  # the crashed write's leftovers were cut away
            key = "segments" if name == "segments.f32" else "frames"
            assert VectorFile.open(coll_dir / name).rows_on_disk() == coll.info()[key]
        _assert_searchable(coll, paths)
    _assert_clean_directory(coll_dir)


@pytest.mark.parametrize("seed", [1, 0, 5])  # kill after 1, 2 and 3 new videos (+ a seeded delay)
def test_sigkill_from_outside_during_a_multi_file_run(seed: int, coll_dir: Path, footage: dict[str, Path]):
    rng = random.Random(seed)
    files = [footage[n] for n in RUN]
    before = _committed_ids(coll_dir)
    target = len(before) + rng.randint(1, 3)  # kill once this many videos are committed...
    delay = rng.uniform(0.0, 0.25)  # ...plus a little, so the kill lands anywhere in the next video

    proc = subprocess.Popen(_index_cmd(coll_dir, files), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_committed_ids(coll_dir)) < target:
            assert proc.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)
        time.sleep(delay)
        seen = _committed_ids(coll_dir)  # committed before the kill: all of it must survive
        assert proc.poll() is None, "the run ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    with Collection.open(coll_dir) as coll:
        paths = _assert_consistent(coll)
        assert before <= seen <= set(paths)
        assert len(paths) < len(files) + len(before)  # the kill cut the run short
        _assert_searchable(coll, paths)

    again = subprocess.run(_index_cmd(coll_dir, files), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    reports = json.loads(again.stdout)["files"]
    assert {r["video_id"] for r in reports if r["status"] == "skipped"} == set(paths) - before
    assert all(r["status"] in ("indexed", "skipped") for r in reports)
    with Collection.open(coll_dir) as coll:
        final = _assert_consistent(coll)
        assert set(final) == before | {r["video_id"] for r in reports}
        assert len(final) == len(before) + len(files)
        _assert_searchable(coll, {k: v for k, v in final.items() if k not in paths})  # the rest was checked above
    _assert_clean_directory(coll_dir)


# ---------------------------------------------------------------------------------------------- reopen
def test_reopen_after_remove(coll_dir: Path, footage: dict[str, Path]):
    with Collection.open(coll_dir) as coll:
        a, b = coll.add([footage["carphone_pristine.mp4"], footage["v2s.mov"]])
        [seed_id] = _committed_ids(coll_dir) - {a.video_id, b.video_id}
        out = coll.remove(seed_id[:6])  # by unique id prefix
        assert out["video_id"] == seed_id and out["segments_removed"] > 0
        removed_by_path = coll.remove(str(footage["v2s.mov"]))
        assert removed_by_path["video_id"] == b.video_id
        with pytest.raises(NotFoundError, match="no video"):
            coll.remove(seed_id)
        generation = coll.info()["generation"]
    assert {n for n in os.listdir(coll_dir) if n.startswith("index-")} == {f"index-{generation}.faiss"}

    with Collection.open(coll_dir) as coll:
        info = coll.info()
        assert (info["videos"], info["generation"]) == (1, generation)
        assert [v["id"] for v in coll.videos()] == [a.video_id]
        assert info["segments"] == a.segments
        hits = coll.search(footage[SEED_VIDEO], k=5).results
        assert seed_id not in {h.video_id for h in hits}
        assert _top_id(coll, footage["carphone_pristine.mp4"]) == a.video_id
        [r] = coll.add([footage[SEED_VIDEO]])  # a removed video can come back
        assert (r.status, r.video_id) == ("indexed", seed_id)
    with Collection.open(coll_dir) as coll:
        assert _top_id(coll, footage[SEED_VIDEO]) == seed_id
        assert {v["id"] for v in coll.videos()} == {a.video_id, seed_id}


def _top_id(coll: Collection, query: Path) -> str:
    return coll.search(query, k=3).results[0].video_id


def test_incremental_add_then_reopen(coll_dir: Path, footage: dict[str, Path]):
    ids = set(_committed_ids(coll_dir))
    for n, name in enumerate(["carphone_pristine.mp4", "v2s.mov"], start=2):
        with Collection.open(coll_dir) as coll:
            [r] = coll.add([footage[name]])
            assert r.status == "indexed"
            ids.add(r.video_id)
        with Collection.open(coll_dir) as coll:
            paths = _assert_consistent(coll)
            assert set(paths) == ids and coll.info()["generation"] == n
            assert _top_id(coll, footage[name]) == r.video_id
        _assert_clean_directory(coll_dir)
    with Collection.open(coll_dir) as coll:
        _assert_searchable(coll, _assert_consistent(coll))


def test_index_file_is_rebuilt_when_deleted_or_stale(coll_dir: Path, footage: dict[str, Path]):
    with Collection.open(coll_dir) as coll:
        [r] = coll.add([footage["carphone_pristine.mp4"]])
    [index_file] = coll_dir.glob("index-*.faiss")
    index_file.unlink()
    with Collection.open(coll_dir) as coll:  # a reader rebuilds it in memory
        paths = _assert_consistent(coll)
        _assert_searchable(coll, paths)
    assert not list(coll_dir.glob("index-*.faiss")), "readers never write"
    with Collection.open(coll_dir) as coll:  # the next writer saves it again
        [r2] = coll.add([footage["v2s.mov"]])
        generation = coll.info()["generation"]
    assert [p.name for p in coll_dir.glob("index-*.faiss")] == [f"index-{generation}.faiss"]

    # an index file of the right generation and size but the wrong width is stale, not fatal
    from vidsearch.index.flat import FlatIndex

    with Collection.open(coll_dir) as coll:
        n = coll.info()["segments"]
    wrong = FlatIndex(256)
    wrong.add(np.arange(n, dtype=np.int64), np.random.default_rng(0).standard_normal((n, 256)).astype(np.float32))
    wrong.save(coll_dir / f"index-{generation}.faiss")
    with Collection.open(coll_dir) as coll:
        _assert_searchable(coll, _assert_consistent(coll))


def test_half_written_index_file_is_removed_by_the_next_writer(coll_dir: Path, footage: dict[str, Path]):
    # what a writer killed inside FlatIndex.save leaves behind (mkstemp beside the target)
    leftover = coll_dir / "index-2.faiss.k3j_9x2a.tmp"
    leftover.write_bytes(os.urandom(1000))
    with Collection.open(coll_dir) as coll:
        assert _top_id(coll, footage[SEED_VIDEO]) in _committed_ids(coll_dir)
        assert leftover.exists(), "readers leave the writer's files alone"
        [r] = coll.add([footage["carphone_pristine.mp4"]])
        assert r.status == "indexed"
    assert not leftover.exists()
    _assert_clean_directory(coll_dir)


# ---------------------------------------------------------------------------------------------- damaged files
FUZZ_CHILD = r"""
import json, sys
from vidsearch import Collection
from vidsearch.encode.pipeline import MediaEncoder
from vidsearch.errors import VidsearchError
from vidsearch.search.results import SearchParams
MediaEncoder.cache = {}  # the query and the extra video are encoded once; the loaders are under test
query, extra = sys.argv[1], sys.argv[2]
for case in sys.argv[3:]:
    out = {"case": case}
    try:
        with Collection.open(case) as coll:
            coll.info()
            top = coll.search(query, k=3, params=SearchParams(norm_beta=0.0, insets=False)).results
            out["top"] = top[0].video_id if top else None
            out["score"] = top[0].score if top else None
            [r] = coll.add([extra])
            out["added"] = r.status
            out["videos"] = coll.info()["videos"]
    except Exception as exc:
        out["error"] = type(exc).__name__
        out["vidsearch"] = isinstance(exc, VidsearchError)
        out["message"] = str(exc)
    print(json.dumps(out), flush=True)
"""


def _randomise(path: Path, start: int, end: int | None, seed: int) -> None:
    data = bytearray(path.read_bytes())
    end = len(data) if end is None else min(end, len(data))
    data[start:end] = random.Random(seed).randbytes(end - start)
    path.write_bytes(bytes(data))


def _set_dim(name: str, dim: int):
    def mutate(d: Path) -> None:
        data = bytearray((d / name).read_bytes())
        data[16:20] = struct.pack("<I", dim)  # magic (8), version (4), dtype (4), dim (4)
        (d / name).write_bytes(bytes(data))
    return mutate


def _manifest_edit(**changes):
    def mutate(d: Path) -> None:
        data = json.loads((d / "manifest.json").read_text())
        for k, v in changes.items():
            if v is ...:
                del data[k]
            else:
                data[k] = v
        (d / "manifest.json").write_text(json.dumps(data))
    return mutate


def _index_path(d: Path) -> Path:
    [p] = d.glob("index-*.faiss")
    return p


def _index_header_edit(version: int | None = None, **changes):
    """Rewrite the index container's header (index/persist.py: magic, version, JSON length, JSON), keeping
    its FAISS blob and the blob's checksum: only the header's own checks can refuse the file."""
    from vidsearch.index.persist import HEADER

    def mutate(d: Path) -> None:
        data = _index_path(d).read_bytes()
        magic, old_version, n = HEADER.unpack_from(data)
        meta = json.loads(data[HEADER.size : HEADER.size + n])
        assert all(meta[k] != v for k, v in changes.items()), "the edit must change the header"
        meta.update(changes)
        text = json.dumps(meta).encode()
        _index_path(d).write_bytes(HEADER.pack(magic, old_version if version is None else version, len(text))
                                   + text + data[HEADER.size + n :])
    return mutate


# case -> (mutation, expected): "error:<file>" a VidsearchError naming that file; "recovers": works as before
DAMAGE = {
    "manifest-random-0": (lambda d: _randomise(d / "manifest.json", 0, None, 0), "error:manifest.json"),
    "manifest-random-1": (lambda d: _randomise(d / "manifest.json", 0, None, 1), "error:manifest.json"),
    "manifest-middle-random": (lambda d: _randomise(d / "manifest.json", 100, 140, 2), "error:manifest.json"),
    "manifest-no-config": (_manifest_edit(config=...), "error:manifest.json"),
    "manifest-config-null": (_manifest_edit(config=None), "error:manifest.json"),
    "manifest-dims-wrong": (_manifest_edit(dims={"frame": 512, "segment": 7}), "error:segments.f32"),
    "catalog-random": (lambda d: _randomise(d / "catalog.sqlite", 0, None, 3), "error:catalog.sqlite"),
    "catalog-header-random": (lambda d: _randomise(d / "catalog.sqlite", 0, 100, 4), "error:catalog.sqlite"),
    "catalog-empty": (lambda d: (d / "catalog.sqlite").write_bytes(b""), "error:catalog.sqlite"),
    "catalog-missing": (lambda d: (d / "catalog.sqlite").unlink(), "error:catalog.sqlite"),
    "segments-header-random": (lambda d: _randomise(d / "segments.f32", 0, HEADER.size, 5), "error:segments.f32"),
    "frames-header-random": (lambda d: _randomise(d / "frames.f16", 0, HEADER.size, 6), "error:frames.f16"),
    "segments-dim-0": (_set_dim("segments.f32", 0), "error:segments.f32"),
    "segments-dim-huge": (_set_dim("segments.f32", 2**31), "error:segments.f32"),
    "frames-dim-wrong": (_set_dim("frames.f16", 9999), "error:frames.f16"),
    "segments-truncated": (lambda d: os.truncate(d / "segments.f32", HEADER.size + VectorFile.open(d / "segments.f32").row_bytes),
                           "error:segments.f32"),
    "index-random": (lambda d: _randomise(_index_path(d), 0, None, 7), "recovers"),
    "index-header-random": (lambda d: _randomise(_index_path(d), 4, 90, 8), "recovers"),
    "index-dim-field": (_index_header_edit(dim=256), "recovers"),  # checksum intact, header and blob disagree
    "index-newer-format": (_index_header_edit(version=99), "recovers"),
    "index-truncated": (lambda d: os.truncate(_index_path(d), _index_path(d).stat().st_size // 2), "recovers"),
    "index-empty": (lambda d: _index_path(d).write_bytes(b""), "recovers"),
}


def test_damaged_files_give_clear_errors_never_a_crash(seeded: Path, tmp_path: Path, footage: dict[str, Path]):
    with Collection.open(seeded) as coll:
        [seed_id] = [v["id"] for v in coll.videos()]
    cases = {}
    for name, (mutate, expected) in DAMAGE.items():
        d = tmp_path / name
        shutil.copytree(seeded, d)
        mutate(d)
        cases[name] = (d, expected, {p.name: p.stat().st_size for p in d.iterdir()})
    proc = subprocess.run([sys.executable, "-c", FUZZ_CHILD, str(footage[SEED_VIDEO]), str(footage["v2s.mov"]),
                           *(str(d) for d, _, _ in cases.values())], capture_output=True, text=True, timeout=600)
    outcomes = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"the loader crashed (exit {proc.returncode}) after {len(outcomes)} cases: {proc.stderr[-2000:]}"
    assert len(outcomes) == len(cases)

    for (name, (d, expected, sizes)), out in zip(cases.items(), outcomes):
        assert out["case"] == str(d)
        if expected == "recovers":
            assert "error" not in out, (name, out)
            assert out["top"] == seed_id and out["score"] > 0.99, (name, out)
            assert out["added"] == "indexed" and out["videos"] == 2, (name, out)
        else:
            culprit = expected.split(":", 1)[1]
            assert out.get("error") == "CollectionError" and out["vidsearch"], (name, out)
            assert culprit in out["message"] and ("damaged" in out["message"] or "expected" in out["message"]), (name, out)
            # a refused collection is left exactly as found (nothing created, extended or truncated)
            assert {p.name: p.stat().st_size for p in d.iterdir()} == sizes, name


def test_damaged_catalogue_pages_fail_cleanly(seeded: Path, tmp_path: Path, footage: dict[str, Path]):
    """Noise in the middle of the SQLite file: an error SQLite detects, reported without a crash."""
    d = tmp_path / "coll"
    shutil.copytree(seeded, d)
    size = (d / "catalog.sqlite").stat().st_size
    _randomise(d / "catalog.sqlite", size // 3, size // 3 + 400, 9)
    proc = subprocess.run([sys.executable, "-c", FUZZ_CHILD, str(footage[SEED_VIDEO]), str(footage["v2s.mov"]), str(d)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out.get("error") in ("CollectionError", "DatabaseError"), out
    assert "malformed" in out["message"] or "damaged" in out["message"], out


def test_writer_never_pads_a_vector_file_truncated_under_it(coll_dir: Path, footage: dict[str, Path]):
    """Committed rows lost after open must stop the writer, not come back as zeros."""
    segments = coll_dir / "segments.f32"
    one_row = HEADER.size + VectorFile.open(segments).row_bytes
    with Collection.open(coll_dir) as coll:
        committed = coll.info()["segments"]
        assert committed > 1
        os.truncate(segments, one_row)  # one row left of those committed
        with pytest.raises(CollectionError, match=rf"segments.f32: expected at least {committed} committed rows .*truncated"):
            coll.add([footage["carphone_pristine.mp4"]])
        assert segments.stat().st_size == one_row
        assert coll.info()["videos"] == 1


def test_open_never_creates_a_missing_catalogue(coll_dir: Path):
    (coll_dir / "catalog.sqlite").unlink()
    with pytest.raises(CollectionError, match=r"catalog.sqlite is missing; the collection is damaged"):
        Collection.open(coll_dir)
    assert not (coll_dir / "catalog.sqlite").exists()
