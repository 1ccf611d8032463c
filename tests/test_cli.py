"""The CLI, run as a user would (subprocesses), on real footage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def test_cli_import_is_light():
    code = "import sys, vidsearch.cli; print(any(m in sys.modules for m in ('torch', 'faiss', 'av', 'onnxruntime')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_index_search_info_remove(tmp_path: Path, footage):
    coll = tmp_path / "my collection"
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("bikes.mp4", "v1.m4v", "carphone_pristine.mp4"):
        (folder / name).symlink_to(footage[name])
    (folder / "notes.txt").write_text("not a video")  # ignored: folders yield media files only

    out = json.loads(run("index", "--collection", str(coll), "--json", "--fps", "1", str(folder)).stdout)
    assert out["summary"] == {"indexed": 3, "skipped": 0, "failed": 0}
    assert {Path(f["path"]).name for f in out["files"]} == {"bikes.mp4", "v1.m4v", "carphone_pristine.mp4"}
    assert all(set(f) >= {"path", "status", "video_id", "segments", "error"} for f in out["files"])

    again = json.loads(run("index", "-c", str(coll), "--json", str(footage["bikes.mp4"])).stdout)
    assert again["files"][0]["status"] == "skipped" and "already indexed" in again["files"][0]["error"]

    res = json.loads(run("search", "-c", str(coll), "-k", "2", "--json", str(footage["bikes.mp4"])).stdout)
    assert list(res) == ["query", "k", "results", "timings_ms"]
    assert res["k"] == 2 and len(res["results"]) == 2
    top = res["results"][0]
    assert list(top) == ["rank", "video_id", "path", "score", "matches"]
    assert Path(top["path"]).name == "bikes.mp4" and top["score"] > 0.95
    assert list(top["matches"][0]) == ["query_start", "query_end", "ref_start", "ref_end", "score"]
    assert list(res["timings_ms"]) == ["decode", "encode", "search", "total"]
    vid = top["video_id"]

    ref = json.loads(run("search", "-c", str(coll), "--json", f"{vid}@2-6").stdout)
    assert ref["results"][0]["video_id"] == vid
    # without the default insets and normalisation an exact copy scores its raw cosine, ~1, above the default
    raw = json.loads(run("search", "-c", str(coll), "-k", "1", "--json", "--no-insets", "--norm-beta", "0",
                         str(footage["bikes.mp4"])).stdout)["results"][0]
    assert raw["video_id"] == vid and raw["score"] > 0.99 and raw["score"] > top["score"]
    light = json.loads(run("search", "-c", str(coll), "-k", "1", "--json", "--query-encoder", "sscd-distilled",
                           str(footage["bikes.mp4"])).stdout)
    assert light["query_encoder"] == "sscd-distilled" and light["results"][0]["video_id"] == vid

    info = json.loads(run("info", "-c", str(coll), "--json").stdout)
    assert info["videos"] == 3 and info["config"]["encode"]["encoder"] == "sscd"
    human = run("search", "-c", str(coll), str(footage["bikes.mp4"])).stdout
    assert "bikes.mp4" in human

    removed = json.loads(run("remove", "-c", str(coll), "--json", vid).stdout)
    assert removed["removed"][0]["video_id"] == vid
    res = json.loads(run("search", "-c", str(coll), "--json", str(footage["bikes.mp4"])).stdout)
    assert vid not in [r["video_id"] for r in res["results"]]
    assert json.loads(run("info", "-c", str(coll), "--json").stdout)["videos"] == 2


def test_errors_are_messages_not_tracebacks(tmp_path: Path):
    proc = run("search", "-c", str(tmp_path), "--json", "x.mp4", check=False)
    assert proc.returncode == 2
    err = json.loads(proc.stdout)
    assert err["error"] == "CollectionError" and "not a vidsearch collection" in err["message"]
    proc = run("info", "-c", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no such collection" in proc.stderr


@pytest.mark.slow
def test_demo_finds_every_transformed_copy():
    out = json.loads(run("demo", "--json").stdout)
    assert out["failed"] == [] and out["indexed"] >= 10
    assert out["top1_accuracy"] == 1.0 and out["range_accuracy"] == 1.0, out["queries"]


def cli_json(capsys, *args: str):  # type: ignore[no-untyped-def]
    """``vidsearch ARGS --json`` in this process (the models stay loaded between calls): (exit code, JSON)."""
    from vidsearch import cli

    capsys.readouterr()
    code = cli.main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_calibrate_stores_the_par_threshold_that_search_uses(collection_copy: Path, footage, tmp_path: Path, capsys):
    coll = str(collection_copy)  # the session's real collection (bikes, bigbuckbunny, carphone, v1, demo), copied
    query = str(footage["rgb.m4v"])  # not in the collection: low scores
    code, loose = cli_json(capsys, "search", "-c", coll, "--rerank", "par", "--par-threshold", "-1", query)
    assert code == 0 and len(loose["results"]) >= 2
    best = loose["results"][0]["score"]
    code, out = cli_json(capsys, "calibrate", "-c", coll, "--par-threshold", f"{best + 0.01}")
    assert out["calibrated"] is True and abs(out["par_threshold"] - (best + 0.01)) < 1e-9
    assert cli_json(capsys, "search", "-c", coll, "--rerank", "par", query)[1]["results"] == []
    # from an eval's results.json: the method's calibrated threshold, encoder checked
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"benchmark": "neardup", "size": "small", "seed": 0, "methods": {
        "vidsearch-sscd:par": {"calibrated_threshold": 0.25}, "vidsearch-effnet-lite0:par": {"calibrated_threshold": 0.6}}}))
    code, out = cli_json(capsys, "calibrate", "-c", coll, "--from-eval", str(results))
    assert out["par_threshold"] == 0.25 and "vidsearch-sscd:par" in out["source"]
    wrong = run("calibrate", "-c", coll, "--from-eval", str(results), "--method", "vidsearch-effnet-lite0:par",
                check=False)  # as a user sees it
    assert wrong.returncode == 2 and "not comparable" in wrong.stderr and "Traceback" not in wrong.stderr


def test_help_documents_the_exit_codes():
    out = run("--help").stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in out, code
    assert "error:" in out and "-v" in out
