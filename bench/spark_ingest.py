"""Spark ingest (``vidsearch index --spark``) against the single-process ``Collection.add`` on the same footage.

    python bench/spark_ingest.py [--master local[2]] [--repeats 2] [--wait-quiet 120] [--json]

Footage: the packaged real sample footage (``samples.reference_footage()``, as bench/ingest.py), default config
(SSCD). The encoder is built and warmed once in this process first (ONNX load not counted on the single-process
side). Then, alternating, ``--repeats`` times each: a fresh collection filled by ``Collection.add`` and one filled
by ``spark_index`` on a session started beforehand (its start is timed apart). The Spark figure of a run includes
what every job pays: Python workers started, the encoder built in each (PySpark reuses the workers across jobs,
so only the first Spark run pays the model load: reported apart), shards written and read, the driver's commit.

Checks: both collections hold the same video ids with frame and segment vectors within 1e-5 (the issue's target).

Model of N executors (what it assumes): executors like this machine (``cores`` task slots each, a task taking
what it took here in ``local[cores]``), the files' task times (decode + encode + hash, from the Spark run's
per-file timings) spread over ``N x cores`` slots longest first (LPT), plus the fixed costs measured here
(session start, worker start + model load per executor, which run in parallel on each executor) and the driver's
serial commit (measured here, per file). Network, shared-storage and scheduling costs of a real cluster are not in
it.

Writes bench/results/spark-ingest.json.
"""

from __future__ import annotations

import argparse
import heapq
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating (best by wall time)")
    p.add_argument("--executors", default="1,2,4,8,16", help="N of the executor model")
    p.add_argument("--wait-quiet", type=float, default=0.0)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def single(files: list[Path], root: Path, i: int) -> dict[str, Any]:
    from vidsearch import Collection

    with Collection.create(root / f"single-{i}") as coll:
        t0 = time.perf_counter()
        reports = coll.add(files)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "path": str(root / f"single-{i}"), "reports": [r.to_dict() for r in reports]}


def spark_run(files: list[Path], root: Path, i: int, master: str) -> dict[str, Any]:
    from vidsearch import Collection
    from vidsearch.distributed.spark import spark_index

    stats: dict[str, Any] = {}
    with Collection.create(root / f"spark-{i}") as coll:
        t0 = time.perf_counter()
        reports = spark_index(coll, files, master=master, stats=stats)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "path": str(root / f"spark-{i}"), "stats": stats, "reports": [r.to_dict() for r in reports]}


def compare(a: str, b: str) -> dict[str, Any]:
    from vidsearch import Collection

    with Collection.open(a) as ca, Collection.open(b) as cb:
        ids_a, ids_b = sorted(v["id"] for v in ca.videos()), sorted(v["id"] for v in cb.videos())
        frame_diff = 0.0
        for vid in ids_a if ids_a == ids_b else []:
            frame_diff = max(frame_diff, float(np.abs(ca.frame_vectors(vid)[1].astype(np.float32)
                                                      - cb.frame_vectors(vid)[1].astype(np.float32)).max()))
        sa, sb = ca.engine().snapshot, cb.engine().snapshot
        same_rows = [sa.table.video_ids[v] for v in sa.table.video] == [sb.table.video_ids[v] for v in sb.table.video]
        seg_diff = float(np.abs(np.asarray(sa.segments) - np.asarray(sb.segments)).max()) if same_rows else None
    return {"same_ids": ids_a == ids_b, "videos": len(ids_a), "same_row_order": same_rows,
            "max_abs_frame_diff": frame_diff, "max_abs_segment_diff": seg_diff,
            "equal_within_1e-5": ids_a == ids_b and same_rows and frame_diff <= 1e-5 and (seg_diff or 0) <= 1e-5}


def lpt(times: list[float], slots: int) -> float:
    """Makespan of tasks placed longest first on the least-loaded of ``slots``."""
    heap = [0.0] * max(1, slots)
    for t in sorted(times, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + t)
    return max(heap)


