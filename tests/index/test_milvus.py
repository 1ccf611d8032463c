"""The Milvus vector store (``index/milvus.py``) on Milvus Lite: the VectorIndex protocol, search parameters
that really reach Milvus (recall moves with them), delete by id and by video, save/load by reference, and a
second process opening the same Lite file getting a clear error."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")

from vidsearch.errors import CollectionError, ConfigError  # noqa: E402
from vidsearch.index import IVFSearchParams, exact_knn  # noqa: E402
from vidsearch.index.base import load_index  # noqa: E402
from vidsearch.index.milvus import MilvusIndex, parse_uri  # noqa: E402


def _data(n: int = 4000, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:-200], x[-200:]


def _recall(index: MilvusIndex, xb: np.ndarray, xq: np.ndarray, params: IVFSearchParams) -> float:
    truth = exact_knn(xq, xb, 10).ids
    got = index.search(xq, 10, params).ids
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())]))


def test_uris_and_index_types_are_checked(tmp_path):
    assert parse_uri("milvus:x.db", tmp_path) == (str(tmp_path / "x.db"), True)
    assert parse_uri("milvus://127.0.0.1:19530") == ("http://127.0.0.1:19530", False)
    for bad in ("milvus:x.sqlite", "http://h:1", "milvus://"):
        with pytest.raises(ConfigError):
            parse_uri(bad)
    with pytest.raises(ConfigError, match="no IVF_PQ"):
        MilvusIndex(8, "milvus:a.db", index_type="IVF_PQ", base=tmp_path)


def test_ivf_search_parameters_reach_milvus_and_results_match_exact(tmp_path):
    xb, xq = _data()
    index = MilvusIndex(xb.shape[1], "milvus:v.db", index_type="IVF_FLAT", base=tmp_path, build_params={"nlist": 64})
    index.add(np.arange(len(xb), dtype=np.int64), xb)
    index.save(tmp_path / "index.bin")
    low = _recall(index, xb, xq, IVFSearchParams(nprobe=1))
    high = _recall(index, xb, xq, IVFSearchParams(nprobe=64))  # every list: exact
    assert high >= 0.99 and low < high - 0.1, (low, high)  # an ignored nprobe would give the same recall twice
    hits = index.search(xq[:3], 5, IVFSearchParams(nprobe=64))
    want = exact_knn(xq[:3], xb, 5)
    np.testing.assert_array_equal(hits.ids, want.ids)
    np.testing.assert_allclose(hits.scores, want.scores, atol=1e-5)
    index.close()


def test_delete_by_id_and_by_video_and_reload_by_reference(tmp_path):
    xb, _ = _data(600)
    index = MilvusIndex(xb.shape[1], "milvus:v.db", index_type="HNSW", base=tmp_path)
    ids = np.arange(len(xb), dtype=np.int64)
    index.add(ids, xb, video=ids // 10, start=(ids % 10).astype(np.float64), end=(ids % 10 + 2).astype(np.float64))
    params = IVFSearchParams(ef_search=128)
    assert index.search(xb[:1], 1, params).ids[0, 0] == 0
    assert index.remove(np.array([0])) == 1
    assert index.search(xb[:1], 1, params).ids[0, 0] != 0
    assert index.remove_video(1) == 10  # rows 10-19
    found = set(index.search(xb[10:20], 5, params).ids.ravel().tolist())
    assert not found & set(range(10, 20))
    index.info = {"covered": 589}
    index.save(tmp_path / "index.bin")
    index.close()
    again = load_index(tmp_path / "index.bin")
    assert isinstance(again, MilvusIndex) and len(again) == len(xb) - 11 and again.info == {"covered": 589}
    assert again.search(xb[5:6], 1, params).ids[0, 0] == 5
    again.close()


def test_a_second_process_on_the_same_lite_file_gets_a_clear_error(tmp_path):
    xb, _ = _data(300)
    index = MilvusIndex(xb.shape[1], "milvus:v.db", base=tmp_path)
    index.add(np.arange(len(xb), dtype=np.int64), xb)
    index.save(tmp_path / "index.bin")
    code = textwrap.dedent(f"""
        from pathlib import Path
        from vidsearch.errors import VidsearchError
        from vidsearch.index.base import load_index
        try:
            load_index(Path({str(tmp_path / 'index.bin')!r}))
        except VidsearchError as exc:
            print("ERROR", exc)
        else:
            print("OPENED")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    index.close()
    assert "ERROR" in out.stdout and "another process" in out.stdout, out.stdout + out.stderr[-2000:]


