"""bench/serve.py: its HTTP client and figures on their own (fast), the whole ``--quick`` run against two real
servers (slow), and bench/results_serve.py, which renders docs/RESULTS.md's serving tables from the JSON."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("bench_serve", "serve.py")


@pytest.fixture(scope="module")
def renderer() -> ModuleType:
    return _load("results_serve", "results_serve.py")


# ------------------------------------------------------------------ the raw HTTP client against a scripted server


async def _scripted_server(answers: list[bytes], seen: list[bytes], close_after: set[int]):  # type: ignore[no-untyped-def]
    """A loopback server answering each request (read up to its Content-Length) with the next of ``answers``;
    closes the connection after the answers whose index is in ``close_after``."""
    index = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal index
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                seen.append(head + await reader.readexactly(length))
                i, index = index, index + 1
                writer.write(answers[i])
                await writer.drain()
                if i in close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_raw_client_reads_length_chunked_and_close_answers(bench: ModuleType):
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{\"query\":1}",
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        b"4\r\n{\"er\r\n3;x=1\r\nr\":\r\n2\r\n1}\r\n0\r\n\r\n",
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ]
    seen: list[bytes] = []

    async def main() -> list[tuple[int, bytes, dict[bytes, bytes]]]:
        server = await _scripted_server(answers, seen, close_after={2})
        port = server.sockets[0].getsockname()[1]
        pool = bench.RawHttpPool("127.0.0.1", port, 1)
        request = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        got = [await pool.request(request) for _ in range(4)]
        opened = pool.opened
        pool.close()
        server.close()
        await server.wait_closed()
        return got + [opened]  # type: ignore[list-item]

    *got, opened = asyncio.run(main())
    assert [g[0] for g in got] == [200, 503, 400, 200]
    assert got[0][1] == b'{"query":1}' and got[0][2] == {}  # headers are kept for non-2xx answers only
    assert got[1][1] == b'{"err":1}' and got[1][2][b"retry-after"] == b"2"
    assert got[2][1] == b"{}"
    assert opened == 2, "the 'connection: close' answer must make the next request open a new connection"
    assert len(seen) == 4 and all(s.endswith(b"abc") for s in seen)


def test_raw_client_retries_once_when_an_idle_connection_was_closed(bench: ModuleType):
    answers = [b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"]
    seen: list[bytes] = []

    async def main() -> tuple[list[bytes], int]:
        server = await _scripted_server(answers, seen, close_after={0})  # closes without saying so
        port = server.sockets[0].getsockname()[1]
        pool = bench.RawHttpPool("127.0.0.1", port, 1)
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        first = await pool.request(request)
        await asyncio.sleep(0.05)
        second = await pool.request(request)
        pool.close()
        server.close()
        await server.wait_closed()
        return [first[1], second[1]], pool.opened

    bodies, opened = asyncio.run(main())
    assert bodies == [b"a", b"b"] and opened == 2


def test_a_timed_out_request_is_counted_and_its_connection_dropped(bench: ModuleType):
    async def main() -> Any:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1000)
            await asyncio.sleep(2)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        pool = bench.RawHttpPool("127.0.0.1", server.sockets[0].getsockname()[1], 1)
        out = bench.Outcomes()
        await bench._one(pool, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", time.perf_counter(), 0.2, out)
        in_use, idle = pool.in_use, list(pool._idle)
        pool.close()
        server.close()
        return out, in_use, idle

    out, in_use, idle = asyncio.run(main())
    assert out.status == [bench.TIMEOUT] and 0.15 < out.latency_s[0] < 1.5
    assert in_use == 0 and idle == [], "the slot comes back, the connection does not"


# ------------------------------------------------------------------ figures


def test_plan_requests_keeps_every_bound(bench: ModuleType):
    args = bench.parse_args(["--step-seconds", "6", "--step-max-seconds", "15", "--min-requests", "40",
                             "--max-requests", "4000"])
    assert bench.plan_requests(10, args) == 60
    assert bench.plan_requests(2, args) == 30  # min 40 would take 20 s > 15 s
    assert bench.plan_requests(5000, args) == 4000
    assert bench.plan_requests(0.01, args) == 1


def test_passes_needs_p99_within_the_limit_and_under_1_percent_missing(bench: ModuleType):
    step = {"planned": 200, "n_2xx": 199, "p99_ms": 49.0}
    assert bench.passes(step, 50)
    assert not bench.passes({**step, "p99_ms": 51.0}, 50)
    assert not bench.passes({**step, "n_2xx": 198}, 50)  # 2 of 200 = 1 % missing
    assert not bench.passes({"planned": 5, "n_2xx": 0, "p99_ms": None}, 50)


def test_a_rate_is_judged_on_all_its_runs_together(bench: ModuleType):
    run = {"planned": 300, "n_2xx": 300, "p99_ms": 150.0}
    assert bench.rate_passes([run, {**run, "n_2xx": 297}], 200)  # 3 refusals of 600: 0.5 %
    assert not bench.passes({**run, "n_2xx": 297}, 200)  # the same run alone: 1 %
    assert not bench.rate_passes([run, {**run, "n_2xx": 294}], 200)  # 6 of 600: 1 %
    assert not bench.rate_passes([run, {**run, "p99_ms": 201.0}], 200)  # each run's p99 within the limit
    assert not bench.rate_passes([], 200)


def test_the_sweep_confirms_the_highest_passing_rate(bench: ModuleType, monkeypatch: pytest.MonkeyPatch):
    """The sweep repeats each mode's highest passing rate (--confirm); when its runs no longer pass together, one
    bisection step below it and the highest passing rate is confirmed; the summary reports the highest rate whose
    runs pass, with their worst figures."""
    import asyncio

    runs: list[tuple[str, float]] = []

    async def fake_open_loop(server, requests, rate, n, seed, args):
        runs.append((server, rate))
        # server "a" passes up to 8/s; "b" passes 8/s only the first time, and always up to 6/s
        limit = 8.0 if server == "a" or sum(1 for s, r in runs if s == "b" and r == 8.0) == 1 else 6.0
        ok = rate <= limit
        return {"planned": n, "sent": n, "n_2xx": n if ok else n - 5, "achieved_rps": rate * (0.99 if ok else 0.9),
                "n_503": 0 if ok else 5, "n_4xx": 0, "n_5xx": 0, "timeouts": 0, "p50_ms": 20.0,
                "p99_ms": 100.0 + rate * (1 if ok else 20), "p99_503_ms": None if ok else 3.0, "max_503_ms": None if ok else 4.0,
                "offered_rps": rate}

    monkeypatch.setattr(bench, "open_loop", fake_open_loop)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(bench.asyncio, "sleep", lambda s: real_sleep(0))
    args = bench.parse_args(["--max-steps", "5", "--refine", "2", "--confirm", "1", "--overload-repeats", "2"])
    steps: list[dict[str, Any]] = []
    state = asyncio.run(bench.sweep_kind({"a": "a", "b": "b"}, {"a": [], "b": []}, "image", 200.0, 1.0, args, 0,
                                         steps))
    assert state["a"]["good"] == 8.0 and state["b"]["good"] == 5.7, state
    b = [(s["phase"], s["offered_rps"], s["passed"]) for s in steps if s["mode"] == "b" and s["phase"] != "overload"]
    # 8/s passed in the ramp, failed its confirmation; one bisection step towards 4/s found 5.7/s, confirmed
    assert b[-3:] == [("confirm", 8.0, False), ("refine", 5.7, True), ("confirm", 5.7, True)], b
    summary = bench.mode_kind_summary(steps, "b", "image", 200.0)
    assert summary["sustainable_offered_rps"] == 5.7 and summary["first_failing_offered_rps"] == 8.0, summary
    assert summary["runs_at_limit"] == 2 and summary["p99_ms_at_limit"] == pytest.approx(105.7)
    assert summary["qps_at_limit"] == pytest.approx(5.7 * 0.99)
    assert bench.mode_kind_summary(steps, "a", "image", 200.0)["runs_at_limit"] == 2
    over = [s for s in steps if s["phase"] == "overload"]
    # twice each mode's sustainable rate, twice, the modes alternating
    assert [(s["mode"], s["offered_rps"]) for s in over] == [("a", 16.0), ("b", 11.0), ("b", 11.0), ("a", 16.0)]
    figures = bench.mode_kind_summary(steps, "b", "image", 200.0)["overload"]
    b_over = [s for s in over if s["mode"] == "b"]
    assert figures["repeats"] == 2 and figures["sent"] == sum(s["sent"] for s in b_over)
    assert figures["admitted_p99_ms"] == max(s["p99_ms"] for s in b_over)  # the worst run's, not pooled
    assert [r["admitted_p99_ms"] for r in figures["runs"]] == [s["p99_ms"] for s in b_over]


def test_metrics_diff_counts_only_what_happened_in_between(bench: ModuleType):
    from vidsearch.serve.metrics import ServeMetrics  # the server's own metrics, rendered as /metrics renders them

    m = ServeMetrics()
    for units in (1, 1):
        m.batch_size.labels("encode").observe(units)
    m.overloaded.labels("encode").inc()
    m.requests.labels("/search", "POST", "200").inc(5)
    before = bench.metrics_summary(m.render().decode())
    for units in (1, 2, 3, 4, 10):
        m.batch_size.labels("encode").observe(units)
    m.overloaded.labels("encode").inc(3)
    m.requests.labels("/search", "POST", "200").inc(7)
    m.requests.labels("/search", "POST", "503").inc(3)
    m.requests.labels("/health", "GET", "200").inc(9)
    d = bench.metrics_diff(bench.metrics_summary(m.render().decode()), before)
    h = d["batch_size"]["encode"]
    assert h["count"] == 5 and h["sum"] == 20 and h["mean"] == 4
    assert h["buckets"] == {"1.0": 1, "2.0": 1, "4.0": 2, "16.0": 1}, "per bucket, not cumulative; empty ones left out"
    assert h["p50_le"] == "4.0" and h["p99_le"] == "16.0"
    assert d["overloaded"] == {"encode": 3}
    assert d["search_requests"] == {"200": 7, "503": 3}, "only /search is counted"


# ------------------------------------------------------------------ the whole quick run (two real servers)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("serve-bench")
    env = {**os.environ, "VIDSEARCH_BENCH_RESULTS": str(out / "results")}
    proc = subprocess.run([sys.executable, str(BENCH / "serve.py"), "--quick", "--json", "--data-dir", str(out / "data")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout)
    written = json.loads((out / "results" / "serve-quick.json").read_text())
    return printed, written, out


@pytest.mark.slow
def test_quick_run_records_provenance_and_both_servers(quick_run: tuple[dict[str, Any], dict[str, Any], Path]):
    printed, d, _ = quick_run
    assert printed == d, "--json prints the object it writes"
    assert d["benchmark"] == "serve-quick" and d["partial"] is False, d.get("missing")
    prov = d["provenance"]
    assert prov["git_commit"] and prov["src_dirty"] in (True, False) and prov["started_utc"] and prov["finished_utc"]
    assert prov["load_start"]["loadavg_1_5_15"] and d["machine"]["logical_cores"] >= 1
    assert d["config"]["latency_target_ms"] == 200.0 and d["config"]["kinds"] == ["image", "clip", "ref"]
    assert d["notes"] and any("2 cores" in n for n in d["notes"])
    assert set(d["servers"]) == {"scheduler", "max_batch_1"}
    assert d["servers"]["max_batch_1"]["args"][-2:] == ["--max-batch", "1"]
    assert "--max-batch" not in d["servers"]["scheduler"]["args"]
    for info in d["servers"].values():
        assert info["exit_code"] in (0, -signal.SIGTERM), info.get("log_tail")
        assert info["health"]["videos"] == d["collection"]["indexed"] == 3
        assert info["rss_idle_mb"] > 50
    assert all(c["same_results"] for c in d["client_check"].values()) and set(d["client_check"]) == {"image", "clip", "ref"}
    assert [q["duration_s"] for q in d["queries"]["clip"]] == [10.0], "clip queries last 10 s"
    assert all(q["name"].endswith((".jpg", ".png")) for q in d["queries"]["image"])
    assert all("@" in q["name"] for q in d["queries"]["ref"])
    assert Path(d["plot"]).name == "serve-quick.png"


@pytest.mark.slow
def test_quick_run_steps_are_consistent(quick_run: tuple[dict[str, Any], dict[str, Any], Path], bench: ModuleType):
    _, d, _ = quick_run
    steps = d["steps"]
    phases = Counter((s["mode"], s["kind"], s["phase"]) for s in steps)
    for mode in ("scheduler", "max_batch_1"):
        for kind in ("image", "clip", "ref"):
            assert phases[(mode, kind, "ramp")] >= 1 and phases[(mode, kind, "overload")] == 1, phases
    for s in steps:
        where = f"{s['mode']} {s['kind']} {s['phase']} at {s['offered_rps']}/s"
        answered = s["n_2xx"] + s["n_4xx"] + s["n_5xx"] + s["n_503"] + s["n_other"] + s["timeouts"] + s["conn_errors"]
        assert answered == s["sent"] and s["sent"] + s["not_sent"] == s["planned"] >= 1, where
        assert s["n_4xx"] == 0 and s["n_5xx"] == 0 and s["conn_errors"] == 0, (where, s["examples"])
        assert s["achieved_rps"] <= s["offered_rps"] * 1.2, where
        assert s["achieved_rps"] == pytest.approx(s["n_2xx"] / s["duration_s"], rel=1e-3), where
        if s["n_2xx"]:
            assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], where
        else:
            assert s["p99_ms"] is None
        assert (s["p99_503_ms"] is None) == (s["n_503"] == 0), where
        assert s["passed"] == bench.passes(s, s["limit_ms"]), where
        assert s["limit_ms"] == (50.0 if s["kind"] == "ref" else 200.0)
        assert s["rss_before_mb"] > 50 and s["rss_after_mb"] > 50 and s["client_cpu_s"] >= 0
    for kind in ("image", "clip", "ref"):  # rates are shared: the ramps of both modes start at the same rate
        first = [s for s in steps if s["kind"] == kind and s["phase"] == "ramp"][:2]
        assert {s["mode"] for s in first} == {"scheduler", "max_batch_1"} and first[0]["offered_rps"] == first[1]["offered_rps"]


@pytest.mark.slow
def test_quick_run_client_counts_match_the_servers_metrics(quick_run: tuple[dict[str, Any], dict[str, Any], Path]):
    _, d, _ = quick_run
    for mode in ("scheduler", "max_batch_1"):
        for kind in ("image", "clip", "ref"):
            steps = [s for s in d["steps"] if s["mode"] == mode and s["kind"] == kind]
            if any(s["timeouts"] for s in steps):
                continue  # the server may have answered after the client gave up
            ok = sum(s["n_2xx"] for s in steps) + d["calibration"][kind][mode]["n_2xx"]
            rejected = sum(s["n_503"] for s in steps)
            counted = d["metrics"][mode][kind]["search_requests"]
            assert counted.get("200", 0) == ok and counted.get("503", 0) == rejected, (mode, kind, counted)
    # --max-batch 1: one query per batch (an image is 1 frame and the insets found in it, a 10 s clip 10 frames at
    # 1 fps and their insets; encoded 1 by 1)
    from vidsearch.encode.layout import MAX_INSETS

    mb1 = d["metrics"]["max_batch_1"]
    for kind in ("image", "clip", "ref"):
        assert set(mb1[kind]["batch_size"]["search"]["buckets"]) <= {"1.0"}, (kind, mb1[kind]["batch_size"])
    image = mb1["image"]["batch_size"]["encode"]
    assert "1.0" in image["buckets"] and image["count"] <= image["sum"] <= (1 + MAX_INSETS) * image["count"], image
    clip = mb1["clip"]["batch_size"]["encode"]
    assert clip["count"] >= 1 and 10 * clip["count"] <= clip["sum"] <= 10 * (1 + MAX_INSETS) * clip["count"], clip
    assert d["metrics"]["scheduler"]["image"]["batch_size"]["encode"]["count"] >= 1


@pytest.mark.slow
def test_quick_run_summary(quick_run: tuple[dict[str, Any], dict[str, Any], Path]):
    _, d, out = quick_run
    s = d["summary"]
    for key in ("image_qps_at_target_scheduler", "image_qps_at_target_max_batch_1", "ratio", "ref_qps_at_50ms_p99",
                "overload_503_p99_ms", "admitted_p99_at_2x_ms", "five_xx_total", "rss_growth_pct"):
        assert key in s
    a, b = s["image_qps_at_target_scheduler"], s["image_qps_at_target_max_batch_1"]
    assert s["ratio"] == (pytest.approx(a / b) if a and b else None)
    five = sum(x["n_5xx"] for x in d["steps"]) + d["rss_run"]["n_5xx"]
    assert s["five_xx_total"] == five == 0 and s["targets"]["zero_5xx"] is True
    rss = d["rss_run"]
    assert rss["sent"] == rss["planned"] == 150 and rss["warmup"]["sent"] == 20
    assert rss["n_2xx"] + rss["n_503"] + rss["n_4xx"] + rss["n_5xx"] + rss["timeouts"] + rss["conn_errors"] == rss["sent"]
    assert s["rss_growth_pct"] == pytest.approx((rss["rss_after_mb"] - rss["rss_before_mb"]) / rss["rss_before_mb"] * 100)
    assert s["ref_qps_at_50ms_p99"] is None or s["ref_qps_at_50ms_p99"] > 10
    assert 0 < s["generator_cpu_share"] < 1
    # the image target comes from the encoder curve measured in this run, on this machine
    curve = d["encoder_curve"]
    assert set(curve["results"]) == {"1", "2", "4", "8", "16", "32"} and curve["config"]["encoder"] == "sscd"
    assert s["encoder_curve_measured"] == "in this run" and s["encoder_curve_best_ratio"] == curve["best_ratio"]
    assert s["ratio_target"] == pytest.approx(1.5 if curve["best_ratio"] >= 1.5 else 0.9 * curve["best_ratio"])
    # the ceiling: each server alone again, nothing refused at its long latency target
    ceiling = d["ceiling"]
    for mode in ("scheduler", "max_batch_1"):
        m = ceiling["modes"][mode]
        assert m["sent"] == m["n_2xx"] == 32 and m["n_503"] == 0 and m["answered_rps"] > 0
        assert m["p50_ms"] <= m["p99_ms"] and m["server_cpu_ms_per_request"] > 0 and m["encode_batch_mean"] >= 1
    assert s["image_ceiling_ratio"] == pytest.approx(ceiling["modes"]["scheduler"]["answered_rps"]
                                                     / ceiling["modes"]["max_batch_1"]["answered_rps"])
    assert all(info["exit_code"] is not None for info in d["servers"].values())
    png = out / "results" / "serve-quick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


# ------------------------------------------------------------------ docs/RESULTS.md


def test_results_md_serve_tables_match_the_json(renderer: ModuleType):
    assert renderer.main(["--check"]) == 0, "run: python bench/results_serve.py"


def _fake_result() -> dict[str, Any]:
    over = {"offered_rps": 40.0, "achieved_rps": 21.0, "admitted_p99_ms": 180.0, "n_503": 150, "sent": 240,
            "rejected_fraction": 0.625, "p99_503_ms": 4.5, "max_503_ms": 9.0, "n_5xx": 0, "timeouts": 0}
    per = {"scheduler": {"image": {"limit_ms": 200.0, "qps_at_limit": 19.5, "p99_ms_at_limit": 150.0, "overload": over},
                         "ref": {"limit_ms": 50.0, "qps_at_limit": 1200.0, "p99_ms_at_limit": 31.0, "overload": None}},
           "max_batch_1": {"image": {"limit_ms": 200.0, "qps_at_limit": 15.0, "p99_ms_at_limit": 120.0, "overload": None},
                           "ref": {"limit_ms": 50.0, "qps_at_limit": 1000.0, "p99_ms_at_limit": 40.0, "overload": None}}}
    summary = {"latency_target_ms": 200.0, "image_qps_at_target_scheduler": 19.5, "image_qps_at_target_max_batch_1": 15.0,
               "ratio": 1.3, "ratio_target": 0.927, "encoder_curve_best_ratio": 1.03, "encoder_curve_best_size": 4,
               "encoder_curve_measured": "in this run", "ref_qps_at_50ms_p99": 1200.0,
               "ref_p99_limit_ms": 50.0, "overload_offered_rps": 40.0, "overload_503_p99_ms": 4.5, "overload_503_count": 150,
               "admitted_p99_at_2x_ms": 180.0, "five_xx_total": 0, "rss_growth_pct": 2.25, "rss_before_mb": 600.0,
               "rss_after_mb": 613.5, "generator_cpu_share": 0.08,
               "targets": {"image_ratio": True, "ref_1000_rps_at_50ms": True, "admitted_p99_at_2x_within_target": True,
                           "overload_503_within_20ms": True, "zero_5xx": True, "rss_growth_below_10pct": True}}
    metrics = {"scheduler": {"image": {"batch_size": {"encode": {"count": 10, "mean": 3.5, "p99_le": "8.0"}}}}}
    ceiling = {"concurrency": 16, "requests": 480, "latency_target_ms": 60000.0, "ratio": 1.1428,
               "modes": {"scheduler": {"answered_rps": 40.0, "p99_ms": 650.0, "encode_batch_mean": 7.0,
                                       "server_cpu_ms_per_request": 47.0},
                         "max_batch_1": {"answered_rps": 35.0, "p99_ms": 520.0, "encode_batch_mean": 1.08,
                                         "server_cpu_ms_per_request": 52.5}}}
    return {"summary": summary, "per_mode": per, "ceiling": ceiling,
            "config": {"kinds": ["image", "ref"], "rss_requests": 5000},
            "metrics": metrics, "git": {"commit": "abcdef1234", "src_dirty": False}, "collection": {"indexed": 35, "segments": 900},
            "provenance": {"started_utc": "2026-12-01T10:00:00+00:00", "duration_s": 700.0,
                           "load_start": {"loadavg_1_5_15": [0.2, 0.3, 0.4], "cpu_pressure_some": {"avg10": 1.5}}}}


def test_the_image_target_comes_from_this_runs_curve_not_the_file(bench: ModuleType):
    own = {"best_ratio": 1.32, "best_size": 8}
    assert bench.encoder_curve({"encoder_curve": own}) == {"file": None, "measured": "in this run", "best_ratio": 1.32,
                                                          "best_size": 8}
    committed = json.loads((bench.C.BENCH_DIR / "results" / "encoder-batch.json").read_text())
    assert bench.encoder_curve({}) == {"file": "bench/results/encoder-batch.json", "measured": "read from the file",
                                       "best_ratio": committed["best_ratio"], "best_size": committed["best_size"],
                                       "commit": committed["git"]["commit"], "timestamp_utc": committed["timestamp_utc"]}


def test_the_renderer_reads_the_figures_it_shows(renderer: ModuleType, tmp_path: Path):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(_fake_result()))
    lines = renderer.render(path).splitlines()
    assert "| image (JPEG/PNG frame) | 200 | 19.5 (150.0) | 15.0 (120.0) | 1.30x | 3.5 (p99 <= 8) | 40.0, 180.0, 150/240, 4.5 |" in lines
    assert "| stored range (`ref`) | 50 | 1,200.0 (31.0) | 1,000.0 (40.0) | 1.20x | - | -, -, -, - |" in lines
    assert ("| image queries: scheduler / `--max-batch 1` throughput at p99 <= 200 ms, >= 0.93x (0.9 x the encoder "
            "curve's best 1.03x at batch 4, measured in this run before the servers started) | 1.30x (19.5 / 15.0 "
            "req/s) | met |") in lines
    assert "| server RSS grows < 10 % over 5,000 requests after warm-up | +2.2 % (600 -> 614 MiB) | met |" in lines
    assert ("Ceiling (after the sweep, each server alone with a 60 s latency target so that nothing is refused, 480 "
            "image queries closed loop at concurrency 16): scheduler 40.0 req/s (p99 650.0 ms, encode batches of 7.0 "
            "frames, 47.0 ms of CPU a request), `--max-batch 1` 35.0 req/s (p99 520.0 ms, 52.5 ms of CPU a request): "
            "1.14x at any latency.") in lines
    assert lines[2].startswith("Run of 2026-12-01T10:00:00+00:00: commit abcdef12 (src dirty: False), load at start 0.2")


def test_updated_appends_the_section_once_then_replaces_the_block(renderer: ModuleType, tmp_path: Path):
    path = tmp_path / "serve.json"
    fake = _fake_result()
    path.write_text(json.dumps(fake))
    doc = "# Results\n\n## 9. Something\ntext\n"
    once = renderer.updated(doc, path)
    assert once.startswith(doc) and once.count(renderer.BEGIN) == 1 and "## 10. Serving" in once
    assert renderer.updated(once, path) == once
    fake["summary"]["targets"]["zero_5xx"], fake["summary"]["five_xx_total"] = False, 3
    path.write_text(json.dumps(fake))
    again = renderer.updated(once, path)
    assert again.count("## 10. Serving") == 1 and "| zero 5xx over the sweep | 3 | **missed** |" in again
