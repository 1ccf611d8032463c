"""The synthetic RGB-D benchmark: colour carries no motion, depth does; the eval runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vidsearch import cli
from vidsearch.evaluate import rgbd


def test_the_colour_frames_do_not_depend_on_the_motion_but_the_depth_does() -> None:
    clips = [rgbd.render_clip(seed=4, index=7, motion=m, frames=6, size=48) for m in range(len(rgbd.MOTIONS))]
    assert all(np.array_equal(c.colour, clips[0].colour) for c in clips)
    assert len({c.appearance for c in clips}) == 1
    def nearest(depth: np.ndarray) -> np.ndarray:  # per frame: the sphere's nearest point (valid readings), mm
        return np.asarray([np.percentile(frame[frame > 0], 1) for frame in depth])

    toward, away, near, far = (nearest(c.depth) for c in clips)
    assert toward[0] > toward[-1] + 1000 and away[0] < away[-1] - 1000  # comes nearer; goes away
    assert np.all(np.diff(toward) < 0) and np.all(np.diff(away) > 0)
    assert near.max() < 1500 and far.min() > 2000 and np.ptp(near) < 150 and np.ptp(far) < 250  # stay


def test_eval_rgbd_tiny_end_to_end(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["eval", "rgbd", "--size", "tiny", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert list(summary["methods"]) == ["colour+mean", "colour+lstm", "depth+lstm", "rgbd-early+lstm", "rgbd-late"]
    for name in ("colour+lstm", "depth+lstm", "rgbd-early+lstm"):
        assert Path(doc["methods"][name]["training"]["model"]).is_file()  # exported, run by ONNX Runtime
    m = summary["methods"]
    # colour cannot see the motion (its frames are the same under every class): at chance whatever it learns
    chance = summary["motion_mAP_chance"]
    assert abs(m["colour+mean"]["motion_mAP"] - chance) < 0.12
    # even 4 epochs on 32 clips make depth tell the motions apart better than colour
    assert m["depth+lstm"]["motion_mAP"] > m["colour+mean"]["motion_mAP"] + 0.1
    # appearance is colour's: far above chance with colour; without depth, late fusion ranks as colour alone
    assert m["colour+mean"]["appearance_mAP"] > 2 * doc["methods"]["colour+mean"]["appearance"]["random_mAP"]
    assert summary["targets"]["colour_only_data_unchanged"] is True
    assert doc["colour_only"]["late_fusion_without_depth_appearance"]["mAP"] == m["colour+mean"]["appearance_mAP"]
    assert doc["methods"]["rgbd-late"]["training"]["depth_weight"] in rgbd.LATE_WEIGHTS
    assert "| rgbd-late" in rgbd.markdown_table(doc)
