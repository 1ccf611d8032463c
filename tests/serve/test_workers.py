"""``vidsearch serve --workers 2``: two processes on one port, one writer.

A real server (the CLI, as users start it) on a copy of ``built_collection``: searches are answered by
both workers, alike; index jobs, their status and removals reach the writer whichever worker the
connection lands on (each request below opens its own connection); metrics count every worker's
requests; a killed worker is started again; SIGTERM stops them all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from served import announced

TOKEN = "workers-token"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture(scope="module")
def workers_server(built_collection: Path, footage: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("workers")
    coll, media = base / "coll", base / "media"
    shutil.copytree(built_collection, coll)
    media.mkdir()
    shutil.copy(footage["v2.m4v"], media / "v2.m4v")
    proc = subprocess.Popen([sys.executable, "-m", "vidsearch.cli", "serve", "-c", str(coll), "--port", "0", "--json",
                             "--workers", "2", "--allow-root", str(media), "--max-batch", "2", "--token", TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info = announced(proc, timeout=180)
    yield {"proc": proc, "url": info["url"], "info": info, "media": media, "coll": coll}
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def _get(server: dict, path: str, **kw) -> httpx.Response:  # a new connection per request
    return httpx.get(server["url"] + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60, **kw)


def _search(server: dict, ref: str) -> httpx.Response:
    """A stored-range search on a new connection, sent again after a 503 (admission on a busy machine)."""
    for _ in range(20):
        answer = httpx.post(server["url"] + "/search", data={"ref": ref, "k": "3"},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        if answer.status_code != 503:
            break
        time.sleep(0.05)
    return answer


def _without_timings(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "timings_ms"}


def test_two_workers_answer_searches_alike_and_metrics_count_both(workers_server):
    proc, info = workers_server["proc"], workers_server["info"]
    assert info["workers"] == 2 and info["pid"] == proc.pid
    children = _children(proc.pid)
    assert len(children) == 2, children
    before = {pid: _cpu_ticks(pid) for pid in children}
    videos = _get(workers_server, "/videos").json()["videos"]
    ref = f"{videos[0]['video_id']}@0-4"
    with ThreadPoolExecutor(4) as pool:  # concurrent connections: the kernel hands them to either worker
        answers = list(pool.map(lambda _: _search(workers_server, ref), range(120)))
    assert {a.status_code for a in answers} == {200}
    first = _without_timings(answers[0].json())
    assert first["results"][0]["video_id"] == videos[0]["video_id"]
    assert all(_without_timings(a.json()) == first for a in answers)
    busy = [pid for pid in children if _cpu_ticks(pid) - before[pid] >= 5]  # >= 50 ms of CPU: it searched
    assert len(busy) == 2, {pid: _cpu_ticks(pid) - before[pid] for pid in children}
    text = _get(workers_server, "/metrics").text
    served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("vidsearch_http_requests_total{") and 'endpoint="/search"' in line
                 and 'status="200"' in line)
    assert served >= 120, served  # both workers' requests, whichever answered the scrape


def test_jobs_and_removals_reach_the_writer_from_either_worker(workers_server):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = workers_server["url"]
    assert httpx.post(url + "/videos", json={"paths": [str(workers_server["media"])]}, timeout=30).status_code == 401
    posted = httpx.post(url + "/videos", json={"paths": [str(workers_server["media"])]}, headers=headers, timeout=30)
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job_id"]
    deadline = time.monotonic() + 120
    while True:  # each poll on a new connection: half land on the worker that does not write
        job = _get(workers_server, f"/jobs/{job_id}")
        assert job.status_code == 200, job.text
        if job.json()["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    job = job.json()
    assert job["status"] == "done" and job["summary"]["indexed"] == 1, job
    new_id = job["files"][0]["video_id"]
    assert all(_get(workers_server, "/jobs").json()["jobs"][0]["job_id"] == job_id for _ in range(6))
    # every worker finds the new video once it has refreshed (1 s)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [_search(workers_server, f"{new_id}@0-3") for _ in range(8)]
        if all(r.status_code == 200 for r in found):
            break
        time.sleep(0.3)
    assert [r.status_code for r in found] == [200] * 8, [r.text for r in found if r.status_code != 200]
    assert all(r.json()["results"][0]["video_id"] == new_id for r in found)
    removed = httpx.delete(f"{url}/videos/{new_id}", headers=headers, timeout=60)
    assert removed.status_code == 200 and removed.json() == {"removed": new_id}, removed.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gone = [_search(workers_server, f"{new_id}@0-3").status_code for _ in range(8)]
        if gone == [404] * 8:
            break
        time.sleep(0.3)
    assert gone == [404] * 8


def test_a_killed_worker_is_started_again_and_sigterm_stops_all(workers_server):
    proc = workers_server["proc"]
    children = _children(proc.pid)
    os.kill(children[1], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = _children(proc.pid)
        if len(now) == 2 and children[1] not in now:
            break
        time.sleep(0.2)
    assert len(now) == 2 and children[1] not in now, now
    assert _get(workers_server, "/health").status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    for pid in now:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