def main() -> None:
    args = parse_args()
    from vidsearch.config import CollectionConfig
    from vidsearch.distributed.spark import _session
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate import samples

    files = samples.reference_footage()
    if not files:
        raise SystemExit("no sample footage found; run `make install`")
    payload = C.header("spark-ingest", {**{k: v for k, v in vars(args).items() if k != "json"},
                                        "footage": [str(p) for p in files], "n_files": len(files)},
                       missing=samples.missing_footage(found=files))
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()
    C.log("warming the encoder in this process")
    MediaEncoder(CollectionConfig()).encode_file(files[0])
    t0 = time.perf_counter()
    spark = _session(args.master, "vidsearch-bench")
    payload["session_start_s"] = round(time.perf_counter() - t0, 2)
    cores = int(spark.sparkContext.defaultParallelism)
    runs: dict[str, list[dict[str, Any]]] = {"single": [], "spark": []}
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-spark-", dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        for i in range(args.repeats):
            for side in ("spark", "single") if i % 2 == 0 else ("single", "spark"):
                r = spark_run(files, root, i, args.master) if side == "spark" else single(files, root, i)
                C.log(f"[{side} {i + 1}/{args.repeats}] {r['wall_s']:.1f} s")
                runs[side].append(r)
        payload["equality"] = compare(runs["single"][0]["path"], runs["spark"][0]["path"])
    spark.stop()
    video_s = sum(r["duration"] for r in runs["single"][0]["reports"] if r["status"] == "indexed")
    best = {side: min(rs, key=lambda r: r["wall_s"]) for side, rs in runs.items()}
    first_spark = runs["spark"][0]
    per_file = [sum(r["timings_s"].get(k, 0.0) for k in ("decode", "encode", "hash")) for r in best["spark"]["reports"]
                if r["status"] == "indexed"]
    commit_s = best["spark"]["stats"]["commit_s"]
    model_load_s = max(0.0, first_spark["wall_s"] - best["spark"]["wall_s"])
    fixed = payload["session_start_s"] + model_load_s
    payload["single"] = {"walls_s": [r["wall_s"] for r in runs["single"]], "best_wall_s": best["single"]["wall_s"],
                         "video_s_per_wall_s": video_s / best["single"]["wall_s"]}
    payload["spark"] = {"walls_s": [r["wall_s"] for r in runs["spark"]], "best_wall_s": best["spark"]["wall_s"],
                        "video_s_per_wall_s": video_s / best["spark"]["wall_s"], "stats": [r["stats"] for r in runs["spark"]],
                        "first_run_extra_s (worker start + model load)": model_load_s}
    payload["video_seconds"] = video_s
    payload["throughput_ratio_spark_over_single"] = best["single"]["wall_s"] / best["spark"]["wall_s"]
    payload["overhead_s"] = {"session_start": payload["session_start_s"], "first_job_workers_and_models": model_load_s,
                             "driver_commit": commit_s,
                             "executor_work_sum": sum(per_file), "spark_job": best["spark"]["stats"]["spark_s"]}
    model = {}
    for n in [int(x) for x in args.executors.split(",")]:
        wall = fixed + lpt(per_file, n * cores) + commit_s
        model[str(n)] = {"wall_s": round(wall, 2), "video_s_per_wall_s": round(video_s / wall, 1)}
    payload["executor_model"] = {"assumes": "executors of this machine's cores, the files' task times measured here "
                                            "placed longest-first, fixed costs (session, worker + model start) and "
                                            "the driver's serial commit measured here; no network or shared-storage "
                                            "cost", "cores_per_executor": cores, "by_executors": model}
    payload["cpu_probe_end"] = C.cpu_probe()
    C.log(f"single {best['single']['wall_s']:.1f} s, spark {best['spark']['wall_s']:.1f} s: ratio "
          f"{payload['throughput_ratio_spark_over_single']:.2f} (target >= 0.8); equal: {payload['equality']}")
    C.emit("spark-ingest", payload, args.json)


if __name__ == "__main__":
    main()
