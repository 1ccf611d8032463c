"""A SIGKILL of ``vidsearch serve`` in the middle of an index job loses nothing committed: every file the
job reported as indexed before the kill is in the reopened collection, the engine opens and finds each
one, and the next writer goes on from there."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from served import announced

from vidsearch.search.results import SearchParams

# raw cosines of the whole frame, decoded as at indexing: an exact copy scores ~1 (insets decode at twice the
# model size and resize, ~0.987)
RAW = SearchParams(norm_beta=0.0, insets=False)
VIDEOS = ["v2.m4v", "rgb.m4v", "v2s.mov", "cup.mp4", "Megamind.avi"]


def test_sigkill_during_an_index_job_loses_nothing_committed(built_collection, footage, tmp_path):
    from vidsearch import Collection
    from vidsearch.search.engine import Engine

    coll = tmp_path / "coll"
    shutil.copytree(built_collection, coll)
    media = tmp_path / "media"
    media.mkdir()
    files = []
    for i, name in enumerate(VIDEOS):  # numbered: the job indexes them in this order
        files.append(media / f"{i}-{name}")
        shutil.copy(footage[name], files[-1])
    proc = subprocess.Popen([sys.executable, "-m", "vidsearch.cli", "serve", "-c", str(coll), "--port", "0", "--json",
                             "--allow-root", str(media), "--max-batch", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = announced(proc)["url"]
        job_id = httpx.post(f"{url}/videos", json={"paths": [str(media)]}, timeout=30).json()["job_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()
            if job["done"] >= 2 or job["status"] != "running" and job["status"] != "queued":
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert job["status"] == "running" and 2 <= job["done"] < len(VIDEOS), job  # killed mid-job
    reported = {f["video_id"]: f["path"] for f in job["files"] if f["status"] == "indexed"}
    assert len(reported) >= 2

    # everything reported before the kill is there; at most the file in progress was committed besides
    with Collection.open(coll) as c:
        ids = {v["id"]: v["path"] for v in c.videos()}
        info = c.info()
    assert set(reported) <= set(ids) and len(ids) - 5 <= len(reported) + 1
    assert info["videos"] == len(ids) and info["index"]["state"] in ("current", "stale")
    with Engine.open(coll) as engine:
        for video_id, path in reported.items():
            top = engine.search(path, k=1, params=RAW).results[0]
            assert top.video_id == video_id and top.score > 0.99, (path, top)

    # the next writer recovers (drops uncommitted rows) and indexes the rest
    with Collection.open(coll) as c:
        reports = c.add(files)
    assert {r.status for r in reports} <= {"indexed", "skipped"}
    assert sum(r.status == "skipped" for r in reports) == len(ids) - 5
    with Engine.open(coll) as engine:
        assert len(engine.snapshot.catalog.video_ids) == 5 + len(VIDEOS)
        last = engine.search(files[-1], k=1, params=RAW).results[0]
        assert Path(last.path).name == files[-1].name and last.score > 0.99
