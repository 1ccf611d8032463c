"""bench/ann.py's --json contract (outside checks read it): one JSON object with n, dim and per-method
figures, peers at their cheapest setting reaching recall@10 >= 0.98, on a toy synthetic size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ann_bench_json_contract_and_memory_mapped_base(tmp_path: Path) -> None:
    env = {**os.environ, "VIDSEARCH_BENCH_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, str(REPO / "bench" / "ann.py"), "--n", "4000", "--queries", "100", "--single", "30",
           "--methods", "vidsearch,faiss_ivfpq_refine,faiss_hnswflat", "--data-dir", str(tmp_path / "data"),
           "--share-centroids", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout)
    assert (result["n"], result["dim"]) == (4000, 256)
    assert set(result["methods"]) == {"vidsearch", "faiss_ivfpq_refine", "faiss_hnswflat"}
    for name, m in result["methods"].items():
        for key in ("recall10", "p50_ms", "p99_ms", "qps", "ram_bytes_per_vector", "build_s"):
            assert isinstance(m[key], float | int), (name, key)
        assert m["reached_target"] and m["recall10"] >= 0.98, (name, m["sweep"])
        # the chosen setting is the first of the sweep to reach the target: the cheapest one
        assert [e["recall10"] >= 0.98 for e in m["sweep"]].index(True) == len(m["sweep"]) - 1
        assert m["p50_ms"] <= m["p99_ms"]
    assert result["config"]["base_memory_mapped"] is True
    assert (tmp_path / "results" / "ann-synthetic-4000.json").exists()
    # the base vectors were kept on disk and match the in-memory generator exactly
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import ann

        base = np.load(tmp_path / "data" / "synthetic-4000-100-256-0.npy", mmap_mode="r")
        xb, xq = ann.synthetic(4000, 100, 256, 0)
        np.testing.assert_array_equal(base, xb)
        np.testing.assert_array_equal(np.load(tmp_path / "data" / "synthetic-4000-100-256-0-queries.npy"), xq)
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_index_cache_reuses_the_built_index_with_the_same_results(tmp_path: Path) -> None:
    env = {**os.environ, "VIDSEARCH_BENCH_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, str(REPO / "bench" / "ann.py"), "--n", "3000", "--queries", "50", "--single", "10",
           "--methods", "vidsearch", "--data-dir", str(tmp_path / "data"), "--index-cache", "--json"]
    first, second = (json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                                               check=True).stdout)["methods"]["vidsearch"] for _ in range(2))
    assert first["index_reused_from_cache"] is False and second["index_reused_from_cache"] is True
    assert second["build_s"] == first["build_s"]  # the recorded build time, not the load time
    assert (second["recall10"], second["sweep"]) == (first["recall10"], first["sweep"])
    assert len(list((tmp_path / "data" / "cache").glob("*-vidsearch-*.vsi"))) == 1


def test_an_interrupted_cached_build_resumes_to_the_same_index(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import ann

        xb, xq = ann.synthetic(6000, 20, 64, 0)
        monkeypatch.setattr(ann, "CHECKPOINT", 2000)
        real_add, calls = ann._add, []

        def dying_add(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 2:  # the second checkpointed chunk never finishes
                raise KeyboardInterrupt
            return real_add(*args, **kwargs)

        cache = (tmp_path / "a", "toy")
        monkeypatch.setattr(ann, "_add", dying_add)
        try:
            list(ann.build_methods(["vidsearch"], xb, 0, tmp_path, cache=cache))
        except KeyboardInterrupt:
            pass
        partial = list(cache[0].glob("*-partial.vsi"))
        assert len(partial) == 1
        monkeypatch.setattr(ann, "_add", real_add)
        resumed = next(ann.build_methods(["vidsearch"], xb, 0, tmp_path, cache=cache))
        assert not list(cache[0].glob("*-partial.vsi")) and len(resumed.index) == 6000
        fresh = next(ann.build_methods(["vidsearch"], xb, 0, tmp_path, cache=(tmp_path / "b", "toy")))
        setting = resumed.settings[-1]
        np.testing.assert_array_equal(resumed.search(xq, 10, setting), fresh.search(xq, 10, setting))
    finally:
        sys.path.remove(str(REPO / "bench"))


@pytest.mark.slow  # times every setting of a frontier: ~15-20 s
def test_pick_fastest_measures_the_quickest_setting_of_the_frontier(tmp_path: Path) -> None:
    """--pick fastest: each probe count's shallowest re-rank reaching 0.98 is timed and the quickest kept;
    methods with one knob (HNSW) keep the first setting reaching it."""
    env = {**os.environ, "VIDSEARCH_BENCH_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, str(REPO / "bench" / "ann.py"), "--n", "4000", "--queries", "100", "--single", "30",
           "--methods", "vidsearch,faiss_ivfpq_refine,faiss_hnswflat", "--pick", "fastest", "--json"]
    result = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True).stdout)
    assert result["config"]["pick"] == "fastest"
    for name in ("vidsearch", "faiss_ivfpq_refine"):
        m = result["methods"][name]
        assert m["pick"] == "fastest" and m["reached_target"] and m["recall10"] >= 0.98
        timed = m["frontier_p50"]
        assert len(timed) >= 2, timed  # several probe counts reach the target at this size
        assert m["setting"] == min(timed, key=lambda t: t["p50_ms"])["setting"]
        recall = {e["setting"]: e["recall10"] for e in m["sweep"]}
        assert all(recall[t["setting"]] >= 0.98 for t in timed)
    hnsw = result["methods"]["faiss_hnswflat"]
    assert hnsw["pick"] == "first" and hnsw["frontier_p50"] == []
    assert [e["recall10"] >= 0.98 for e in hnsw["sweep"]].index(True) == len(hnsw["sweep"]) - 1
