"""VSC 2022 metrics: the matching track's segment micro-AP and the descriptor track's pair micro-AP.

Written from the challenge's definitions (Pizzi et al., "The 2023 Video Similarity Dataset and
Challenge", 2023, sec. 4; VCSL's segment precision and recall, He et al. 2022) and checked against
the reference implementation, ``vsc/metrics.py`` of facebookresearch/vsc2022 (MIT): on seeded random
cases both give the same numbers (``tests/evaluate/test_vsc_metrics.py``, run where pandas and
scikit-learn are installed). No code is copied from it; plain Python and numpy only (no pandas).

**Segment micro-AP** (matching track, :func:`segment_micro_ap`). A match is a rectangle
``[query_start, query_end] x [ref_start, ref_end]`` of one (query, reference) pair. All predicted
matches of all queries are pooled and sorted by score, best first; predictions with the *same*
score are added together as one group (the result does not depend on their order). After each
group, on each axis (query time and reference time) separately:

- matched time = length of (union of the pair's predicted intervals) intersected with (union of
  the pair's ground-truth intervals whose rectangle overlaps, with positive area, some predicted
  rectangle of that pair so far), summed over pairs;
- precision = matched time / length of the union of predicted intervals (summed over pairs,
  including pairs with no ground truth); recall = matched time / length of the union of
  ground-truth intervals (summed over all ground-truth pairs).

The two axes are combined by geometric mean, ``P = sqrt(P_query * P_ref)``,
``R = sqrt(R_query * R_ref)``, and ``AP = sum over groups of P * (R - R_previous)``. A prediction
that overlaps a true copy in query time only (not as a rectangle) matches nothing, as in the
reference (which takes ground-truth rectangles into account only once a prediction overlaps them).

**Pair micro-AP** (descriptor track, and the matching track's auxiliary metric,
:func:`pair_micro_ap`). Each (query, reference) pair counts once, with the highest score of its
predictions; pairs are sorted by score, ties as one group (scikit-learn's
``average_precision_score`` over distinct thresholds, which the reference uses), and
``AP = sum over groups of precision * (true pairs in the group / all ground-truth pairs)``. Ground
truth pairs never predicted lower the AP through the recall denominator (the DrivenData rescaling).

Differences from the reference, none of which changes a result on valid input: it takes the
per-pair maximum as ``max(score, 0.0)`` (so negative scores become 0); this module keeps the true
maximum. It divides by zero when a prediction group has zero total length; here such a group has
precision 0 (its recall gain is 0 as well, so the AP is the same). Invalid input (NaN or infinite
scores, ``end < start``, empty ground truth) raises :class:`VSCDataError` instead of an assertion.

Files: ``ground_truth.csv`` has the columns ``query_id,ref_id,query_start,query_end,ref_start,ref_end``
and ``predictions/<method>.csv`` the same plus ``score`` (:func:`write_matches`, :func:`read_matches`).
The reference reads ids as strings that start with ``Q`` (queries) and ``R`` (references), e.g.
``Q000012`` and ``R000345``; files meant for it must use such ids.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import VidsearchError

GROUND_TRUTH_COLUMNS = ("query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end")
"""Columns of ``ground_truth.csv``, in VSC's names and order."""
PREDICTION_COLUMNS = GROUND_TRUTH_COLUMNS + ("score",)
"""Columns of ``predictions/<method>.csv``."""


class VSCDataError(VidsearchError, ValueError):
    """Matches or a match file that cannot be scored (bad column, NaN score, end before start...)."""


@dataclass(frozen=True)
class Match:
    """One copied (ground truth) or predicted segment: query time range, reference time range, in seconds.

    ``score`` is the prediction's confidence (higher is more confident); ground truth uses 1.0.
    """

    query_id: str
    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float = 1.0

    @property
    def pair(self) -> tuple[str, str]:
        """The (query_id, ref_id) pair this match belongs to."""
        return (self.query_id, self.ref_id)

    def overlaps(self, other: Match) -> bool:
        """Whether the two rectangles (query x reference time) intersect with positive area."""
        dq = min(self.query_end, other.query_end) - max(self.query_start, other.query_start)
        dr = min(self.ref_end, other.ref_end) - max(self.ref_start, other.ref_start)
        return dq > 0 and dr > 0


