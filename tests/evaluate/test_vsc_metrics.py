"""VSC 2022 segment and pair micro-AP on hand-computed cases, CSV files, and (where pandas and
scikit-learn are installed and a copy of facebookresearch/vsc2022 is at hand) agreement with the
reference implementation on seeded random cases."""

from __future__ import annotations

import importlib.util
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from vidsearch.evaluate.vsc_metrics import (
    GROUND_TRUTH_COLUMNS,
    PREDICTION_COLUMNS,
    Match,
    PairPrediction,
    VSCDataError,
    pair_micro_ap,
    pairs_from_matches,
    read_matches,
    segment_micro_ap,
    write_matches,
)


def m(q: str, r: str, qs: float, qe: float, rs: float, re: float, score: float = 1.0) -> Match:
    return Match(q, r, qs, qe, rs, re, score)


GT = [m("Q1", "R1", 0, 10, 0, 10)]


def test_perfect_predictions_score_one() -> None:
    gt = [m("Q1", "R1", 0, 10, 5, 15), m("Q2", "R2", 3, 8, 0, 5), m("Q2", "R3", 20, 30, 40, 50)]
    preds = [Match(**{**g.__dict__, "score": s}) for g, s in zip(gt, (0.9, 0.3, 0.6))]
    assert segment_micro_ap(gt, preds).ap == pytest.approx(1.0)
    assert pair_micro_ap(gt, preds).ap == pytest.approx(1.0)


