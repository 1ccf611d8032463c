"""bench/ingest.py's "hd" object and bench/latency.py's clip720 query: the shapes other checks depend on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benchload import load_bench


def test_ingest_hd_object_has_exactly_the_three_speeds_per_size() -> None:
    ingest = load_bench("ingest")
    summary, details = ingest.bench_hd(["720p"], seconds=2, repeats=1, techniques=["default", "skip_nonref"],
                                       threads_grid=False)
    assert list(summary) == ["720p"]
    assert set(summary["720p"]) == {"video_s_per_wall_s", "decode_only", "encode_only"}
    assert all(isinstance(v, float) and v > 0 for v in summary["720p"].values())
    d = details["files"]["720p"]
    assert d["frames_sampled"] == 2 and d["bound"] in ("encode", "decode")
    tech = d["techniques"]
    assert tech["default"]["identical_to_every_frame_decode"] is True
    assert 0.5 < tech["skip_nonref"]["sscd_cosine_to_exact"]["p1"] <= 1.0


def test_latency_offers_a_10_s_720p_clip_query(tmp_path: Path) -> None:
    from vidsearch.decode import probe

    latency = load_bench("latency")
    assert latency.QUERIES == ("clip", "clip720", "image", "stored")
    queries = latency.make_queries(tmp_path, ["clip720", "stored"], Path("unused.mp4"), Path("unused.mp4"), 3.0,
                                   "0123456789ab")
    assert queries["stored"] == "0123456789ab@20-30"
    info = probe(queries["clip720"])
    assert (info.width, info.height, info.codec) == (1280, 720, "h264") and abs(info.duration - 10.0) < 0.05


@pytest.mark.parametrize("argv, expected", [(["--hd-only"], ["clip720"]), (["--queries", "image,stored"], ["image", "stored"])])
def test_latency_query_selection(monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: list[str]) -> None:
    latency = load_bench("latency")
    monkeypatch.setattr(sys, "argv", ["latency.py", *argv])
    assert latency.parse_args().queries == expected


@pytest.mark.slow  # ~15-20 s; test_latency_offers_a_10_s_720p_clip_query runs the script in the fast suite
def test_latency_runs_end_to_end_on_a_partial_collection(tmp_path: Path) -> None:
    """The script's whole path (it had broken twice against the engine unnoticed): two videos, one round, a light
    query encoder; a partial run says so."""
    import json
    import os
    import subprocess

    bench = Path(__file__).resolve().parents[2] / "bench"
    env = {**os.environ, "VIDSEARCH_BENCH_RESULTS": str(tmp_path)}
    run = subprocess.run([sys.executable, str(bench / "latency.py"), "--footage", "2", "--queries", "image,stored",
                          "--repeats", "1", "--warmups", "0", "--wait-quiet", "0", "--query-encoder", "sscd-distilled",
                          "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "latency-q-sscd-distilled.json").read_text())
    assert doc["partial"] and "footage" in doc["missing"] and doc["collection"]["videos"] == 2
    assert set(doc["queries"]) == {"image", "stored"}
    assert doc["queries"]["image"]["top1"] == "bigbuckbunny.mp4" and doc["queries"]["stored"]["top1"] == "demo.mp4"
    assert doc["config"]["search_params"]["query_encoder"] == "sscd-distilled"
