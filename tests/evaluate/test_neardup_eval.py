"""`vidsearch eval neardup --size small` end to end, as CI runs it: real footage, real weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
