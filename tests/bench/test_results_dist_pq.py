"""docs/RESULTS.md section 13's distributed-PQ table must equal bench/results/dist-pq.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_distributed_pq_table_matches_its_result_file() -> None:
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    table = re.search(r"<!-- dist-pq-table:begin -->(.*?)<!-- dist-pq-table:end -->", doc, re.S)
    assert table, "the dist-pq table markers are missing from docs/RESULTS.md"
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table.group(1).strip().splitlines()[2:]]
    data = json.loads((ROOT / "bench" / "results" / "dist-pq.json").read_text())
    methods = data["methods"]
    assert len(rows) == len(methods) == 3
    for row, (name, r) in zip(rows, methods.items()):
        assert row[1:] == [f"{r['recall_at_10']:.4f}", f"{r['recall_10_at_100']:.4f}", f"{r['recall_10_at_500']:.4f}",
                           f"{r['mse_per_vector']:.5f}", f"{r['train_s']:.1f}", f"{r['encode_s']:.1f}"], name
    assert data["config"]["n"] == 1_000_000 and not data.get("partial")
    assert abs(data["vs_faiss_sample"]["dpq_spark"]["recall_delta"]) <= 0.01