@dataclass(frozen=True)
class PairPrediction:
    """A predicted (query, reference) pair with its score (descriptor track)."""

    query_id: str
    ref_id: str
    score: float


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Points of a precision-recall curve, one per score group that raised the recall.

    Attributes:
        precisions: float64 array (n,), precision after each such group.
        recalls: float64 array (n,), recall after it (non-decreasing).
        scores: float64 array (n,), the group's score (non-increasing).
    """

    precisions: NDArray[np.float64]
    recalls: NDArray[np.float64]
    scores: NDArray[np.float64]


@dataclass(frozen=True)
class AveragePrecision:
    """A micro-AP and the curve it sums over."""

    ap: float
    curve: PrecisionRecallCurve = field(repr=False)


def _check(matches: Iterable[Match], what: str) -> list[Match]:
    out = list(matches)
    for m in out:
        values = (m.query_start, m.query_end, m.ref_start, m.ref_end, m.score)
        if not all(math.isfinite(v) for v in values):
            raise VSCDataError(f"{what}: every time and score must be a finite number, found {m}; "
                               "drop or fix that row")
        if m.query_end < m.query_start or m.ref_end < m.ref_start:
            raise VSCDataError(f"{what}: expected start <= end on both axes, found {m}; swap or drop that row")
    return out


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of closed intervals."""
    total = 0.0
    cur_start = cur_end = None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total


