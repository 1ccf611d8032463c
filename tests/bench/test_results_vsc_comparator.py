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


def _split_rows() -> list[tuple[str, str, dict]]:
    """(training label, method, figures by seed and pooled) of the source-split runs, in the table's order."""
    one = json.loads((ROOT / "bench" / "results" / "vsc-comparator-split.json").read_text())
    three = json.loads((ROOT / "bench" / "results" / "vsc-comparator-split-3seeds.json").read_text())
    assert one["train_data"]["sources"] == three["train_data"]["sources"] == "train"
    assert not one["partial"] and not three["partial"]
    rows = []
    for run, label in ((one, "seed 1"), (three, "seeds 1-3")):
        for method in run["pooled"]["methods"]:
            if label == "seeds 1-3" and not method.startswith("vidsearch:learned"):
                # the same evaluation data and the same vote: the baselines of both runs are equal
                for seed, ev in run["evaluation"].items():
                    assert ev["methods"][method]["segment_micro_ap"] == one["evaluation"][seed]["methods"][method][
                        "segment_micro_ap"], (method, seed)
                continue
            rows.append((label if method.startswith("vidsearch:learned") else "-", method,
                         {**{s: e["methods"][method] for s, e in run["evaluation"].items()},
                          "pooled": run["pooled"]["methods"][method]}))
    return rows


def test_the_source_split_table_matches_its_result_files() -> None:
    rows = marked_cells("vsc-comparator-split-table")
    expected = _split_rows()
    assert len(rows) == len(expected)
    for row, (label, method, figures) in zip(rows, expected):
        seeds = [f"{figures[s]['segment_micro_ap']:.3f}" for s in ("0", "4", "5", "6")]
        pooled = figures["pooled"]
        assert row[1:] == [label, *seeds, f"{pooled['segment_micro_ap']:.3f} / {pooled['pair_micro_ap']:.3f}"], method
