"""bench/segments.py's ground truth: which reference segments a query segment should retrieve."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
segments = pytest.importorskip("segments")


def _data(transform: str, ref_range: tuple[float, float], query_range: tuple[float, float],
          q_windows: list[tuple[float, float]]) -> dict:
    refs = [SimpleNamespace(ref_id="a"), SimpleNamespace(ref_id="b")]
    query = SimpleNamespace(transform=transform, source="b", ref_range=ref_range, query_range=query_range)
    # each reference: windows of 1 s every 0.25 s over 0..20 s
    starts = np.arange(0, 19.01, 0.25)
    win = np.concatenate([np.stack([starts, starts + 1], 1)] * 2)
    video = np.repeat([0, 1], len(starts))
    return {"bench": SimpleNamespace(references=refs, queries=[query]), "ref_win": win, "ref_video": video,
            "q_query": np.zeros(len(q_windows), int), "q_win": np.array(q_windows, float)}


def _centres(d: dict, rel: np.ndarray) -> list[float]:
    return sorted(float(c) for c in d["ref_win"][rel].mean(1))


def test_plain_copy_maps_by_offset_to_the_true_video_only() -> None:
    d = _data("blur", (10.0, 18.0), (0.0, 8.0), [(2.0, 3.0)])
    keep, rel = segments.ground_truth(d)
    assert keep.tolist() == [0]
    assert (d["ref_video"][rel[0]] == 1).all()
    # mapped window 12-13 s: windows starting 11.5 .. 12.5 overlap it with IoU >= 0.3
    assert _centres(d, rel[0]) == [12.0, 12.25, 12.5, 12.75, 13.0]


def test_reversed_and_speed_change_map_through_the_range() -> None:
    rev = _data("reversed", (10.0, 18.0), (0.0, 8.0), [(0.0, 1.0)])
    _, rel = segments.ground_truth(rev)
    assert 17.5 in _centres(rev, rel[0])  # the first query second is the last reference second
    fast = _data("speed-2x", (10.0, 18.0), (0.0, 4.0), [(1.0, 2.0)])
    _, rel = segments.ground_truth(fast)
    assert min(_centres(fast, rel[0])) >= 11.5 and max(_centres(fast, rel[0])) <= 14.5  # maps onto 12-14 s


def test_segments_outside_the_matching_range_do_not_count() -> None:
    d = _data("inserted", (10.0, 18.0), (4.0, 12.0), [(1.0, 2.0), (3.5, 4.5), (5.0, 6.0)])
    keep, _ = segments.ground_truth(d)
    assert keep.tolist() == [2]


def test_average_precision_matches_the_metrics_module() -> None:
    from vidsearch.evaluate.metrics import average_precision

    rng = np.random.default_rng(0)
    order = np.stack([rng.permutation(50) for _ in range(6)])
    relevant = [rng.choice(50, size=int(rng.integers(1, 6)), replace=False) for _ in range(6)]
    aps, rec = segments.ap_and_recall(order, relevant, k=10)
    for row, rel, got in zip(order, relevant, aps):
        assert got == pytest.approx(average_precision(row.tolist(), rel.tolist()))
    assert ((rec >= 0) & (rec <= 1)).all()
