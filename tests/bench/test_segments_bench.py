"""bench/segments.py's ground truth: which reference segments a query segment should retrieve."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from benchload import load_bench

segments = load_bench("segments")


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
    for row, rel, got in zip(order, relevant, rec):  # recall@10: relevant among the first 10, over min(10, |rel|)
        assert got == pytest.approx(np.isin(row[:10], rel).sum() / min(10, len(rel)))


def test_recall_and_ap_hand_computed() -> None:
    order = np.array([[3, 0, 1, 2, 4], [4, 3, 2, 1, 0]])
    relevant = [np.array([3, 1]), np.array([0])]
    aps, rec = segments.ap_and_recall(order, relevant, k=2)
    assert aps.tolist() == pytest.approx([(1 / 1 + 2 / 3) / 2, 1 / 5])
    assert rec.tolist() == [0.5, 0.0]


def test_exact_ranking_finds_every_relevant_segment_and_a_coarse_code_fewer() -> None:
    """What the benchmark measures, on data where the answer is known: each query is a noisy copy of
    two reference vectors (its relevant set). Exact inner-product ranking puts both first (AP and
    recall@10 exactly 1); ranking by the signs of the first 16 dimensions (a 2-byte code) loses some,
    and of the first 8 (1 byte) more."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 64)).astype(np.float32)
    pairs = np.repeat(base[:100], 2, axis=0) + 0.05 * rng.standard_normal((200, 64)).astype(np.float32)
    xb = np.concatenate([pairs, base[100:]])
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = base[:100] + 0.6 * rng.standard_normal((100, 64)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    relevant = [np.array([2 * i, 2 * i + 1]) for i in range(100)]

    exact = np.argsort(-(xq @ xb.T), axis=1, kind="stable")
    aps, rec = segments.ap_and_recall(exact, relevant, k=10)
    assert aps.mean() == 1.0 and rec.mean() == 1.0

    def sign_code_map(dims: int) -> tuple[float, float]:
        order = np.argsort(-(np.sign(xq[:, :dims]) @ np.sign(xb[:, :dims]).T), axis=1, kind="stable")
        a, r = segments.ap_and_recall(order, relevant, k=10)
        return float(a.mean()), float(r.mean())

    map16, rec16 = sign_code_map(16)
    map8, rec8 = sign_code_map(8)
    chance = float(np.mean(segments.ap_and_recall(rng.permuted(exact, axis=1), relevant, k=10)[0]))
    assert chance < map8 < map16 < 0.9 and rec8 < rec16 < 1.0, (chance, map8, map16, rec8, rec16)


def test_result_files_carry_provenance_and_say_when_partial(tmp_path: Path, monkeypatch) -> None:
    """bench/_common: every result file records the commit, dirty src/, UTC start and end, load at start
    and end, and whether data was missing."""
    common = sys.modules["_common"]  # the module bench/segments.py imported
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    payload = {"figures": [1.0], **common.header("toy", {"n": 1}, missing={"box.mp4": "apt-get install opencv-doc"})}
    doc = json.loads(common.write_result("toy", payload).read_text())
    prov = doc["provenance"]
    assert set(prov) >= {"git_commit", "src_dirty", "started_utc", "finished_utc", "load_start", "load_end"}
    assert len(prov["git_commit"]) == 40 and isinstance(prov["src_dirty"], bool)
    assert prov["started_utc"] <= prov["finished_utc"]
    assert len(prov["load_start"]["loadavg_1_5_15"]) == len(prov["load_end"]["loadavg_1_5_15"]) == 3
    assert doc["partial"] is True and doc["missing"] == {"box.mp4": "apt-get install opencv-doc"}
    complete = json.loads(common.write_result("toy2", common.header("toy2", {})).read_text())
    assert complete["partial"] is False and complete["missing"] == {}
