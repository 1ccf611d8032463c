"""docs/RESULTS.md section 12's table must equal bench/results/fashion-temporal.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from results_doc import marked_rows, result

ROOT = Path(__file__).resolve().parents[2]


def test_the_temporal_table_matches_its_result_file() -> None:
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    table = re.search(r"<!-- fashion-temporal-table:begin -->(.*?)<!-- fashion-temporal-table:end -->", doc, re.S)
    assert table, "the fashion-temporal table markers are missing from docs/RESULTS.md"
    rows = [r.strip().strip("|").split("|") for r in table.group(1).strip().splitlines()[2:]]
    data = json.loads((ROOT / "bench" / "results" / "fashion-temporal.json").read_text())["moving"]
    assert [r[0].strip() for r in rows] == list(data)
    for cells, (name, m) in zip(rows, data.items()):
        labels = m["labels"]
        want = [f"{labels[k]['mAP']:.3f}" for k in ("direction_within_axis", "motion", "item_x_motion", "item")]
        assert [c.strip() for c in cells[1:5]] == want, name
        train = m.get("training", {}).get("train_s")
        assert cells[5].strip() == ("" if train is None else f"{train:.0f}"), name
        assert cells[6].strip() == f"{m['timing']['aggregate_vs_encode'] * 100:.2f} %", name


def test_the_seen_unseen_table_matches_its_result_file() -> None:
    rows = marked_rows("fashion-seen-table")
    data = result("fashion-temporal-seen-only.json")
    assert data["temporal_training"]["unseen_items"] == [7, 8, 9] and not data["git"]["src_dirty"]
    want = []
    for name, m in data["moving"].items():
        for part in ("seen", "unseen"):
            x, y = m["labels"][f"direction_within_axis_{part}"], m["labels"][f"motion_{part}"]
            want.append(f"| {name} | {part} | {x['mAP']:.3f} | {x['precision@5']:.3f} | {x['f1@5']:.3f} | "
                        f"{y['mAP']:.3f} | {y['precision@5']:.3f} |")
    assert rows == want
