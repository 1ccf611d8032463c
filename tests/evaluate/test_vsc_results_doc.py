"""docs/RESULTS.md's VSC tables are what bench/results/eval-vsc-*/results.json say (rendered by
``vsc_report.markdown_tables``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vidsearch.evaluate.vsc_report import markdown_tables

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- vsc-table:begin (\S+) \(vidsearch\.evaluate\.vsc_report\.markdown_tables\) -->\n\n(.*?)\n\n"
                   r"<!-- vsc-table:end -->", re.S)


def test_results_md_vsc_tables_match_their_json():
    blocks = BLOCK.findall((REPO / "docs" / "RESULTS.md").read_text())
    assert {name for name, _ in blocks} >= {"eval-vsc-small", "eval-vsc-small-peers"}
    for name, table in blocks:
        doc = json.loads((REPO / "bench" / "results" / name / "results.json").read_text())
        assert table == markdown_tables(doc), f"re-render docs/RESULTS.md's {name} table from its results.json"
