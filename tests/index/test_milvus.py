"""The Milvus vector store (``index/milvus.py``) on Milvus Lite: the VectorIndex protocol, search parameters
that really reach Milvus (recall moves with them), delete by id and by video, save/load by reference, and a
second process opening the same Lite file getting a clear error."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("backend", ["lite", "server"])
def test_ivf_search_parameters_reach_milvus_and_results_match_exact(tmp_path, backend, request):
    xb, xq = _data()
    uri = "milvus:v.db" if backend == "lite" else request.getfixturevalue("milvus_server")
    index = MilvusIndex(xb.shape[1], uri, collection=f"t_ivf_{backend}", index_type="IVF_FLAT", base=tmp_path,
                        build_params={"nlist": 64})
    # no keepalive pings without a call, at most one in 5.5 min (milvus.GRPC_OPTIONS): Lite is a gRPC server too
    from vidsearch.index.milvus import GRPC_OPTIONS

    assert index._client._get_connection()._grpc_options == GRPC_OPTIONS
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


def test_a_load_that_fails_while_milvus_writes_its_index_is_retried_then_reported(tmp_path, monkeypatch):
    """milvus-lite's server once reported an index built while its file was still being written (a short read on
    load, in CI): the load is retried until a deadline, then fails as a CollectionError saying what happened."""
    import time

    xb, _ = _data(300)
    index = MilvusIndex(xb.shape[1], "milvus:r.db", index_type="HNSW", base=tmp_path)
    ids = np.arange(len(xb), dtype=np.int64)
    index.add(ids, xb, video=ids // 10, start=ids.astype(np.float64), end=ids + 1.0)
    real = index._client.load_collection
    calls = []

    def flaky(name, *a, **kw):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("read error in data.vector.hnsw.idx: 164014 != 167936 (Resource temporarily unavailable)")
        return real(name, *a, **kw)

    monkeypatch.setattr(index._client, "load_collection", flaky)
    index.save(tmp_path / "index.bin")  # waits for the index, reloads: the first load fails, the retry succeeds
    assert len(calls) == 2
    assert index.search(xb[:1], 1, IVFSearchParams(ef_search=64)).ids[0, 0] == 0

    def broken(name, *a, **kw):
        raise RuntimeError("read error (Resource temporarily unavailable)")

    monkeypatch.setattr(index._client, "load_collection", broken)
    with pytest.raises(CollectionError, match="could not load .*Resource temporarily unavailable"):
        index._load(time.monotonic() + 0.6)
    monkeypatch.setattr(index._client, "load_collection", real)
    index.close()


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


# ------------------------------------------------------------------ moving a collection; sharing a server


def test_two_collections_moved_onto_one_milvus_server_keep_their_own_rows(tmp_path, built_collection, milvus_server):
    """Each collection names its own Milvus collection: the second move must not replace the first one's rows."""
    import shutil

    from vidsearch import Collection
    from vidsearch.config import IndexConfig
    from vidsearch.search.results import SearchParams

    params = SearchParams(norm_beta=0.0, insets=False)
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        shutil.copytree(built_collection, path)
    with Collection.open(paths[1]) as b:  # b keeps only two videos, so the two stores differ
        for v in b.videos()[2:]:
            b.remove(v["id"])
    names = []
    for path in paths:
        with Collection.open(path) as coll:
            coll.rebuild_index(IndexConfig(kind="milvus", milvus_uri=milvus_server, milvus_index="HNSW"))
            names.append(coll.config.index.milvus_collection)
    assert names[0] != names[1] and all(n.startswith("vidsearch_") for n in names)
    with Collection.open(paths[0]) as a, Collection.open(built_collection) as ref:
        assert a.info()["index"]["vectors"] == ref.info()["index"]["vectors"]
        for v in ref.videos():  # every video of a is still found in its own store
            top = a.search(v["id"] + "@0-3", k=1, params=params).results[0]
            assert top.video_id == v["id"] and top.score > 0.99
    with Collection.open(paths[1]) as b:
        assert len(b.videos()) == 2 and b.info()["index"]["vectors"] == sum(v["segments"] for v in b.videos())


