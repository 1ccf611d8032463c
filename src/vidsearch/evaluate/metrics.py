"""Retrieval metrics as plain functions over (ground truth, ranking/scores).

Definitions:
- AP (Wu et al., 2007, CC_WEB_VIDEO): AP = 1/n * sum_i i / r_i, where r_i is the 1-based rank of
  the i-th relevant item retrieved and n the number of relevant items in the ground truth
  (relevant items never retrieved add 0). mAP is the mean over queries.
- uAP (micro AP, VSC22 descriptor track): every (query, reference, score) prediction of every query
  pooled into one list sorted by score; AP over that one precision-recall curve, recall relative to
  all ground-truth pairs.
- P/R/F1@k over the top k; accuracy@k (hit rate): 1 if any of the top k is relevant.
- recall@k of an approximate search: |approx top-k ∩ exact top-k| / k, tie-tolerant when the
  exact distances are given (an approximate neighbour at the k-th exact distance counts).
- temporal IoU of two time ranges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, ShapeError


def average_precision(ranking: Sequence[Hashable], relevant: Iterable[Hashable]) -> float:
    """AP of one ranked list (best first) against the set of relevant items (Wu et al. 2007)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    hits = 0
    total = 0.0
    seen: set[Hashable] = set()
    for rank, item in enumerate(ranking, start=1):
        if item in rel and item not in seen:
            seen.add(item)
            hits += 1
            total += hits / rank
    return total / len(rel)


def mean_average_precision(rankings: Sequence[Sequence[Hashable]], relevants: Sequence[Iterable[Hashable]]) -> float:
    """Mean of :func:`average_precision` over queries (0.0 for no query)."""
    if len(rankings) != len(relevants):
        raise ShapeError(f"got {len(rankings)} rankings for {len(relevants)} ground-truth sets; expected one "
                         "ground-truth set per ranking (same order)")
    if not rankings:
        return 0.0
    return float(np.mean([average_precision(r, g) for r, g in zip(rankings, relevants)]))


def micro_average_precision(
    scores: Sequence[float], is_true: Sequence[bool], n_ground_truth: int
) -> float:
    """uAP: AP of all predictions pooled and sorted by score (VSC22).

    Args:
        scores: one score per predicted (query, reference) pair, higher is more confident.
        is_true: whether each predicted pair is a ground-truth pair.
        n_ground_truth: number of ground-truth pairs (the recall denominator), predicted or not.
    """
    s, t = _pooled(scores, is_true)
    if n_ground_truth <= 0:
        return 0.0
    order = np.argsort(-s, kind="stable")
    t = t[order]
    tp = np.cumsum(t)
    precision = tp / np.arange(1, len(t) + 1)
    return float((precision * t).sum() / n_ground_truth)


def precision_recall_curve(
    scores: Sequence[float], is_true: Sequence[bool], n_ground_truth: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(precision, recall, thresholds) of pooled predictions, sorted by decreasing score."""
    s, t = _pooled(scores, is_true)
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(t[order])
    precision = tp / np.arange(1, len(t) + 1)
    recall = tp / max(n_ground_truth, 1)
    return precision, recall, s[order]


def _pooled(scores: Sequence[float], is_true: Sequence[bool]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(N,) float64 scores and (N,) bool labels of pooled predictions, checked to pair up."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(is_true, dtype=bool).reshape(-1)
    if len(s) != len(t):
        raise ShapeError(f"got {len(s)} scores and {len(t)} true/false labels; expected one label per score")
    return s, t


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be >= 1 (the number of top results scored), got {k}")


def precision_at_k(ranking: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """Relevant items among the top k, divided by k."""
    _check_k(k)
    rel = set(relevant)
    return sum(1 for item in ranking[:k] if item in rel) / k


def recall_at_k(ranking: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """Relevant items among the top k, divided by the number of relevant items."""
    _check_k(k)
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(ranking[:k])) / len(rel)


def f1_at_k(ranking: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    rel = set(relevant)
    p, r = precision_at_k(ranking, rel, k), recall_at_k(ranking, rel, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def accuracy_at_k(ranking: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """1.0 when any of the top k is relevant (hit rate)."""
    _check_k(k)
    rel = set(relevant)
    return float(any(item in rel for item in ranking[:k]))


def knn_recall(
    approx_ids: NDArray[np.int64],
    exact_ids: NDArray[np.int64],
    k: int,
    approx_dist: NDArray[np.floating] | None = None,
    exact_dist: NDArray[np.floating] | None = None,
) -> float:
    """Mean recall@k of approximate neighbours against exact ones, (Q, >=k) arrays.

    With distances given (smaller is nearer), an approximate neighbour whose distance is within
    1e-6 relative of the exact k-th distance also counts: ties are not errors (faiss
    ``check_ref_knn_with_draws``).
    """
    _check_k(k)
    q = approx_ids.shape[0]
    if q == 0 or exact_ids.shape[0] != q:
        raise ShapeError(f"expected (Q, >=k) id arrays with the same Q >= 1, got {approx_ids.shape} approximate "
                         f"and {exact_ids.shape} exact")
    total = 0
    for i in range(q):
        truth = set(exact_ids[i, :k].tolist())
        got = approx_ids[i, :k]
        hits = sum(1 for j, x in enumerate(got) if x in truth)
        if approx_dist is not None and exact_dist is not None:
            kth = float(exact_dist[i, k - 1])
            tol = 1e-6 * max(abs(kth), 1.0)
            hits = sum(
                1 for j, x in enumerate(got) if x >= 0 and (x in truth or float(approx_dist[i, j]) <= kth + tol)
            )
        total += min(hits, k)
    return total / (q * k)


def temporal_iou(pred: tuple[float, float], true: tuple[float, float]) -> float:
    """Intersection over union of two [start, end] ranges in seconds (0 for no overlap)."""
    inter = max(0.0, min(pred[1], true[1]) - max(pred[0], true[0]))
    union = max(pred[1], true[1]) - min(pred[0], true[0])
    return inter / union if union > 0 else float(pred == true)


def by_class(values: Sequence[float], classes: Sequence[Hashable]) -> dict[Hashable, float]:
    """Mean of ``values`` per class."""
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for v, c in zip(values, classes):
        groups[c].append(v)
    return {c: float(np.mean(v)) for c, v in groups.items()}


def macro_mean(values: Sequence[float], classes: Sequence[Hashable]) -> float:
    """Mean over classes of the per-class mean (every class weighs the same)."""
    per = by_class(values, classes)
    return float(np.mean(list(per.values()))) if per else 0.0
