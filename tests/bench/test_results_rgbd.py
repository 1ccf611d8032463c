"""docs/RESULTS.md section 12's RGB-D table must be what evaluate/rgbd.py renders from its result file."""

from __future__ import annotations

from results_doc import marked_rows, result

from vidsearch.evaluate import rgbd


def test_the_rgbd_table_matches_its_result_file() -> None:
    doc = result("eval-rgbd-small/results.json")
    assert doc["size"] == "small" and doc["seed"] == 0 and doc["provenance"]["src_dirty"] is False
    assert marked_rows("rgbd-table") == [r.strip() for r in rgbd.markdown_table(doc).splitlines()[2:]]
    # the prose's claims: depth reaches the target, colour stays at chance, colour-only data ranks as before
    targets = rgbd.summary(doc)["targets"]
    assert targets == {"with_depth_motion_mAP_at_least_0.9": True, "colour_only_within_0.1_of_chance": True,
                       "colour_only_data_unchanged": True}
