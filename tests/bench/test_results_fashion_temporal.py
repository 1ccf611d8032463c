"""docs/RESULTS.md section 12's Moving Fashion-MNIST tables must equal their bench/results files."""

from __future__ import annotations

import pytest
from results_doc import marked_rows, result


@pytest.mark.parametrize("marker, name", [("fashion-temporal-table", "fashion-temporal.json"),
                                          ("fashion-flow-table", "fashion-temporal-flow.json"),
                                          ("fashion-flow-dis-table", "fashion-temporal-flow-dis.json"),
                                          ("fashion-flow-lk-table", "fashion-temporal-flow-lk.json")])
def test_the_temporal_tables_match_their_result_files(marker: str, name: str) -> None:
    rows = [r.strip("|").split("|") for r in marked_rows(marker)]
    data = result(name)["moving"]
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


def test_the_motion_collection_table_matches_its_result_file() -> None:
    data = result("motion.json")
    assert not data["git"]["src_dirty"] and not data["partial"]
    want = []
    for name, label in (("sample footage", "sample footage (15 files, 258 s)"), ("720p", "720p (20 s)")):
        r = data["results"][name]
        flow, none = r["flow"], r["none"]
        want.append(f"| {label} | {flow['frames']} | {flow['flow_s']:.3f} | {flow['frame_encode_s']:.2f} | "
                    f"{100 * r['flow_over_frame_encoding']:.2f} % | {r['decode_ratio_flow_over_none']:.3f} | "
                    f"{r['wall_ratio_flow_over_none']:.3f} |")
        assert round(none["duration_s"]) == (258 if name == "sample footage" else 20) and r["files"] == (15 if name == "sample footage" else 1)
    assert marked_rows("motion-collection-table") == want
