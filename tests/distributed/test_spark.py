"""Spark ingest (``vidsearch.distributed.spark``) on a real local[2] session: the same collection as a
single-process ``add``, the encoder built once per worker process, a failed task retried without duplicates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")

from vidsearch import Collection  # noqa: E402
from vidsearch.distributed.spark import spark_index  # noqa: E402
from vidsearch.search.results import SearchParams  # noqa: E402

# two cores, and a task may fail once (local[N, maxFailures]): the retry test needs a second attempt
MASTER = "local[2,2]"


@pytest.fixture(scope="module")
def spark():
    from vidsearch.distributed.spark import _session

    session = _session(MASTER, "vidsearch-tests")
    yield session
    session.stop()


def _same_collection(a: Path, b: Path) -> None:
    with Collection.open(a) as ca, Collection.open(b) as cb:
        va = {v["id"]: v for v in ca.videos()}
        vb = {v["id"]: v for v in cb.videos()}
        assert sorted(va) == sorted(vb)
        for vid in va:
            assert {k: va[vid][k] for k in ("path", "duration", "segments", "n_frames")} == \
                   {k: vb[vid][k] for k in ("path", "duration", "segments", "n_frames")}
            ta, fa = ca.frame_vectors(vid)
            tb, fb = cb.frame_vectors(vid)
            np.testing.assert_array_equal(ta, tb)
            np.testing.assert_allclose(fa.astype(np.float32), fb.astype(np.float32), atol=1e-5)
        sa, sb = ca.engine().snapshot, cb.engine().snapshot
        # same rows in the same order: the segment table and the vectors
        assert [sa.table.video_ids[v] for v in sa.table.video] == [sb.table.video_ids[v] for v in sb.table.video]
        np.testing.assert_allclose(np.asarray(sa.segments), np.asarray(sb.segments), atol=1e-5)
        params = SearchParams(norm_beta=0.0, insets=False)
        for vid in va:
            ra, rb = ca.search(f"{vid}@0-3", k=5, params=params), cb.search(f"{vid}@0-3", k=5, params=params)
            assert [(h.video_id, round(h.score, 4)) for h in ra.results] == \
                   [(h.video_id, round(h.score, 4)) for h in rb.results]
            assert ra.results[0].video_id == vid


def test_spark_ingest_equals_a_single_process_add(spark, tmp_path, built_collection, small_refs):
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    inputs = [*small_refs, small_refs[0], bad]  # a duplicate content and a broken file, reported as add does
    progress: list[tuple[int, int]] = []
    stats: dict = {}
    with Collection.create(tmp_path / "spark") as coll:
        reports = spark_index(coll, inputs, master=MASTER, progress=lambda a, b: progress.append((a, b)), stats=stats)
    assert [r.status for r in reports] == ["indexed"] * len(small_refs) + ["skipped", "failed"]
    assert reports[-2].video_id == reports[0].video_id and reports[-1].error
    assert [r.path for r in reports] == [str(p) for p in inputs]
    _same_collection(built_collection, tmp_path / "spark")
    # the executors' work was shown as it happened, and every task ended
    assert progress and progress[-1][0] == progress[-1][1] == stats["partitions"]
    # one encoder per Python worker process, never one per video
    assert 1 <= stats["encoder_loads"] <= stats["worker_processes"] <= 2 < len(small_refs)
    assert not (tmp_path / "spark" / "spark-shards").exists()  # the shards are gone after the commit


def test_indexing_again_skips_everything_without_decoding(spark, tmp_path, collection_copy, small_refs):
    stats: dict = {}
    with Collection.open(collection_copy) as coll:
        before = coll.info()["segments"]
        reports = spark_index(coll, small_refs, master=MASTER, stats=stats)
        assert [r.status for r in reports] == ["skipped"] * len(small_refs)
        assert coll.info()["segments"] == before
    assert stats["encoder_loads"] == 0


def test_a_failed_task_is_retried_without_duplicate_videos(spark, tmp_path, built_collection, small_refs):
    stats: dict = {}
    with Collection.create(tmp_path / "retried") as coll:  # every task's first attempt dies after one shard
        reports = spark_index(coll, small_refs, master=MASTER, partitions=2, stats=stats, _fail_first_attempt=True)
    assert stats["max_attempt"] == 1  # every collected record is from a second attempt: the first ones failed
    assert [r.status for r in reports] == ["indexed"] * len(small_refs)
    _same_collection(built_collection, tmp_path / "retried")


def test_the_cli_indexes_through_spark(spark, tmp_path, small_refs, capsys):
    import json

    from vidsearch import cli

    coll = tmp_path / "cli"
    assert cli.main(["index", "--collection", str(coll), "--spark", MASTER, "--json", *map(str, small_refs[:2])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["status"] for f in out["files"]] == ["indexed", "indexed"]
    with Collection.open(coll) as c:
        assert sorted(v["id"] for v in c.videos()) == sorted(f["video_id"] for f in out["files"])


def test_distributed_pq_on_spark_equals_the_in_process_run(spark, tmp_path):
    """The executors read their own row ranges of a .npy file; codebooks and codes equal the in-process run over
    the same ranges."""
    from vidsearch.distributed.pq import (
        DistributedPQConfig,
        LocalPartitions,
        SparkPartitions,
        encode_partitions,
        train_distributed_pq,
    )

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cfg = DistributedPQConfig(m=4, nbits=4, iterations=4, local_iterations=5)
    parts = SparkPartitions(spark, str(tmp_path / "x.npy"), partitions=3)
    on_spark = train_distributed_pq(parts, cfg)
    bounds = np.linspace(0, len(x), 4).astype(int)
    local = train_distributed_pq(LocalPartitions([x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]), cfg)
    np.testing.assert_allclose(on_spark.codebooks, local.codebooks, atol=1e-5)
    assert on_spark.losses == pytest.approx(local.losses, rel=1e-6)
    np.testing.assert_array_equal(encode_partitions(parts, on_spark.codebooks),
                                  encode_partitions(LocalPartitions([x]), local.codebooks))
