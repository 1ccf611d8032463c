"""docs/RESULTS.md section 12's joint-DPQ table must equal bench/results/joint-dpq.json."""

from __future__ import annotations

import json
from pathlib import Path

from results_doc import marked_cells

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("apart", "joint", "shared model + LearnedPQ", "mean pooling + LearnedPQ")


def test_the_joint_dpq_table_matches_its_result_file() -> None:
    rows = marked_cells("joint-dpq-table")
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
