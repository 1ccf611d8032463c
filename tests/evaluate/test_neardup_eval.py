"""`vidsearch eval neardup --size small` end to end, as CI runs it: real footage, real weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # 145 s; CI runs the same path end to end on a smaller real benchmark (test_eval_neardup_tiny)
def test_eval_neardup_small(tmp_path: Path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "vidsearch.cli", "eval", "neardup", "--size", "small", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["benchmark"] == "neardup" and summary["queries"] >= 60
    m = summary["methods"]["vidsearch-sscd"]
    # sane bounds (measured: see docs/RESULTS.md); a broken encoder, decoder or vote would fall far below
    assert m["mAP"] >= 0.9 and m["uAP"] >= 0.9 and m["P@1"] >= 0.9
    assert m["localization_tIoU"] >= 0.6
    assert m["nomatch_above_threshold"] <= 0.5
    doc = json.loads((out / "results.json").read_text())
    per = doc["methods"]["vidsearch-sscd"]["per_transform_mAP"]
    assert {"crop", "hflip", "text", "pip", "reversed", "transcode"} <= set(per)
    assert all(per[t] >= 0.5 for t in ("resize", "crop", "blur", "text", "transcode")), per
    html = (out / "report.html").read_text()
    assert html.count("<img src='data:image/png;base64,") >= 4
    # the record behind the figures: which code, when, on how loaded a machine; complete data
    assert doc["partial"] is False and doc["missing"] == {} and summary["partial"] is False
    prov = doc["provenance"]
    assert len(prov["git_commit"]) == 40 and isinstance(prov["src_dirty"], bool)
    assert doc["git"] == {"commit": prov["git_commit"], "src_dirty": prov["src_dirty"]}  # as the bench scripts write it
    assert prov["started_utc"] <= prov["finished_utc"] and prov["duration_s"] > 0
    assert all(len(prov[k]["loadavg_1_5_15"]) == 3 for k in ("load_start", "load_end"))
    assert "commit " + prov["git_commit"] in html


def test_eval_neardup_tiny(tmp_path: Path, monkeypatch, capsys):
    """`vidsearch eval neardup` end to end in CI time: the same code path as --size small (render edits of real
    footage, index, query, score, results.json with provenance, report.html) on one source, three edits, one
    distractor (and its crops) and one unrelated video, plus the photo and Fashion-MNIST no-match queries."""
    from vidsearch import cli
    from vidsearch.evaluate import neardup

    monkeypatch.setattr(neardup, "SOURCES", {"small": ["bikes.mp4"]})
    monkeypatch.setattr(neardup, "EDITS", ["resize", "hflip", "excerpt"])
    monkeypatch.setattr(neardup, "DISTRACTORS", ["v1.m4v"])
    monkeypatch.setattr(neardup, "UNRELATED", ["carphone_pristine.mp4"])
    out = tmp_path / "eval"
    assert cli.main(["eval", "neardup", "--size", "small", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    doc = json.loads((out / "results.json").read_text())
    assert summary["references"] == 4 and summary["partial"] is False  # bikes, v1 and its two crops
    m = doc["methods"]["vidsearch-sscd"]
    assert m["positive_queries"] == 3 and m["nomatch_queries"] >= 4
    assert m["mAP"] == 1.0 and m["P@1"] == 1.0, m["per_query"]  # easy edits of a 10 s clip: exact answers
    assert m["localization_tIoU"] >= 0.6 and m["failed_queries"] == {}
    assert max(m["scores"]["nomatch_top1"]) < min(m["scores"]["true"][:3] or [1.0])  # no-match scores below true ones
    prov = doc["provenance"]
    assert len(prov["git_commit"]) == 40 and prov["started_utc"] <= prov["finished_utc"]
    assert doc["git"] == {"commit": prov["git_commit"], "src_dirty": prov["src_dirty"]}
    assert all(len(prov[k]["loadavg_1_5_15"]) == 3 for k in ("load_start", "load_end"))
    html = (out / "report.html").read_text()
    assert html.count("<img src='data:image/png;base64,") >= 4 and "commit " + prov["git_commit"] in html


def _only(names: set[str]) -> dict[str, Path]:
    from vidsearch.evaluate import neardup

    everything = neardup._footage()  # read now, before the test replaces neardup._footage
    return {n: p for n, p in everything.items() if n in names}


def test_missing_footage_is_refused_with_how_to_install_it(tmp_path: Path, monkeypatch):
    from vidsearch.errors import VidsearchError
    from vidsearch.evaluate import neardup, samples

    footage = _only({"demo.mp4", "bikes.mp4"})
    monkeypatch.setattr(neardup, "_footage", lambda: footage)  # no opencv-doc, no perception
    with pytest.raises(samples.MissingDataError, match=r"Megamind\.avi \(from opencv-doc: apt-get install opencv-doc"):
        neardup.build_neardup(tmp_path / "data", "small", 0)
    assert not (tmp_path / "data" / "benchmark.json").exists()  # refused before rendering anything
    assert issubclass(samples.MissingDataError, VidsearchError)


def test_allow_partial_builds_without_the_missing_footage_and_says_so(tmp_path: Path, monkeypatch):
    from vidsearch.evaluate import neardup, samples

    monkeypatch.setattr(neardup, "SOURCES", {"small": ["bikes.mp4", "Megamind.avi"]})
    monkeypatch.setattr(neardup, "EDITS", ["resize"])
    monkeypatch.setattr(neardup, "DISTRACTORS", ["v1.m4v"])
    monkeypatch.setattr(neardup, "UNRELATED", [])
    footage = _only({"bikes.mp4"})
    monkeypatch.setattr(neardup, "_footage", lambda: footage)
    bench = neardup.build_neardup(tmp_path, "small", 0, allow_partial=True)
    assert bench.partial and set(bench.missing) >= {"Megamind.avi", "v1.m4v"}
    assert "perception" in bench.missing["v1.m4v"]
    assert [r.ref_id for r in bench.references] == ["bikes"]
    assert {q.qid for q in bench.queries if q.source} == {"bikes/resize"}
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["partial"] is True and "Megamind.avi" in saved["missing"]
    with pytest.raises(samples.MissingDataError):  # the partial render on disk is not reused as a complete one
        neardup.build_neardup(tmp_path, "small", 0)
