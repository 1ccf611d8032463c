"""docs/RESULTS.md section 13's PWA table must equal bench/results/fashion-pwa.json and eval-vsc-small-pwa."""

from __future__ import annotations

import json
from pathlib import Path

from results_doc import marked_cells

ROOT = Path(__file__).resolve().parents[2]


def test_the_pwa_table_matches_its_result_files() -> None:
    rows = marked_cells("pwa-table")
    fashion = json.loads((ROOT / "bench" / "results" / "fashion-pwa.json").read_text())
    vsc = json.loads((ROOT / "bench" / "results" / "eval-vsc-small-pwa" / "results.json").read_text())
    assert len(rows) == 2
    for row, name in zip(rows, ("effnet-lite0", "effnet-lite0-pwa")):
        r, m = fashion["retrieval"]["encoders"][name], fashion["moving"][name]["labels"]
        s = vsc["methods"][f"vidsearch-{name}"]
        assert row[0].startswith(name)
        assert row[1] == f"{r['overall']['mAP']:.3f} ({r['seen']['mAP']:.3f} / {r['unseen']['mAP']:.3f})"
        assert row[2] == f"{m['item']['mAP']:.3f} / {m['motion']['mAP']:.3f}"
        assert row[3] == f"{s['segment_micro_ap']:.3f} / {s['pair_micro_ap']:.3f}"
    assert vsc["seed"] == 0 and not vsc["partial"] and not fashion["partial"]
