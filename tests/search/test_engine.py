"""The Engine: the one query path (real footage where it matters, synthetic vectors for scale and staleness)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from vidsearch import CollectionConfig, EncodeConfig, IndexConfig
from vidsearch.collection import Collection, VectorVideo
from vidsearch.errors import CollectionError, NotFoundError, QueryError, ShapeError
from vidsearch.index import exact_knn
from vidsearch.search.engine import Engine, parse_ref
from vidsearch.search.results import SearchParams
from vidsearch.store.manifest import index_files

DIM = 512


def _videos(n: int, frames: int = 40, seed: int = 0) -> list[VectorVideo]:
    """Smooth random videos: a cluster point plus a slow walk, L2-normalised, 1 fps."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n):
        x = rng.standard_normal(DIM).astype(np.float32) + np.cumsum(
            rng.standard_normal((frames, DIM)).astype(np.float32) * 0.1, axis=0)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out.append(VectorVideo(f"synthetic-{seed}-{v}", np.arange(frames, dtype=np.float64), x))
    return out


@pytest.fixture(scope="module")
def ivf_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~3,900 segments of synthetic vectors; the compressed index trained (train_min 256)."""
    path = tmp_path_factory.mktemp("engine") / "coll"
    with Collection.create(path, CollectionConfig(index=IndexConfig(train_min=256))) as coll:
        coll.add_vectors(_videos(100))
        assert coll.info()["index"]["kind"] == "ivfpq"
    return path


def test_engine_answers_like_the_collection_on_real_footage(built_collection: Path, small_refs: list[Path]):
    with Engine.open(built_collection) as engine, Collection.open(built_collection) as coll:
        for path in small_refs[:3]:
            a, b = engine.search(path, k=3), coll.search(path, k=3)
            assert a.to_dict()["results"] == b.to_dict()["results"]
            # the default score is normalised (1 minus half the background similarity for an exact copy)
            assert Path(a.results[0].path) == path.resolve() and a.results[0].score > 0.9
            assert engine.search(path, k=1, params=SearchParams(norm_beta=0.0)).results[0].score > 0.99
        # a stored range of a video finds that video at that time
        video = coll.videos()[0]
        result = engine.search(f"{video['id']}@2-6", k=3)
        top = result.results[0]
        assert top.video_id == video["id"] and abs(top.matches[0].ref_start - 2.0) <= 1.0
        assert engine.index_info()["state"] == "current"


def test_search_batch_equals_single_searches(built_collection: Path, small_refs: list[Path]):
    with Engine.open(built_collection) as engine:
        queries = [small_refs[0], small_refs[2]]
        batch = engine.search_batch(queries, k=3)
        single = [engine.search(q, k=3) for q in queries]
        assert [r.to_dict()["results"] for r in batch] == [r.to_dict()["results"] for r in single]


def test_encode_ref_cuts_the_stored_frames_like_encode_query(built_collection: Path):
    with Engine.open(built_collection) as engine:
        video = engine.snapshot.catalog.video_ids[0]
        ref, query = engine.encode_ref(f"{video}@1-4"), engine.encode_query(f"{video}@1-4")
        assert len(ref.segment_vectors) >= 2
        np.testing.assert_array_equal(ref.segment_vectors, query.segment_vectors)
        assert [(s.start, s.end) for s in ref.segments] == [(s.start, s.end) for s in query.segments]
        with pytest.raises(QueryError, match="not VIDEO_ID@START-END"):
            engine.encode_ref("clip.mp4")
        with pytest.raises(NotFoundError, match="no video"):
            engine.encode_ref("abcdef@1-2")


def test_a_compatible_light_encoder_queries_the_collection_and_the_answer_says_so(
        built_collection: Path, small_refs: list[Path], tmp_path: Path):
    """sscd-distilled queries an sscd collection (its vectors live in sscd's space: registry ``queries_for``)."""
    light = SearchParams(query_encoder="sscd-distilled")
    with Engine.open(built_collection) as engine:
        for path in small_refs[:3]:
            result = engine.search(path, k=3, params=light)
            assert Path(result.results[0].path) == path.resolve(), result.to_dict()
            assert result.to_dict()["query_encoder"] == "sscd-distilled"
        assert "query_encoder" not in engine.search(small_refs[0], k=1).to_dict()
        video = engine.snapshot.catalog.video_ids[0]  # a stored range is not encoded: nothing to say
        assert "query_encoder" not in engine.search(f"{video}@1-4", k=1, params=light).to_dict()
    with pytest.raises(QueryError, match="query_encoder must be one of"):
        SearchParams(query_encoder="clip")
    other = tmp_path / "distilled"
    with Collection.create(other, CollectionConfig(encode=EncodeConfig(encoder="sscd-distilled"))) as coll:
        coll.add_vectors(_videos(3))
    with Engine.open(other) as engine:  # sscd's vectors are not in sscd-distilled's space
        with pytest.raises(QueryError, match="cannot query a collection built with 'sscd-distilled'"):
            engine.search(small_refs[0], k=1, params=SearchParams(query_encoder="sscd"))


def test_bad_queries_are_errors_of_the_project(built_collection: Path, tmp_path: Path):
    with Engine.open(built_collection) as engine:
        with pytest.raises(QueryError, match="neither an existing file"):
            engine.search(str(tmp_path / "nope.mp4"))
        with pytest.raises(QueryError, match="END must be after START"):
            engine.search("abcdef@5-2")
        with pytest.raises(NotFoundError, match="no video"):
            engine.search("abcdef@1-2")
        with pytest.raises(QueryError, match="k must be"):
            engine.search("abcdef@1-2", k=0)
        with pytest.raises(QueryError, match="folder"):
            engine.search(tmp_path)
    assert parse_ref("not a ref") is None and parse_ref("abcd@1-2.5").end == 2.5


def test_stale_index_is_searched_with_an_exact_scan_of_new_rows(ivf_collection: Path, tmp_path: Path):
    """A writer stopped before publishing: the reader uses the old index and scans the rest exactly."""
    path = tmp_path / "coll"
    shutil.copytree(ivf_collection, path)
    [(_, old)] = index_files(path)
    saved = old.read_bytes()
    with Collection.open(path) as coll:
        new_ids = coll.add_vectors(_videos(5, seed=1))
    for _, p in index_files(path):
        p.unlink()
    old.write_bytes(saved)
    with Engine.open(path) as engine:
        info = engine.index_info()
        snap = engine.snapshot
        assert info["state"] == "stale" and info["exact_rows"] == 5 * 39 and info["covered_rows"] == snap.catalog.segment_rows - 195
        # every new video is found from its own stored range, at the right time
        for vid in new_ids:
            top = engine.search(f"{vid}@3-7", k=2).results[0]
            assert top.video_id == vid and abs(top.matches[0].ref_start - 3.0) <= 1.0
        # the hits from rows the index does not cover are exactly the exact scan's over those rows
        xq = np.asarray(snap.segments[-195:][::20], np.float32)
        hits = engine.search_segments(xq, 10, SearchParams(segment_k=10), snap)
        tail = snap.covered
        exact_tail = exact_knn(xq, snap.segments[tail:], 10).ids + tail
        for got, want in zip(hits.ids.tolist(), exact_tail.tolist()):
            from_tail = [i for i in got if i >= tail]
            assert from_tail and from_tail == want[: len(from_tail)]  # the exact order, a prefix of it
            assert got[0] == want[0]  # the query's own row, found by the scan


READER_CHILD = r"""
import json, sys
import faiss
import vidsearch.index.ivf as ivf

def refuse(*a, **k):
    raise SystemExit("a reader trained an index")

ivf.IVFPQIndex.train = refuse
faiss.Clustering.train = refuse
faiss.Kmeans.train = refuse
from vidsearch.search.engine import Engine
e = Engine.open(sys.argv[1])
r = e.search(sys.argv[2], k=3)
print(json.dumps({"state": e.index_info()["state"], "top": r.results[0].video_id}))
"""


@pytest.mark.parametrize("damage", ["missing", "stale", "damaged"])
def test_a_reading_process_never_trains(ivf_collection: Path, tmp_path: Path, damage: str):
    path = tmp_path / "coll"
    shutil.copytree(ivf_collection, path)
    [(_, index_file)] = index_files(path)
    with Engine.open(path) as engine:
        vid = engine.snapshot.catalog.video_ids[7]
    if damage == "missing":
        index_file.unlink()
    elif damage == "damaged":
        data = bytearray(index_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index_file.write_bytes(bytes(data))
    else:  # a newer catalogue than the index: as if the writer died before publishing
        saved = index_file.read_bytes()
        with Collection.open(path) as coll:
            coll.add_vectors(_videos(2, seed=3))
        for _, p in index_files(path):
            p.unlink()
        index_file.write_bytes(saved)
    out = subprocess.run([sys.executable, "-c", READER_CHILD, str(path), f"{vid}@2-5"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["top"] == vid
    assert res["state"] == {"missing": "exact", "damaged": "exact", "stale": "stale"}[damage]


def test_refresh_adopts_new_commits_while_threads_search(ivf_collection: Path, tmp_path: Path):
    path = tmp_path / "coll"
    shutil.copytree(ivf_collection, path)
    engine = Engine.open(path, refresh_seconds=0.0)
    first = engine.generation
    vid = engine.snapshot.catalog.video_ids[3]
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            try:
                assert engine.search(f"{vid}@1-4", k=1).results[0].video_id == vid
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    with Collection.open(path) as coll:
        added = coll.add_vectors(_videos(3, seed=5), batch_segments=40)  # three commits
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    engine.refresh()
    assert engine.generation > first and engine.index_info()["state"] == "current"
    assert engine.search(f"{added[-1]}@2-5", k=1).results[0].video_id == added[-1]
    engine.close()


def test_removed_video_is_never_returned_by_a_reader_of_an_older_index(ivf_collection: Path, tmp_path: Path):
    path = tmp_path / "coll"
    shutil.copytree(ivf_collection, path)
    [(_, index_file)] = index_files(path)
    saved = index_file.read_bytes()
    with Engine.open(path) as engine:
        vid = engine.snapshot.catalog.video_ids[11]
    with Collection.open(path) as coll:
        coll.remove(vid)
    for _, p in index_files(path):
        p.unlink()
    index_file.write_bytes(saved)  # an index that still holds the removed video's segments
    with Engine.open(path) as engine:
        assert engine.index_info()["state"] == "stale"
        with pytest.raises(NotFoundError):
            engine.search(f"{vid}@1-4")
        other = engine.snapshot.catalog.video_ids[0]
        hits = engine.search(f"{other}@1-4", k=50).results
        assert vid not in {h.video_id for h in hits}


def test_add_vectors_checks_its_input(tmp_path: Path):
    with Collection.create(tmp_path / "coll") as coll:
        [video] = _videos(1)
        with pytest.raises(ShapeError, match=r"\(F, 512\)"):
            coll.add_vectors([VectorVideo("bad", video.frame_times, video.frame_vectors[:, :100])])
        with pytest.raises(ShapeError, match="segment vectors"):
            coll.add_vectors([VectorVideo("bad", video.frame_times, video.frame_vectors,
                                          segment_vectors=np.zeros((3, DIM), np.float32))])
        [vid] = coll.add_vectors([video])
        with pytest.raises(CollectionError, match="already indexed"):
            coll.add_vectors([video])
        # given segment vectors and times are stored as they are
        seg = video.frame_vectors[:3]
        [vid2] = coll.add_vectors([VectorVideo("given", video.frame_times, video.frame_vectors, seg,
                                               np.array([[0.0, 2.0], [1.0, 3.0], [2.0, 4.0]]))])
        assert coll.info()["segments"] == 39 + 3
    with Engine.open(tmp_path / "coll") as engine:
        assert engine.search(f"{vid}@5-9", k=1).results[0].video_id == vid
        assert [v for v in engine.snapshot.catalog.video_ids] == [vid, vid2]
