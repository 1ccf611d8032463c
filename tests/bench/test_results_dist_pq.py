"""docs/RESULTS.md section 13's distributed-PQ table must equal bench/results/dist-pq.json."""

from __future__ import annotations

import json
from pathlib import Path

from results_doc import marked_cells

ROOT = Path(__file__).resolve().parents[2]


def test_the_distributed_pq_table_matches_its_result_file() -> None:
    rows = marked_cells("dist-pq-table")
    data = json.loads((ROOT / "bench" / "results" / "dist-pq.json").read_text())
    methods = data["methods"]
    assert len(rows) == len(methods) == 3
    for row, (name, r) in zip(rows, methods.items()):
        assert row[1:] == [f"{r['recall_at_10']:.4f}", f"{r['recall_10_at_100']:.4f}", f"{r['recall_10_at_500']:.4f}",
                           f"{r['mse_per_vector']:.5f}", f"{r['train_s']:.1f}", f"{r['encode_s']:.1f}"], name
    assert data["config"]["n"] == 1_000_000 and not data.get("partial")
    assert abs(data["vs_faiss_sample"]["dpq_spark"]["recall_delta"]) <= 0.01