def _intersection_length(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """|union(a) ∩ union(b)| = |A| + |B| - |A ∪ B|."""
    return _union_length(a) + _union_length(b) - _union_length(a + b)


class _PairState:
    """Predictions so far of one (query, reference) pair, its ground truth, and its matched time per axis."""

    def __init__(self) -> None:
        self.truths: list[Match] = []
        self.preds: list[Match] = []
        self.active: list[bool] = []  # ground truth overlapped (as a rectangle) by some prediction so far
        self.matched = [0.0, 0.0]  # query axis, reference axis
        self.predicted = [0.0, 0.0]

    def add(self, pred: Match) -> tuple[list[float], list[float]]:
        """Add one prediction; return the changes of (matched, predicted) time on both axes."""
        self.preds.append(pred)
        for i, gt in enumerate(self.truths):
            if not self.active[i] and gt.overlaps(pred):
                self.active[i] = True
        considered = [gt for gt, on in zip(self.truths, self.active) if on]
        d_matched, d_predicted = [], []
        for axis in (0, 1):
            p = [(m.query_start, m.query_end) if axis == 0 else (m.ref_start, m.ref_end) for m in self.preds]
            g = [(m.query_start, m.query_end) if axis == 0 else (m.ref_start, m.ref_end) for m in considered]
            matched, predicted = _intersection_length(p, g), _union_length(p)
            d_matched.append(matched - self.matched[axis])
            d_predicted.append(predicted - self.predicted[axis])
            self.matched[axis], self.predicted[axis] = matched, predicted
        return d_matched, d_predicted


def _score_groups(items: list[Match]) -> list[list[Match]]:
    """Items sorted by score, best first, grouped by equal score."""
    groups: list[list[Match]] = []
    for m in sorted(items, key=lambda x: -x.score):
        if groups and groups[-1][0].score == m.score:
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _curve(points: list[tuple[float, float, float]]) -> PrecisionRecallCurve:
    arr = np.array(points, dtype=np.float64).reshape(-1, 3)
    return PrecisionRecallCurve(precisions=arr[:, 0], recalls=arr[:, 1], scores=arr[:, 2])


def segment_micro_ap(ground_truth: Iterable[Match], predictions: Iterable[Match]) -> AveragePrecision:
    """VSC 2022 matching track's segment micro-AP (module docstring has the definition).

    Args:
        ground_truth: the copied segments (their ``score`` is ignored); at least one.
        predictions: predicted segments of any pairs, with scores; may be empty (AP 0).

    Returns:
        The AP in [0, 1] and its precision-recall curve.

    Raises:
        VSCDataError: no ground truth, a non-finite value, or an end before its start.
    """
    truths = _check(ground_truth, "ground truth")
    preds = _check(predictions, "predictions")
    if not truths:
        raise VSCDataError("segment_micro_ap needs at least one ground-truth match, found none; "
                           "check that the ground-truth file has rows")
    pairs: dict[tuple[str, str], _PairState] = {}
    for gt in truths:
        state = pairs.setdefault(gt.pair, _PairState())
        state.truths.append(gt)
        state.active.append(False)
    gt_length = [0.0, 0.0]
    for state in pairs.values():
        gt_length[0] += _union_length([(m.query_start, m.query_end) for m in state.truths])
        gt_length[1] += _union_length([(m.ref_start, m.ref_end) for m in state.truths])
    if gt_length[0] <= 0 or gt_length[1] <= 0:
        raise VSCDataError(f"the ground truth's total length must be positive on both axes, found query "
                           f"{gt_length[0]} s and reference {gt_length[1]} s; remove zero-length rows")

    matched, predicted = [0.0, 0.0], [0.0, 0.0]
    ap, recall = 0.0, 0.0
    points: list[tuple[float, float, float]] = []
    for group in _score_groups(preds):
        for pred in group:
            d_matched, d_predicted = pairs.setdefault(pred.pair, _PairState()).add(pred)
            for axis in (0, 1):
                matched[axis] += d_matched[axis]
                predicted[axis] += d_predicted[axis]
        recalls = [matched[a] / gt_length[a] for a in (0, 1)]
        precisions = [matched[a] / predicted[a] if predicted[a] > 0 else 0.0 for a in (0, 1)]
        new_recall = math.sqrt(recalls[0] * recalls[1])
        precision = math.sqrt(precisions[0] * precisions[1])
        gain = new_recall - recall
        ap += precision * gain
        recall = new_recall
        if gain > 0:
            points.append((precision, recall, group[0].score))
    return AveragePrecision(ap=ap, curve=_curve(points))


def pairs_from_matches(matches: Iterable[Match]) -> list[PairPrediction]:
    """One prediction per (query, reference) pair, with the highest score of its matches (first-seen order)."""
    best: dict[tuple[str, str], float] = {}
    for m in matches:
        best[m.pair] = max(best.get(m.pair, -math.inf), m.score)
    return [PairPrediction(q, r, s) for (q, r), s in best.items()]


def pair_micro_ap(ground_truth: Iterable[Match | PairPrediction],
                  predictions: Iterable[Match | PairPrediction]) -> AveragePrecision:
    """VSC 2022 pair micro-AP over (query, reference) pairs (module docstring has the definition).

    Args:
        ground_truth: true matches or pairs; several matches of one pair count as one pair.
        predictions: predicted matches or pairs; a pair predicted several times counts once, with its
            highest score.

    Returns:
        The AP in [0, 1] and its precision-recall curve.

    Raises:
        VSCDataError: no ground truth, or a non-finite score.
    """
    true_pairs = {(p.query_id, p.ref_id) for p in ground_truth}
    if not true_pairs:
        raise VSCDataError("pair_micro_ap needs at least one ground-truth pair, found none; "
                           "check that the ground-truth file has rows")
    best: dict[tuple[str, str], float] = {}
    for p in predictions:
        if not math.isfinite(p.score):
            raise VSCDataError(f"predictions: every score must be a finite number, found {p}; drop or fix that row")
        key = (p.query_id, p.ref_id)
        best[key] = max(best.get(key, -math.inf), p.score)
    if not best:
        return AveragePrecision(ap=0.0, curve=_curve([]))
    keys = list(best)
    scores = np.array([best[k] for k in keys], dtype=np.float64)
    correct = np.array([k in true_pairs for k in keys], dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    scores, correct = scores[order], correct[order]
    # The last index of each group of equal scores: precision and recall are read there.
    ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    true_so_far = np.cumsum(correct)[ends]
    precision = true_so_far / (ends + 1)
    recall = true_so_far / len(true_pairs)
    gain = np.diff(np.r_[0.0, recall])
    ap = float(np.sum(precision * gain))
    keep = gain > 0
    return AveragePrecision(ap=ap, curve=PrecisionRecallCurve(precisions=precision[keep], recalls=recall[keep],
                                                              scores=scores[ends][keep]))


def _fmt(x: float) -> str:
    return repr(float(x))


def write_matches(path: str | os.PathLike[str], matches: Sequence[Match], *, with_score: bool = True) -> Path:
    """Write matches as a VSC CSV, atomically: with ``score`` for predictions, without for ground truth.

    Times and scores are written with full precision (``repr``), so reading gives the same floats.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    columns = PREDICTION_COLUMNS if with_score else GROUND_TRUTH_COLUMNS
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for m in matches:
            row = [m.query_id, m.ref_id, _fmt(m.query_start), _fmt(m.query_end), _fmt(m.ref_start), _fmt(m.ref_end)]
            w.writerow(row + [_fmt(m.score)] if with_score else row)
    os.replace(tmp, path)
    return path


def read_matches(path: str | os.PathLike[str], *, ground_truth: bool = False) -> list[Match]:
    """Read a VSC CSV (columns by name, any order, extra columns ignored).

    Args:
        path: ``ground_truth.csv`` or ``predictions/<method>.csv``.
        ground_truth: when true, ``score`` may be absent and is set to 1.0 (as the reference does).

    Raises:
        VSCDataError: a missing column, or a value that is not a number.
    """
    required = GROUND_TRUTH_COLUMNS if ground_truth else PREDICTION_COLUMNS
    out: list[Match] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise VSCDataError(f"{path}: expected the columns {', '.join(required)}, missing {', '.join(missing)} "
                               f"(found {reader.fieldnames}); write it with write_matches")
        for line, row in enumerate(reader, start=2):
            try:
                times = [float(row[c]) for c in GROUND_TRUTH_COLUMNS[2:]]
                score = 1.0 if ground_truth else float(row["score"])
            except (TypeError, ValueError) as e:
                raise VSCDataError(f"{path}, line {line}: expected numbers for the times and score, found "
                                   f"{row}; fix that row") from e
            out.append(Match(row["query_id"], row["ref_id"], times[0], times[1], times[2], times[3], score))
    return _check(out, str(path))
