"""`vidsearch eval fashion --size small` end to end: files written, summary printed, sane bounds."""

import json

import pytest

from vidsearch import cli
from vidsearch.evaluate import fashion as fm

pytestmark = pytest.mark.skipif(
    not (fm.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist is not installed (make samples)",
)


def test_eval_fashion_small(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["eval", "fashion", "--size", "small", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    doc = json.loads((tmp_path / "results.json").read_text())
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "mAP by class" in html
    assert summary["benchmark"] == "fashion" and list(summary["methods"]) == ["sscd-distilled"]
    m = summary["methods"]["sscd-distilled"]
    chance = summary["chance_mAP"]
    # a real encoder retrieves clothing classes far above a random ranking, seen and unseen alike
    assert m["mAP"] > 3 * chance and m["mAP_unseen"] > 2 * chance
    assert m["P@5"] > 0.5
    # every query has the same number of relevant images (its class's 20), so per-query F1 is linear in the
    # hits and the mean F1@5 equals the F1 of the mean precision and recall
    p, r = m["P@5"], m["R@5"]
    assert m["F1@5"] == pytest.approx(2 * p * r / (p + r)) and r == pytest.approx(p * 5 / 20)
    # mean pooling sees the item but not the direction of motion: direction-within-axis at chance
    labels = doc["moving"]["sscd-distilled"]["labels"]
    assert m["moving_item_mAP"] > 2 * labels["item"]["random_mAP"]
    assert abs(m["moving_direction_within_axis_mAP"] - labels["direction_within_axis"]["random_mAP"]) < 0.1
    assert doc["dataset"]["sha256"] and doc["config"]["gallery"] == 20
    assert doc["git"] == {"commit": doc["provenance"]["git_commit"], "src_dirty": doc["provenance"]["src_dirty"]}
