"""docs/RESULTS.md's engine table is what bench/results/engine-*.json says (bench/results_engine.py renders it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("results_engine", BENCH / "results_engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_engine"] = module
    spec.loader.exec_module(module)
    return module


def test_results_md_engine_table_matches_the_json():
    module = _module()
    sys_argv = sys.argv
    sys.argv = ["results_engine.py", "--check"]
    try:
        assert module.main() == 0, "run: python bench/results_engine.py"
    finally:
        sys.argv = sys_argv


def test_the_renderer_reads_the_figures_it_shows(tmp_path: Path):
    module = _module()
    doc = {"summary": {"segments": 1000, "engine_p50_ms": 0.3, "engine_p99_ms": 0.9, "bare_index_p50_ms": 0.2,
                       "recall10": 0.99, "ram_bytes_per_vector": 44.4},
           "batch": {"best": {"batch_qps": 5000.0, "recall10": 0.985}},
           "faiss_ivfpq_refine": {"build_s": 30.0, "best": {"batch_qps": 4000.0, "recall10": 0.99}},
           "rebuild": {"index_build_s": 50.0}, "engine_open_s": 0.5,
           "provenance": {"load_start": {"loadavg_1_5_15": [0.2, 0.3, 0.4]}},
           "git": {"commit": "abcdef1234", "src_dirty": False}, "config": {}}
    (tmp_path / "engine-1000.json").write_text(json.dumps(doc))
    table = module.render(tmp_path)
    row = [line for line in table.splitlines() if line.startswith("| 1,000 ")][0]
    assert row == ("| 1,000 | 0.300 / 0.900 | 0.200 | 1.50x | 0.990 | 44.4 | 5000 (0.985) / 4000 (0.990) | 50 / 30 | "
                   "0.50 | 0.2 | abcdef12 (False) |")
