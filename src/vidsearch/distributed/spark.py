"""``vidsearch index --spark MASTER``: decode and encode on Spark executors, commit on the driver.

How the work is split (after clip-retrieval's PySpark inference, which parallelizes input shards and loads the
model once per executor, and autofaiss, which writes per-partition outputs that the driver merges):

1. The driver lists the media files exactly as :meth:`Collection.add` does (same order), and hashes nothing.
2. ``sc.parallelize`` spreads ``(position, path)`` over partitions (by default 4 per core of the master, so a
   slow video does not hold a whole core's share). Each task hashes each file (a file whose content the
   collection already holds is not decoded), decodes and encodes it with a ``MediaEncoder`` built once per
   Python worker process (PySpark reuses workers between tasks, so once per executor core, never per video), and
   writes one shard per file, ``SHARDS/<sha256>.npz``, atomically (temp + ``os.replace``). A retried task
   rewrites the same names with the same content: no duplicate. Tasks return only small metadata.
3. The driver, holding the collection's writer lock the whole time, reads the shards in input order and commits
   them through :meth:`Collection.add_encoded`, the code path of a single-machine ``add``: same ids, same rows,
   same manifest. The shard folder is removed after the commit.

The shard folder must be visible to the driver and every executor: by default a folder inside the collection
(right for ``local[N]``, and for a cluster whose nodes mount the collection's file system); ``shard_dir`` names
another shared one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vidsearch.atomic import atomic_write
from vidsearch.collection import KNOWN, Collection, EncodedFile, FileReport, encode_for_add
from vidsearch.config import CollectionConfig
from vidsearch.errors import ConfigError
from vidsearch.store.files import iter_media_files

__all__ = ["spark_index", "DEFAULT_MASTER"]

DEFAULT_MASTER = "local[*]"
PARTITIONS_PER_CORE = 4

# one MediaEncoder per Python worker process and config (PySpark reuses its workers between tasks)
_ENCODERS: dict[str, Any] = {}
_ENCODERS_LOCK = threading.Lock()


def _encoder(config_json: str) -> Any:
    with _ENCODERS_LOCK:
        if config_json not in _ENCODERS:
            from vidsearch.encode.pipeline import MediaEncoder

            _ENCODERS[config_json] = MediaEncoder(CollectionConfig.from_dict(json.loads(config_json)))
        return _ENCODERS[config_json]


def encoder_loads() -> int:
    """Encoders built by this process so far (tests check one per worker, not one per video)."""
    return len(_ENCODERS)


def _write_shard(path: Path, media: Any, timings: dict[str, float]) -> None:
    seg = media.segments
    meta = {"info": asdict(media.info), "timings": timings}
    buf = io.BytesIO()
    np.savez(buf, times=np.asarray(media.times, np.float64),
             frame_vectors=np.asarray(media.frame_vectors, np.float32),
             segment_vectors=np.asarray(media.segment_vectors, np.float32),
             seg_start=np.array([s.start for s in seg], np.float64), seg_end=np.array([s.end for s in seg], np.float64),
             seg_frame_start=np.array([s.frame_start for s in seg], np.int64),
             seg_frame_end=np.array([s.frame_end for s in seg], np.int64),
             meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    atomic_write(path, buf.getvalue())


def _read_shard(path: Path) -> tuple[Any, dict[str, float]]:
    from vidsearch.decode.media import MediaInfo
    from vidsearch.decode.windows import Segment
    from vidsearch.encode.pipeline import EncodedMedia

    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        segments = [Segment(float(a), float(b), int(c), int(d))
                    for a, b, c, d in zip(z["seg_start"], z["seg_end"], z["seg_frame_start"], z["seg_frame_end"])]
        media = EncodedMedia(MediaInfo(**meta["info"]), z["times"].copy(), z["frame_vectors"].copy(), segments,
                             z["segment_vectors"].copy())
    return media, meta["timings"]


def _attempt() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return int(ctx.attemptNumber()) if ctx is not None else 0


def encode_partition(config_json: str, shard_dir: str, known: frozenset[str],
                     items: Iterable[tuple[int, str]], fail_first_attempt: bool = False) -> Iterator[dict[str, Any]]:
    """One Spark task: hash, decode and encode each ``(position, path)``, write its shard; yield small
    records (a failure is a record, as ``Collection.add`` reports it, and the task goes on).
    ``fail_first_attempt`` (tests): the task's first attempt dies after writing its first shard."""
    for position, path_text in items:
        path = Path(path_text)
        built = encoder_loads()
        record: dict[str, Any] = {"position": position, "path": path_text, "digest": None, "size": 0,
                                  "shard": None, "error": None, "known": False, "pid": os.getpid(),
                                  "attempt": _attempt(), "encoder_built": False}
        item = encode_for_add(path, lambda: _encoder(config_json), known.__contains__)
        record.update(digest=item.digest, size=item.size_bytes, error=item.error, known=item.media is KNOWN)
        if item.error is None and item.media is not KNOWN:
            shard = Path(shard_dir) / f"{item.digest}.npz"
            try:
                _write_shard(shard, item.media, item.timings)
                record["shard"] = str(shard)
            except OSError as exc:
                record["error"] = f"{shard}: {exc}"
            record["encoder_built"] = encoder_loads() > built
        if fail_first_attempt and record["attempt"] == 0 and record["shard"]:
            raise RuntimeError("fail_first_attempt: this attempt dies after writing a shard (a test)")
        yield record