def test_false_positive_above_the_true_one_halves_the_ap() -> None:
    # Group 1 (0.9): nothing matched, P=0, R=0. Group 2 (0.5): 10 s matched of 20 s predicted on each axis.
    preds = [m("Q2", "R1", 0, 10, 0, 10, 0.9), m("Q1", "R1", 0, 10, 0, 10, 0.5)]
    assert segment_micro_ap(GT, preds).ap == pytest.approx(0.5)
    assert pair_micro_ap(GT, preds).ap == pytest.approx(0.5)
    # Below the true one, the false positive costs nothing.
    low = [m("Q2", "R1", 0, 10, 0, 10, 0.1), m("Q1", "R1", 0, 10, 0, 10, 0.5)]
    assert segment_micro_ap(GT, low).ap == pytest.approx(1.0)
    assert pair_micro_ap(GT, low).ap == pytest.approx(1.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_ties_are_one_group_whatever_their_order(reverse: bool) -> None:
    # Two true pairs of 10 s. A (0.9) alone: P=1, R=0.5 -> +0.5. Then B (true) and C (false) tie at 0.5:
    # as one group P = 20/30, R = 1 -> +1/3 (B alone first would give 1.0, C first 5/6 as well).
    gt = [m("QA", "R1", 0, 10, 0, 10), m("QB", "R2", 0, 10, 0, 10)]
    tied = [m("QB", "R2", 0, 10, 0, 10, 0.5), m("QC", "R3", 0, 10, 0, 10, 0.5)]
    preds = [m("QA", "R1", 0, 10, 0, 10, 0.9)] + (tied[::-1] if reverse else tied)
    assert segment_micro_ap(gt, preds).ap == pytest.approx(0.5 + 1 / 3)
    assert pair_micro_ap(gt, preds).ap == pytest.approx(0.5 + 1 / 3)
    # All three tied: one group, P = 2/3, R = 1.
    flat = [Match(**{**p.__dict__, "score": 0.7}) for p in preds]
    assert segment_micro_ap(gt, flat).ap == pytest.approx(2 / 3)
    assert pair_micro_ap(gt, flat).ap == pytest.approx(2 / 3)


def test_overlapping_predictions_count_their_union_once() -> None:
    # 0-6 then 4-10: R 0.6 at P 1, then R 1 at P 1 (predicted time is the union, 10 s, not 12 s).
    preds = [m("Q1", "R1", 0, 6, 0, 6, 0.9), m("Q1", "R1", 4, 10, 4, 10, 0.8), m("Q1", "R1", 0, 10, 0, 10, 0.7)]
    result = segment_micro_ap(GT, preds)
    assert result.ap == pytest.approx(1.0)
    assert list(result.curve.recalls) == pytest.approx([0.6, 1.0])
    assert list(result.curve.scores) == pytest.approx([0.9, 0.8])
    # A prediction twice as long as the copy: P = 0.5 on each axis.
    assert segment_micro_ap(GT, [m("Q1", "R1", 0, 20, 0, 20)]).ap == pytest.approx(0.5)


def test_partial_overlap_on_one_axis() -> None:
    # Right query time, wrong reference time: the rectangles do not meet, so nothing is matched.
    wrong_ref = m("Q1", "R1", 0, 10, 20, 30, 0.9)
    assert segment_micro_ap(GT, [wrong_ref]).ap == 0.0
    # Followed by the true one: query axis P=10/10, R=1; reference axis predicted 0-10 and 20-30 = 20 s,
    # matched 10 s: P=0.5, R=1. P = sqrt(1 * 0.5).
    assert segment_micro_ap(GT, [wrong_ref, m("Q1", "R1", 0, 10, 0, 10, 0.5)]).ap == pytest.approx(math.sqrt(0.5))
    # Shifted by 5 s on the reference axis: query P=R=1, reference P=R=0.5 -> P=R=sqrt(0.5), AP=0.5.
    assert segment_micro_ap(GT, [m("Q1", "R1", 0, 10, 5, 15)]).ap == pytest.approx(0.5)


def test_no_predictions_score_zero() -> None:
    result = segment_micro_ap(GT, [])
    assert result.ap == 0.0 and len(result.curve.recalls) == 0
    assert pair_micro_ap(GT, []).ap == 0.0
    # Only wrong pairs: also zero.
    assert segment_micro_ap(GT, [m("Q1", "R2", 0, 10, 0, 10)]).ap == 0.0
    assert pair_micro_ap(GT, [m("Q1", "R2", 0, 10, 0, 10)]).ap == 0.0


def test_missed_copies_lower_the_recall() -> None:
    gt = [m("Q1", "R1", 0, 10, 0, 10), m("Q2", "R2", 0, 30, 0, 30)]
    # Only the 10 s copy found: segment recall 10/40 on each axis; pair recall 1/2.
    assert segment_micro_ap(gt, [m("Q1", "R1", 0, 10, 0, 10)]).ap == pytest.approx(0.25)
    assert pair_micro_ap(gt, [m("Q1", "R1", 0, 10, 0, 10)]).ap == pytest.approx(0.5)


def test_pair_micro_ap_takes_each_pairs_best_score() -> None:
    gt = [m("QA", "R1", 0, 5, 0, 5), m("QA", "R1", 20, 25, 30, 35)]  # two copies, one pair
    preds = [m("QA", "R1", 0, 5, 0, 5, 0.2), m("QC", "R3", 0, 5, 0, 5, 0.5), m("QA", "R1", 20, 25, 30, 35, 0.9)]
    assert pair_micro_ap(gt, preds).ap == pytest.approx(1.0)  # QA-R1 at 0.9 ranks above QC-R3
    pairs = pairs_from_matches(preds)
    assert pairs == [PairPrediction("QA", "R1", 0.9), PairPrediction("QC", "R3", 0.5)]
    assert pair_micro_ap(gt, pairs).ap == pytest.approx(1.0)
    assert pair_micro_ap(gt, [PairPrediction("QC", "R3", 0.5), PairPrediction("QA", "R1", 0.2)]).ap \
        == pytest.approx(0.5)


def test_invalid_input_is_refused() -> None:
    with pytest.raises(VSCDataError, match="at least one ground-truth"):
        segment_micro_ap([], [m("Q1", "R1", 0, 1, 0, 1)])
    with pytest.raises(VSCDataError, match="at least one ground-truth"):
        pair_micro_ap([], [])
    with pytest.raises(VSCDataError, match="finite"):
        segment_micro_ap(GT, [m("Q1", "R1", 0, 10, 0, 10, float("nan"))])
    with pytest.raises(VSCDataError, match="finite"):
        pair_micro_ap(GT, [PairPrediction("Q1", "R1", float("inf"))])
    with pytest.raises(ValueError, match="start <= end"):
        segment_micro_ap(GT, [m("Q1", "R1", 10, 0, 0, 10)])


def test_csv_round_trip_and_column_names(tmp_path: Path) -> None:
    gt = [m("Q000001", "R000002", 0.1, 2 / 3, 5, 15.25)]
    preds = [m("Q000001", "R000002", 0.1, 2 / 3, 5, 15.25, 0.123456789012345), m("Q000003", "R000002", 1, 2, 3, 4, -2)]
    gt_path = write_matches(tmp_path / "ground_truth.csv", gt, with_score=False)
    pred_path = write_matches(tmp_path / "predictions" / "vidsearch.csv", preds)
    assert gt_path.read_text().splitlines()[0] == ",".join(GROUND_TRUTH_COLUMNS)
    assert pred_path.read_text().splitlines()[0] == ",".join(PREDICTION_COLUMNS)
    assert read_matches(gt_path, ground_truth=True) == gt
    assert read_matches(pred_path) == preds
    with pytest.raises(VSCDataError, match="missing score"):
        read_matches(gt_path)  # a prediction file needs scores
    (tmp_path / "bad.csv").write_text("query_id,ref_id,query_start,query_end,ref_start,ref_end\nQ1,R1,0,x,0,1\n")
    with pytest.raises(VSCDataError, match="line 2"):
        read_matches(tmp_path / "bad.csv", ground_truth=True)


# --- agreement with the reference implementation -------------------------------------------------

REFERENCE_REPO = Path(os.environ.get("VSC2022_REPO", "/work/.mirror/facebookresearch+vsc2022/repo"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """facebookresearch/vsc2022's vsc/metrics.py, loaded from a local git copy (never committed here)."""
    for name in ("pandas", "sklearn", "matplotlib"):
        pytest.importorskip(name)
    if not REFERENCE_REPO.exists():
        pytest.skip(f"no copy of facebookresearch/vsc2022 at {REFERENCE_REPO} (set VSC2022_REPO)")
    try:
        source = subprocess.run(["git", "-C", str(REFERENCE_REPO), "show", "HEAD:vsc/metrics.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot read vsc/metrics.py from the vsc2022 copy")
    import matplotlib

    matplotlib.use("Agg")
    path = tmp_path_factory.mktemp("vsc2022") / "vsc_reference_metrics.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("vsc_reference_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vsc_reference_metrics"] = module
    spec.loader.exec_module(module)
    return module


def _random_case(rng: random.Random) -> tuple[list[Match], list[Match]]:
    queries = [f"Q{i:06d}" for i in range(6)]
    refs = [f"R{i:06d}" for i in range(5)]
    gt = []
    for q in queries[:4]:
        for _ in range(rng.randint(1, 2)):
            qs, rs, n = rng.randint(0, 40), rng.randint(0, 60), rng.randint(2, 15)
            gt.append(m(q, rng.choice(refs), qs, qs + n, rs, rs + n))
    preds = []
    for g in gt:  # noisy detections of the true copies
        for _ in range(rng.randint(0, 2)):
            j = [rng.uniform(-4, 4) for _ in range(4)]
            qs, qe = sorted((g.query_start + j[0], g.query_end + j[1]))
            rs, re = sorted((g.ref_start + j[2], g.ref_end + j[3]))
            preds.append(m(g.query_id, g.ref_id, qs, qe, rs, re, round(rng.uniform(0.3, 1.0), 1)))
    for _ in range(rng.randint(0, 8)):  # false positives, scores with ties
        qs, rs = rng.uniform(0, 50), rng.uniform(0, 70)
        n = rng.uniform(1, 12)
        preds.append(m(rng.choice(queries), rng.choice(refs), qs, qs + n, rs, rs + n, round(rng.uniform(0.0, 1.0), 1)))
    return gt, preds


def test_agrees_with_the_reference_implementation(reference) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20221)
    for case in range(300):
        gt, preds = _random_case(rng)
        ref_gt = [reference.Match(g.query_id, g.ref_id, 1.0, g.query_start, g.query_end, g.ref_start, g.ref_end)
                  for g in gt]
        ref_preds = [reference.Match(p.query_id, p.ref_id, p.score, p.query_start, p.query_end, p.ref_start,
                                     p.ref_end) for p in preds]
        expected_segment = reference.match_metric(ref_gt, ref_preds).ap
        assert segment_micro_ap(gt, preds).ap == pytest.approx(expected_segment, abs=1e-9), case
        if preds:
            expected_pair = reference.average_precision(reference.CandidatePair.from_matches(ref_gt),
                                                        reference.CandidatePair.from_matches(ref_preds)).ap
            assert pair_micro_ap(gt, preds).ap == pytest.approx(expected_pair, abs=1e-9), case