# ------------------------------------------------------------------ a collection on Milvus Lite


def test_a_collection_on_milvus_lite_answers_as_the_faiss_one(tmp_path, small_refs, built_collection):
    from vidsearch import Collection
    from vidsearch.config import CollectionConfig, IndexConfig
    from vidsearch.search.results import SearchParams

    config = CollectionConfig(index=IndexConfig(kind="milvus", milvus_uri="milvus:segments.db", milvus_index="HNSW"))
    params = SearchParams(norm_beta=0.0, insets=False)
    with Collection.create(tmp_path / "m", config) as coll:
        reports = coll.add(small_refs[:3])
        assert [r.status for r in reports] == ["indexed"] * 3
        assert (tmp_path / "m" / "segments.db").exists()
        # the rows carry their video and times (what Milvus can filter and group by)
        index = coll._index
        rows = index._client.query(index.collection, filter="id >= 0", output_fields=["video", "start", "end"])
        snap = coll.engine().snapshot
        assert len(rows) == len(snap.table.video)
        for r in rows:
            assert f"{r['video']:012x}" == snap.table.video_ids[snap.table.video[r["id"]]]
            assert (r["start"], r["end"]) == pytest.approx((snap.table.start[r["id"]], snap.table.end[r["id"]]))
    # a new process: the collection reopens on the same Milvus file and finds each video from its own range
    code = textwrap.dedent(f"""
        import json
        from vidsearch import Collection
        from vidsearch.search.results import SearchParams
        with Collection.open({str(tmp_path / 'm')!r}) as coll:
            info = coll.info()
            out = {{"kind": info["index"]["kind"], "hits": {{}}}}
            for v in coll.videos():
                r = coll.search(v["id"] + "@0-3", k=3, params=SearchParams(norm_beta=0.0, insets=False))
                out["hits"][v["id"]] = [(h.video_id, round(h.score, 4)) for h in r.results]
            print(json.dumps(out))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["kind"] == "milvus", got
    with Collection.open(built_collection) as ref:
        for vid, hits in got["hits"].items():
            want = ref.search(vid + "@0-3", k=3, params=params)
            assert hits[0][0] == vid and hits[0][1] == pytest.approx(want.results[0].score, abs=1e-3)
    # removing a video removes its rows from Milvus too
    with Collection.open(tmp_path / "m") as coll:
        before = coll.info()["index"]["vectors"]
        gone = reports[0].video_id
        coll.remove(gone)
        info = coll.info()["index"]
        assert info["kind"] == "milvus" and info["vectors"] == before - reports[0].segments
        r = coll.search(reports[1].video_id + "@0-3", k=10, params=params)
        assert gone not in [h.video_id for h in r.results] and r.results[0].video_id == reports[1].video_id


def test_the_cli_builds_and_searches_a_milvus_lite_collection(tmp_path, small_refs, capsys):
    import json

    from vidsearch import cli

    coll = tmp_path / "cli"
    args = ["index", "--collection", str(coll), "--store", "milvus:vectors.db", "--milvus-index", "IVF_FLAT", "--json"]
    assert cli.main([*args, *map(str, small_refs[:2])]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert cli.main(["info", "--collection", str(coll), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["index"]["kind"] == "milvus" and (coll / "vectors.db").exists()
    vid = files[1]["video_id"]
    assert cli.main(["search", "--collection", str(coll), f"{vid}@0-3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["video_id"] == vid
    # IVF_PQ does not exist in Milvus Lite: one clear line, no traceback
    assert cli.main(["index", "--collection", str(tmp_path / "pq"), "--store", "milvus:v.db", "--milvus-index", "IVF_PQ",
                     str(small_refs[0])]) != 0
    assert "IVF_PQ" in capsys.readouterr().err