def _session(master: str, app_name: str) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("--spark needs PySpark (and Java 17), which is not installed: pip install 'vidsearch[spark]'") from exc
    # the executors' Python is this one (a cluster's nodes need the same environment: spark-submit's
    # spark.pyspark.python overrides this)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # no web UI and no console progress bar (the driver reports progress itself)
    builder = (SparkSession.builder.appName(app_name).config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()


def spark_index(collection: Collection, paths: Iterable[str | os.PathLike[str]], master: str = DEFAULT_MASTER,
                partitions: int | None = None, shard_dir: str | os.PathLike[str] | None = None,
                on_file: Callable[[FileReport], None] | None = None,
                progress: Callable[[int, int], None] | None = None,
                stats: dict[str, Any] | None = None, _fail_first_attempt: bool = False) -> list[FileReport]:
    """Index ``paths`` into ``collection`` with decoding and encoding on Spark (module docstring).

    Args:
        collection: an open collection (this process writes it; the lock is taken for the commit).
        paths: files or folders, as for :meth:`Collection.add`.
        master: Spark master URL (``local[2]``, ``spark://host:7077``, ...); "" keeps the one spark-submit set.
        partitions: Spark partitions (default: 4 per core of the master, at most one per file).
        shard_dir: where tasks write their shards (default: a folder in the collection); must be shared by
            the driver and every executor.
        on_file: called with each file's report as the driver commits it.
        progress: called with (tasks finished, tasks) while the executors work.
        stats: filled with the job's figures: ``partitions``, ``worker_processes`` (distinct Python workers that
            encoded), ``encoder_loads`` (encoders built: at most one per worker process), ``max_attempt`` (0 unless
            a task was retried), ``spark_s`` (the
            executors' part, session start excluded), ``commit_s``.
        _fail_first_attempt: tests only: every task's first attempt dies after writing a shard (the master must
            allow a retry, e.g. ``local[2,2]``).

    Returns:
        One report per file, in input order, as :meth:`Collection.add` returns them.

    Raises:
        ConfigError: PySpark is not installed, or ``partitions`` < 1.
        CollectionLockedError: another process writes to the collection.
    """
    if partitions is not None and partitions < 1:
        raise ConfigError(f"partitions must be >= 1, got {partitions}")
    files = [str(p) for p in iter_media_files(paths)]
    if not files:
        return []
    spark = _session(master, "vidsearch-index")
    sc = spark.sparkContext
    n_parts = min(len(files), partitions or max(1, sc.defaultParallelism) * PARTITIONS_PER_CORE)
    root = Path(shard_dir) if shard_dir is not None else collection.path / "spark-shards"
    job_dir = root / uuid.uuid4().hex[:12]
    with collection.writing():  # from the list of indexed contents to the commit: no other writer in between
        job_dir.mkdir(parents=True, exist_ok=True)
        try:
            config_json = json.dumps(collection.config.to_dict(), sort_keys=True)
            known = frozenset(collection.content_hashes())
            rdd = sc.parallelize(list(enumerate(files)), n_parts)
            job = rdd.mapPartitions(lambda it: encode_partition(config_json, str(job_dir), known, it,
                                                                _fail_first_attempt))
            t0 = time.perf_counter()
            records = _collect_with_progress(sc, job, n_parts, progress)
            t1 = time.perf_counter()
            records.sort(key=lambda r: r["position"])
            reports = collection.add_encoded(_encoded(records), on_file=on_file)
            if stats is not None:
                stats.update({"master": sc.master, "partitions": n_parts,
                              "worker_processes": len({r["pid"] for r in records if r["shard"]}),
                              "encoder_loads": sum(bool(r["encoder_built"]) for r in records),
                              "max_attempt": max(r["attempt"] for r in records),
                              "spark_s": round(t1 - t0, 3), "commit_s": round(time.perf_counter() - t1, 3)})
            return reports
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
            try:
                root.rmdir()  # only when empty (another job may share it)
            except OSError:
                pass


def _encoded(records: list[dict[str, Any]]) -> Iterator[EncodedFile]:
    """The tasks' records, in input order, as files for ``Collection.add_encoded`` (shards read one at a time)."""
    for r in records:
        if r["error"] is not None:
            yield EncodedFile(r["path"], r["digest"], r["size"], error=r["error"])
        elif r["known"]:  # already indexed: add_encoded reports it skipped (it checks the hash first)
            yield EncodedFile(r["path"], r["digest"], r["size"], media=KNOWN)
        else:
            media, timings = _read_shard(Path(r["shard"]))
            yield EncodedFile(r["path"], r["digest"], r["size"], media, timings=timings)


def _collect_with_progress(sc: Any, rdd: Any, n_tasks: int,
                           progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """``rdd.collect()``, reporting finished tasks from Spark's status tracker every 0.5 s meanwhile."""
    if progress is None:
        return list(rdd.collect())
    group = f"vidsearch-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            sc.setJobGroup(group, "vidsearch index")
            out["records"] = rdd.collect()
        except BaseException as exc:  # re-raised on the driver's thread below
            out["error"] = exc

    worker = threading.Thread(target=run, name="vidsearch-spark-collect", daemon=True)
    worker.start()
    tracker = sc.statusTracker()
    last = -1
    while worker.is_alive():
        worker.join(0.5)
        done = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else []:
                stage = tracker.getStageInfo(stage_id)
                done += stage.numCompletedTasks if stage else 0
        if done != last:
            progress(min(done, n_tasks), n_tasks)
            last = done
    if "error" in out:
        raise out["error"]
    progress(n_tasks, n_tasks)
    return list(out["records"])
