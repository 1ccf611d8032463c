"""docs/RESULTS.md section 13's Spark table must equal bench/results/spark-ingest.json."""

from __future__ import annotations

import json
from pathlib import Path

from results_doc import marked_cells

ROOT = Path(__file__).resolve().parents[2]


def test_the_spark_table_matches_its_result_file() -> None:
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    rows = marked_cells("spark-ingest-table")
    data = json.loads((ROOT / "bench" / "results" / "spark-ingest.json").read_text())
    single, spark = data["single"], data["spark"]
    assert rows[0][1:3] == [f"{single['best_wall_s']:.1f}", f"{single['video_s_per_wall_s']:.1f}"]
    assert rows[1][1:3] == [f"{spark['best_wall_s']:.1f}", f"{spark['video_s_per_wall_s']:.1f}"]
    stats = spark["stats"][0]
    assert f"{stats['partitions']} partitions, {stats['worker_processes']} Python workers" in rows[1][3]
    assert f"paid {spark['first_run_extra_s (worker start + model load)']:.1f} s more" in rows[1][3]
    assert data["equality"]["equal_within_1e-5"] and f"{data['throughput_ratio_spark_over_single']:.2f}" in doc