def test_the_cli_moves_a_collection_into_milvus_lite_and_back(collection_copy, small_refs, capsys):
    import json

    from vidsearch import cli

    base = ["index", "--collection", str(collection_copy), "--rebuild-index", "--json"]
    assert cli.main(["info", "--collection", str(collection_copy), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert cli.main([*base, "--store", "milvus:moved.db", "--milvus-index", "IVF_FLAT"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["kind"] == "milvus" and moved["vectors"] == before["segments"], moved
    assert (collection_copy / "moved.db").exists()
    assert cli.main(["info", "--collection", str(collection_copy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["index"]["kind"] == "milvus" and info["config"]["index"]["milvus_index"] == "IVF_FLAT"
    assert info["config"]["index"]["milvus_collection"].startswith("vidsearch_")
    from vidsearch import Collection

    with Collection.open(collection_copy) as coll:
        vid = coll.videos()[1]["id"]
    assert cli.main(["search", "--collection", str(collection_copy), f"{vid}@0-3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["video_id"] == vid
    # indexing into it with the same --store is not a change of configuration (the name it chose is kept)
    assert cli.main(["index", "--collection", str(collection_copy), "--store", "milvus:moved.db", "--milvus-index",
                     "IVF_FLAT", "--json", str(small_refs[0])]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["skipped"] == 1
    # and back to FAISS
    assert cli.main([*base, "--index", "auto"]) == 0
    back = json.loads(capsys.readouterr().out)
    assert back["kind"] == "auto" and back["changed_from"]["kind"] == "milvus" and back["index"] == "FlatIndex"
    assert cli.main(["search", "--collection", str(collection_copy), f"{vid}@0-3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["video_id"] == vid
    # an option that is not the index's cannot change with --rebuild-index: one line, no traceback
    assert cli.main([*base, "--fps", "2"]) != 0
    err = json.loads(capsys.readouterr().out)  # --json: the error as JSON on stdout
    assert err["error"] == "CollectionError" and "cannot change" in err["message"]


def test_a_crash_between_the_manifest_and_the_new_index_rebuilds_on_the_next_write(collection_copy):
    """The manifest names Milvus but the saved index is still FAISS's (the writer died in between): readers keep
    answering from the FAISS file, and the next write rebuilds the index in Milvus."""
    from vidsearch import Collection
    from vidsearch.config import IndexConfig
    from vidsearch.store.manifest import read_manifest, write_manifest

    import dataclasses

    with Collection.open(collection_copy) as coll:
        config = dataclasses.replace(coll.config, index=IndexConfig(kind="milvus", milvus_uri="milvus:late.db",
                                                                   milvus_collection="vidsearch_late"))
        write_manifest(collection_copy, config, read_manifest(collection_copy)["dims"])
    with Collection.open(collection_copy) as coll:
        videos = coll.videos()
        assert coll.search(videos[0]["id"] + "@0-3", k=1).results[0].video_id == videos[0]["id"]
        assert coll.info()["index"]["kind"] != "milvus"  # the reader took the FAISS file it found
        coll.remove(videos[-1]["id"])  # a write: the writer's index must be the manifest's backend
        info = coll.info()["index"]
        assert info["kind"] == "milvus" and info["vectors"] == sum(v["segments"] for v in videos[:-1]), info


def test_subprocesses_started_beside_a_busy_grpc_channel_all_start() -> None:
    """gRPC 1.80+ with fork support on kills ~3 % of children forked (Popen with preexec_fn, as PySpark starts
    Java) while a channel is busy (grpc/grpc#43055; a Spark test after the Milvus ones failed so). Importing
    vidsearch turns fork support off: 200 children must all start and exit 0 (with it on, P(no failure) ~0.2 %)."""
    script = textwrap.dedent("""
        import subprocess, threading
        import vidsearch  # noqa: F401  (sets GRPC_ENABLE_FORK_SUPPORT before gRPC loads)
        import grpc
        from concurrent import futures

        server = grpc.server(futures.ThreadPoolExecutor(2))
        echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t", {"echo": echo}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        call = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/t/echo")
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                call(b"x")

        worker = threading.Thread(target=busy)
        worker.start()
        call(b"warm")
        failed = sum(subprocess.Popen(["true"], preexec_fn=lambda: None).wait() != 0 for _ in range(200))
        stop.set()
        worker.join()
        server.stop(None)
        print("failed", failed)
    """)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["failed", "0"], out.stdout + out.stderr[-2000:]
