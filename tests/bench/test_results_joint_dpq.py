"""docs/RESULTS.md section 12's joint-DPQ table must equal bench/results/joint-dpq.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("apart", "joint", "shared model + LearnedPQ", "mean pooling + LearnedPQ")


def test_the_joint_dpq_table_matches_its_result_file() -> None:
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    table = re.search(r"<!-- joint-dpq-table:begin -->(.*?)<!-- joint-dpq-table:end -->", doc, re.S)
    assert table, "the joint-dpq table markers are missing from docs/RESULTS.md"
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table.group(1).strip().splitlines()[2:]]
    data = json.loads((ROOT / "bench" / "results" / "joint-dpq.json").read_text())
    assert len(rows) == len(ARMS) and not data["partial"] and data["bytes_per_segment"] == 16
    for row, key in zip(rows, ARMS):
        r = data["arms"][key]
        p, v = r["plain"], r["reversed_distractors"]
        assert row[1:] == [f"{p['recall_pq@10']:.4f}", f"{p['recall_pq@1']:.4f}", f"{p['recall_float@10']:.4f}",
                           f"{v['recall_pq@1']:.4f}", f"{v['recall_float@1']:.4f}",
                           f"{r['train_seconds']:.1f} + {r['pq_seconds']:.1f}"], key
    # the prose's claim: joint above apart at recall@10 by ADC
    assert data["arms"]["joint"]["plain"]["recall_pq@10"] > data["arms"]["apart"]["plain"]["recall_pq@10"]
