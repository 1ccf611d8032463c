"""docs/RESULTS.md section 12's learned-comparator table must equal bench/results/vsc-comparator.json."""

from __future__ import annotations

import json
from pathlib import Path

from results_doc import marked_cells

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("vidsearch", "vidsearch:exact", "vidsearch:dtw", "vidsearch:bidtw", "vidsearch:learned",
           "vidsearch:learned@background10")


def test_the_comparator_table_matches_its_result_file() -> None:
    rows = marked_cells("vsc-comparator-table")
    data = json.loads((ROOT / "bench" / "results" / "vsc-comparator.json").read_text())
    ev = data["evaluation"]
    assert len(rows) == len(METHODS) and not data["partial"]
    for row, key in zip(rows, METHODS):
        a, b = ev["0"]["methods"][key], ev["4"]["methods"][key]
        assert row[1:] == [f"{a['segment_micro_ap']:.3f} / {a['pair_micro_ap']:.3f}",
                           f"{b['segment_micro_ap']:.3f} / {b['pair_micro_ap']:.3f}", f"{a['rerank_ms']['p50']:.2f}"], key
