"""Segment hits -> ranked videos with matched time ranges (temporal Hough voting).

Each query segment's nearest reference segments vote for (video, time offset) where
offset = reference start - query start. A copy of a reference part shows up as many query
segments agreeing on one offset; the video's score is the mean, over all query segments, of the
best similarity found at that offset (so a 3-segment query matching 3 of 3 segments at 0.9
scores 0.9, matching 1 of 3 scores 0.3). Consecutive query segments along an offset become one
matched time range. Written here because no library does exactly this (``_vote_loop`` states it as a
plain loop); DTW-based alignment for speed changes and reversals comes as a re-ranker.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

try:  # numba is a dependency; without it the kernel runs as plain Python (correct, much slower)
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is missing
    def njit(*args, **kwargs):  # type: ignore[no-redef]  # stands in for numba's njit when numba is missing
        return lambda f: f

from vidsearch.search.results import Match


@dataclass(frozen=True)
class SegmentTable:
    """Reference segment metadata indexed by segment id (row of the segment vector file).

    Attributes:
        video: (R,) int32 index into ``video_ids`` (-1 for removed rows).
        start, end: (R,) float64 segment times in seconds.
        video_ids: the videos' ids, in the order ``video`` refers to.
    """

    video: NDArray[np.int32]
    start: NDArray[np.float64]
    end: NDArray[np.float64]
    video_ids: list[str]

    @functools.cached_property
    def id_rank(self) -> NDArray[np.int64]:
        """(V,) each video's position in the sorted ids (equal scores rank by id), computed once per table."""
        rank = np.empty(len(self.video_ids), np.int64)
        rank[np.argsort(np.array(self.video_ids, dtype=str), kind="stable")] = np.arange(len(self.video_ids))
        return rank


class VideoVote(NamedTuple):
    """One voted video: its score and matched ranges (a NamedTuple: cheap to make, see ``results.Match``)."""

    video_id: str
    score: float
    matches: list[Match]


def vote(
    query_starts: NDArray[np.float64],
    query_ends: NDArray[np.float64],
    hit_ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32],
    table: SegmentTable,
    bin_seconds: float,
    min_similarity: float = 0.0,
    max_matches: int = 5,
    limit: int | None = None,
    raw_scores: NDArray[np.float32] | None = None,
) -> list[VideoVote]:
    """Vote (Q, K) segment hits into videos, best first.

    ``limit``: return only the best ``limit`` videos (their matched ranges are the costly part:
    with 100 hits per query segment most hit videos are never shown).

    Args:
        query_starts, query_ends: (Q,) query segment times in seconds.
        hit_ids: (Q, K) reference segment ids, -1 where padded.
        hit_scores: (Q, K) cosine similarities.
        table: reference segment metadata.
        bin_seconds: width of an offset bin (the segment stride); offsets in neighbouring bins agree.
        min_similarity: hits below this do not vote (compared with ``raw_scores`` when given).
        max_matches: matched ranges reported per video at most.
        raw_scores: (Q, K) the hits' cosine similarities when ``hit_scores`` are normalised ones
            (:func:`~vidsearch.search.engine.normalized_scores`): the normalised scores rank and score
            (which hit of a cell, bin and range scores, videos' order), the raw ones decide which hits
            vote and which query segments belong to a matched range (a normalised score says how much
            better than unrelated footage a hit is, not whether a segment continues a copy). None: the
            same as ``hit_scores``.
    """
    ids = np.asarray(hit_ids, np.int64)
    if ids.size == 0 or len(query_starts) == 0:
        return []
    raw = hit_scores if raw_scores is None else raw_scores
    if ids.shape[0] == 1:
        vote_hits = _vote_single_compiled if KERNELS_READY.is_set() else _vote_single
    elif KERNELS_READY.is_set():
        vote_hits = _vote_arrays
    else:  # loading the compiled kernels takes ~0.3 s: answer this one with the loop, load them meanwhile
        _load_kernels_in_background()
        vote_hits = _vote_loop
    return vote_hits(query_starts, query_ends, ids, hit_scores, table, bin_seconds, min_similarity, max_matches, limit,
                     raw)


# Fast implementations of one vote, equal in every output to the plain loop that states it (``_vote_loop``;
# tests/search/test_vote.py checks each against it on seeded cases):
# - one query segment (an image, a short range: the most common query): without per-segment bookkeeping, in
#   plain Python (``_vote_single``) until the process has loaded the compiled kernels, so a one-shot CLI search
#   never loads compiled code (~0.7 s from numba's cache under load) for a ~30 us vote; compiled
#   (``_vote_single_compiled``) once they are loaded (a server, a benchmark, an eval: ``load_kernels``): 13 us
#   against 26 us for 10 hits on the 1M-segment bench collection (one-off, load ~1), most of it Python glue;
# - several: compiled (numba). One-off timings under load on the 1M-segment bench collection: 10 s ranges
#   (9 segments x 100 hits) 0.20 ms against numpy's 1.1 ms and the loop's 2.2 ms; already at 2 x 10 hits
#   0.04 ms against the loop's 0.23 ms, most of it finding the matched ranges of the shown videos.
# Loading the kernels from numba's cache takes ~0.3 s (more when they compile): a process's first searches of
# several segments take the loop while a thread loads them (a new reader's first answer: 0.31 s, 0.79 s before).
KERNELS_READY = threading.Event()
_loading = threading.Lock()
_loader: threading.Thread | None = None


def load_kernels() -> None:
    """Load (or compile) the compiled vote now, in this thread; later votes of several segments use it."""
    table = SegmentTable(np.zeros(2, np.int32), np.zeros(2), np.ones(2), ["a"])
    q = np.zeros(2)
    _vote_arrays(q, q + 1, np.zeros((2, 2), np.int64), np.ones((2, 2), np.float32), table, 1.0, 0.0, 1, 1,
                 np.ones((2, 2), np.float32))
    one = np.ones((1, 2), np.float32)
    _vote_single_compiled(q[:1], q[:1] + 1, np.zeros((1, 2), np.int64), one, table, 1.0, 0.0, 1, 1, one)
    KERNELS_READY.set()


def _load_kernels_in_background() -> None:
    global _loader
    with _loading:
        if _loader is None:
            _loader = threading.Thread(target=load_kernels, name="vidsearch-vote-kernels", daemon=True)
            _loader.start()


def _vote_single(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None, raw_scores: NDArray[np.float32],
) -> list[VideoVote]:
    """``vote`` for one query segment: a bin's score is its best hit (of the bin and its +-1 neighbours),
    and every matched range spans the whole query segment."""
    row_ids, row_scores = ids[0].tolist(), np.asarray(hit_scores[0], np.float64).tolist()
    row_raw = row_scores if raw_scores is hit_scores else np.asarray(raw_scores[0], np.float64).tolist()
    n_rows = len(table.video)
    sids, scores = [], []
    for sid, score, raw in zip(row_ids, row_scores, row_raw):
        if 0 <= sid < n_rows and not raw < min_similarity:
            sids.append(sid)
            scores.append(score)
    if not sids:
        return []
    videos = table.video[sids].tolist()
    r_starts = table.start[sids].tolist()
    r_ends = table.end[sids].tolist()
    q0, q1 = float(query_starts[0]), float(query_ends[0])
    # (video, offset bin) -> its best hit (the first of equal scores, as the loop)
    cells: dict[tuple[int, int], int] = {}
    for i, (v, r0) in enumerate(zip(videos, r_starts)):
        if v < 0:
            continue
        key = (v, int(round((r0 - q0) / bin_seconds)))
        best = cells.get(key)
        if best is None or scores[i] > scores[best]:
            cells[key] = i
    # merge each bin with its neighbours (+-1): the best hit of the three, ties to the lower offset; a video's
    # candidates as (-score, offset, hit) so that a plain sort puts the best first, then the lower offset
    per_video: dict[int, list[tuple[float, int, int]]] = {}
    get = cells.get
    for v, off in cells:
        merged = get((v, off - 1), -1)
        for i in (get((v, off), -1), get((v, off + 1), -1)):
            if i >= 0 and (merged < 0 or scores[i] > scores[merged]):
                merged = i
        per_video.setdefault(v, []).append((-scores[merged], off, merged))
    ranked = []
    for v, candidates in per_video.items():
        candidates.sort()
        ranked.append((candidates[0][0], table.video_ids[v], candidates))
    ranked.sort(key=lambda r: (r[0], r[1]))
    q_len = q1 - q0
    spans_time = q1 > q0  # an image query (0 s) overlaps nothing, so all its ranges are kept
    votes: list[VideoVote] = []
    for neg_best, video_id, candidates in ranked[:limit]:
        best_score = -neg_best
        matches: list[Match] = []
        kept: list[tuple[float, float]] = []  # reference ranges kept so far
        for neg_score, _off, i in candidates:
            score = -neg_score
            if score < 0.75 * best_score or len(matches) >= max_matches:
                break
            r0 = r_starts[i]
            r1 = r_ends[i] if q_len <= 0 else min(r_ends[i], r0 + q_len)  # _mapped_end, inlined
            # every range spans the same query time: two overlap (``_overlaps``) exactly where their reference times do
            if spans_time:
                clash = False
                for k0, k1 in kept:
                    if r0 < k1 and k0 < r1:
                        clash = True
                        break
                if clash:
                    continue
            kept.append((r0, r1))
            matches.append(Match(q0, q1, r0, r1, score))
        votes.append(VideoVote(video_id, best_score, matches))
    return votes


def _vote_single_compiled(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None, raw_scores: NDArray[np.float32],
) -> list[VideoVote]:
    """``_vote_single`` in one compiled call (:func:`_single_kernel`), once a process has loaded it."""
    row = np.ascontiguousarray(ids[0], np.int64)
    scores = np.ascontiguousarray(hit_scores[0], np.float64)
    raw = scores if raw_scores is hit_scores else np.ascontiguousarray(raw_scores[0], np.float64)
    q0, q1 = float(query_starts[0]), float(query_ends[0])
    videos, best, counts, r0, r1, ms = _single_kernel(
        row, scores, raw, table.video, table.start, table.end, table.id_rank, q0, q1, float(bin_seconds),
        float(min_similarity), int(max_matches), -1 if limit is None else int(limit))
    matches = [Match(q0, q1, a, b, s) for a, b, s in zip(r0.tolist(), r1.tolist(), ms.tolist())]
    names = table.video_ids
    votes: list[VideoVote] = []
    at = 0
    for v, score, n in zip(videos.tolist(), best.tolist(), counts.tolist()):
        votes.append(VideoVote(names[v], score, matches[at : at + n]))
        at += n
    return votes


@njit(cache=True, nogil=True)
def _single_kernel(ids, scores, raw, video_of, start_of, end_of, id_rank, q0, q1, bin_seconds, min_similarity,
                   max_matches, limit):  # pragma: no cover - numba
    """``_vote_single`` compiled: the hits of one query segment (``ids``, ``scores``, ``raw``: (K,)) -> the
    shown videos (``limit`` < 0: all) best first, then by id (``id_rank``), their best scores and match counts,
    and their matched reference ranges and scores, video after video (each spans the query segment)."""
    k = ids.shape[0]
    n_rows = video_of.shape[0]
    hv = np.empty(k, np.int64)
    hoff = np.empty(k, np.int64)
    hs = np.empty(k, np.float64)
    hr0 = np.empty(k, np.float64)
    hr1 = np.empty(k, np.float64)
    m = 0
    for j in range(k):
        sid = ids[j]
        if sid < 0 or sid >= n_rows or raw[j] < min_similarity:
            continue
        v = video_of[sid]
        if v < 0:
            continue
        hv[m] = v
        hoff[m] = np.int64(np.rint((start_of[sid] - q0) / bin_seconds))
        hs[m] = scores[j]
        hr0[m] = start_of[sid]
        hr1[m] = end_of[sid]
        m += 1
    e_i = np.empty(0, np.int64)
    e_f = np.empty(0, np.float64)
    if m == 0:
        return e_i, e_f, e_i, e_f, e_f, e_f
    lo = hoff[:m].min() - 1
    span = hoff[:m].max() - lo + 2  # offsets at 1 .. span-2: a cell's +-1 neighbours never cross videos
    key = hv[:m] * span + (hoff[:m] - lo)
    srt = np.argsort(key, kind="mergesort")  # stable: equal keys keep the hits' order
    # cells: each key's best hit, the first of equal scores
    cell_key = np.empty(m, np.int64)
    cell_hit = np.empty(m, np.int64)
    c = 0
    for t in range(m):
        h = srt[t]
        if c > 0 and cell_key[c - 1] == key[h]:
            if hs[h] > hs[cell_hit[c - 1]]:
                cell_hit[c - 1] = h
        else:
            cell_key[c] = key[h]
            cell_hit[c] = h
            c += 1
    # merge with the neighbours o-1, o, o+1 (ties: in that order)
    merged = np.empty(c, np.int64)
    mscore = np.empty(c, np.float64)
    for t in range(c):
        best = -1
        if t > 0 and cell_key[t - 1] == cell_key[t] - 1:
            best = cell_hit[t - 1]
        h = cell_hit[t]
        if best < 0 or hs[h] > hs[best]:
            best = h
        if t + 1 < c and cell_key[t + 1] == cell_key[t] + 1:
            h = cell_hit[t + 1]
            if hs[h] > hs[best]:
                best = h
        merged[t] = best
        mscore[t] = hs[best]
    # each video's cells best first, then the lower offset: cells are sorted by (video, offset) already
    by_score = np.argsort(-mscore, kind="mergesort")
    cv = np.empty(c, np.int64)
    for t in range(c):
        cv[t] = hv[cell_hit[t]]
    order = by_score[np.argsort(cv[by_score], kind="mergesort")]
    # video groups
    first = np.empty(c + 1, np.int64)
    g = 0
    for t in range(c):
        if t == 0 or cv[order[t]] != cv[order[t - 1]]:
            first[g] = t
            g += 1
    first[g] = c
    gbest = np.empty(g, np.float64)
    grank = np.empty(g, np.int64)
    for t in range(g):
        gbest[t] = mscore[order[first[t]]]
        grank[t] = id_rank[cv[order[first[t]]]]
    by_id = np.argsort(grank, kind="mergesort")
    ranked = by_id[np.argsort(-gbest[by_id], kind="mergesort")]
    n_shown = g if limit < 0 else min(limit, g)
    out_v = np.empty(n_shown, np.int64)
    out_best = np.empty(n_shown, np.float64)
    counts = np.zeros(n_shown, np.int64)
    m_r0 = np.empty(n_shown * max_matches, np.float64)
    m_r1 = np.empty(n_shown * max_matches, np.float64)
    m_s = np.empty(n_shown * max_matches, np.float64)
    q_len = q1 - q0
    n_out = 0
    for gi in range(n_shown):
        grp = ranked[gi]
        best_score = gbest[grp]
        out_v[gi] = cv[order[first[grp]]]
        out_best[gi] = best_score
        f0 = n_out
        for t in range(first[grp], first[grp + 1]):
            cell = order[t]
            score = mscore[cell]
            if score < 0.75 * best_score or n_out - f0 >= max_matches:
                break
            h = merged[cell]
            r0 = hr0[h]
            r1 = hr1[h] if q_len <= 0 else min(hr1[h], r0 + q_len)
            if q1 > q0:
                clash = False
                for o in range(f0, n_out):
                    if r0 < m_r1[o] and m_r0[o] < r1:
                        clash = True
                        break
                if clash:
                    continue
            m_r0[n_out] = r0
            m_r1[n_out] = r1
            m_s[n_out] = score
            n_out += 1
        counts[gi] = n_out - f0
    return out_v, out_best, counts, m_r0[:n_out], m_r1[:n_out], m_s[:n_out]


def _vote_arrays(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None, raw_scores: NDArray[np.float32],
) -> list[VideoVote]:
    """``vote`` compiled: the cells, their merge and the ranking (:func:`_vote_kernel`), then the matched
    ranges of the shown videos (:func:`_match_kernel`). Ties break as in the
    loop: the first hit (row-major) of a query segment in a cell wins, then the lower offset of the
    merge (o-1, o, o+1)."""
    q0 = np.ascontiguousarray(query_starts, np.float64)
    q1 = np.ascontiguousarray(query_ends, np.float64)
    shape = (ids.shape[0], -1)
    (bin_video, bin_off, bin_score, bin_first, cell_qi, cell_score, cell_raw, cell_sid, order, video_first,
     ranked) = _vote_kernel(np.ascontiguousarray(ids, np.int64).reshape(shape),
                            np.ascontiguousarray(hit_scores, np.float64).reshape(shape),
                            np.ascontiguousarray(raw_scores, np.float64).reshape(shape),
                            table.video, table.start, q0, float(bin_seconds), float(min_similarity),
                            table.id_rank)
    if len(ranked) == 0:
        return []
    shown = ranked[:limit] if limit is not None else ranked
    cell_r0 = table.start[cell_sid]
    cell_r1 = table.end[cell_sid]
    counts, mq0, mq1, mr0, mr1, ms = _match_kernel(
        shown, order, video_first, bin_score, bin_first, cell_qi, cell_score, cell_raw, cell_r0, cell_r1, q0, q1,
        int(max_matches))
    # plain lists: a few dozen values, where numpy per element is slower
    rows = zip(mq0.tolist(), mq1.tolist(), mr0.tolist(), mr1.tolist(), ms.tolist())
    matches = [Match(*row) for row in rows]
    votes: list[VideoVote] = []
    at = 0
    for g, n in zip(shown.tolist(), counts.tolist()):
        top = order[video_first[g]]
        votes.append(VideoVote(table.video_ids[int(bin_video[top])], float(bin_score[top]), matches[at : at + n]))
        at += n
    return votes


@njit(cache=True, nogil=True)
def _match_kernel(shown, order, video_first, bin_score, bin_first, cell_qi, cell_score, cell_raw, cell_r0, cell_r1,
                  q0, q1, max_matches):  # pragma: no cover - numba
    """The matched ranges of the ``shown`` video groups (``_vote_kernel``'s output), as the loop makes them:
    each video's bins best first while within 0.75 of its best score, each bin's runs (consecutive strong query segments, gaps of one allowed; see
    ``RUN_RELATIVE_MIN``) longest
    first, a range kept unless it overlaps one already kept, at most ``max_matches`` per video.

    Returns (counts per shown video, then query start, query end, reference start, reference end, score
    of the kept ranges, video after video)."""
    n_shown = shown.shape[0]
    counts = np.zeros(n_shown, np.int64)
    cap = n_shown * max_matches
    out = np.empty((cap, 5), np.float64)
    n_out = 0
    n_cells = cell_qi.shape[0]
    run_a = np.empty(n_cells + 1, np.int64)  # a run's cells: strong[run_a[r]:run_a[r + 1]]
    strong = np.empty(n_cells, np.int64)
    run_val = np.empty((n_cells, 5), np.float64)
    run_order = np.empty(n_cells, np.int64)
    for gi in range(n_shown):
        g = shown[gi]
        first_out = n_out
        best = bin_score[order[video_first[g]]]
        for t in range(video_first[g], video_first[g + 1]):
            b = order[t]
            if bin_score[b] < 0.75 * best or n_out - first_out >= max_matches:
                break
            lo, hi = bin_first[b], bin_first[b + 1]
            n_runs = 0
            if hi - lo == 1:
                qi = cell_qi[lo]
                run_val[0, 0] = q0[qi]
                run_val[0, 1] = q1[qi]
                run_val[0, 2] = cell_r0[lo]
                run_val[0, 3] = min(cell_r1[lo], cell_r0[lo] + (q1[qi] - q0[qi])) if q1[qi] - q0[qi] > 0 else cell_r1[lo]
                run_val[0, 4] = cell_score[lo]
                n_runs = 1
            else:
                peak = cell_raw[lo]
                for r in range(lo + 1, hi):
                    if cell_raw[r] > peak:
                        peak = cell_raw[r]
                n_strong = 0
                for r in range(lo, hi):
                    if cell_raw[r] >= RUN_RELATIVE_MIN * peak:
                        strong[n_strong] = r
                        n_strong += 1
                for i in range(n_strong):
                    if i == 0 or cell_qi[strong[i]] - cell_qi[strong[i - 1]] > 2:
                        run_a[n_runs] = i
                        n_runs += 1
                run_a[n_runs] = n_strong
                for rr in range(n_runs):
                    f, e = run_a[rr], run_a[rr + 1]
                    r_first, r_last = strong[f], strong[e - 1]
                    run_val[rr, 0] = q0[cell_qi[r_first]]
                    run_val[rr, 1] = q1[cell_qi[r_last]]
                    lo_r, hi_r, total = np.inf, -np.inf, 0.0
                    for i in range(f, e):
                        r = strong[i]
                        ql = q1[cell_qi[r]] - q0[cell_qi[r]]
                        mapped = min(cell_r1[r], cell_r0[r] + ql) if ql > 0 else cell_r1[r]
                        lo_r = min(lo_r, cell_r0[r])
                        hi_r = max(hi_r, mapped)
                        total += cell_score[r]
                    run_val[rr, 2] = lo_r
                    run_val[rr, 3] = hi_r
                    run_val[rr, 4] = total / (e - f)
            # longest first, then the higher score (a stable insertion sort, as Python's sort)
            for rr in range(n_runs):
                run_order[rr] = rr
            for i in range(1, n_runs):
                x = run_order[i]
                j = i - 1
                while j >= 0:
                    y = run_order[j]
                    lx = -(run_val[x, 1] - run_val[x, 0])
                    ly = -(run_val[y, 1] - run_val[y, 0])
                    if lx < ly or (lx == ly and -run_val[x, 4] < -run_val[y, 4]):
                        run_order[j + 1] = y
                        j -= 1
                    else:
                        break
                run_order[j + 1] = x
            for i in range(n_runs):
                if n_out - first_out >= max_matches:
                    break
                x = run_order[i]
                overlaps = False
                for o in range(first_out, n_out):
                    if (run_val[x, 2] < out[o, 3] and out[o, 2] < run_val[x, 3]
                            and run_val[x, 0] < out[o, 1] and out[o, 0] < run_val[x, 1]):
                        overlaps = True
                        break
                if not overlaps:
                    out[n_out, :] = run_val[x, :]
                    n_out += 1
        counts[gi] = n_out - first_out
    return counts, out[:n_out, 0].copy(), out[:n_out, 1].copy(), out[:n_out, 2].copy(), out[:n_out, 3].copy(), out[:n_out, 4].copy()


@njit(cache=True, nogil=True)
def _vote_kernel(ids, scores, raw, video_of, start_of, q_starts, bin_seconds, min_similarity, id_rank):  # pragma: no cover - numba
    """The counting part of the vote, compiled (numpy over ~900 hits took ~1.7 ms in ~40 array calls;
    this does the same work in one pass and two small sorts).

    Returns, over the voted bins (video, offset) sorted by (video, offset):
        bin_video, bin_off, bin_score: each bin's video, offset and score (mean over all query segments
            of their best merged similarity);
        bin_first: (bins + 1,) each bin's merged cells are ``cell_*[bin_first[b]:bin_first[b + 1]]``,
            one per query segment in ascending order (``cell_qi``, ``cell_score``, ``cell_raw``, ``cell_sid``);
        order: bin numbers grouped by video, each video's bins best first (then lower offset);
        video_first: (videos + 1,) video g's bins are ``order[video_first[g]:video_first[g + 1]]``;
        ranked: video groups g best first (then by id, ``id_rank``).
    """
    n_query, k = ids.shape
    n_rows = video_of.shape[0]
    n = n_query * k
    # the hits that vote, row-major
    hv = np.empty(n, np.int64)
    hoff = np.empty(n, np.int64)
    hq = np.empty(n, np.int64)
    hs = np.empty(n, np.float64)
    hraw = np.empty(n, np.float64)
    hsid = np.empty(n, np.int64)
    m = 0
    for q in range(n_query):
        for j in range(k):
            sid = ids[q, j]
            sc = scores[q, j]
            if sid < 0 or sid >= n_rows or raw[q, j] < min_similarity:
                continue
            v = video_of[sid]
            if v < 0:
                continue
            hv[m] = v
            hoff[m] = np.int64(np.rint((start_of[sid] - q_starts[q]) / bin_seconds))
            hq[m] = q
            hs[m] = sc
            hraw[m] = raw[q, j]
            hsid[m] = sid
            m += 1
    if m == 0:
        e_i = np.empty(0, np.int64)
        e_f = np.empty(0, np.float64)
        return e_i, e_i, e_f, np.zeros(1, np.int64), e_i, e_f, e_f, e_i, e_i, np.zeros(1, np.int64), e_i
    hv, hoff, hq, hs, hraw, hsid = hv[:m], hoff[:m], hq[:m], hs[:m], hraw[:m], hsid[:m]
    lo = hoff.min() - 1
    span = hoff.max() - lo + 2  # offsets sit at 1 .. span-2: a bin's +-1 neighbours never cross videos
    bin_key = hv * span + (hoff - lo)
    # cells (video, offset, query segment) in key order, each its best hit (the first on equal scores): one
    # unstable sort by key and a scan of its runs (two stable sorts, by score then by key, took 2x as long)
    key = bin_key * n_query + hq
    srt = np.argsort(key)
    cells = np.empty(m, np.int64)  # hit of each cell
    c = 0
    t = 0
    while t < m:
        h = srt[t]
        kk = key[h]
        best = h
        t += 1
        while t < m and key[srt[t]] == kk:
            h = srt[t]
            if hs[h] > hs[best] or (hs[h] == hs[best] and h < best):
                best = h
            t += 1
        cells[c] = best
        c += 1
    cells = cells[:c]
    cbin = bin_key[cells]
    # bins: runs of cells with one bin key
    starts = np.empty(c + 1, np.int64)
    nb = 0
    for t in range(c):
        if t == 0 or cbin[t] != cbin[t - 1]:
            starts[nb] = t
            nb += 1
    starts[nb] = c
    starts = starts[: nb + 1]
    # merge each bin with its neighbours: per query segment the best of the bins o-1, o, o+1 (ties: in that order)
    best_s = np.empty(n_query, np.float64)
    best_h = np.full(n_query, -1, np.int64)
    seen = np.empty(n_query, np.int64)
    bin_video = np.empty(nb, np.int64)
    bin_off = np.empty(nb, np.int64)
    bin_score = np.empty(nb, np.float64)
    bin_first = np.empty(nb + 1, np.int64)
    out_q = np.empty(3 * c, np.int64)
    out_s = np.empty(3 * c, np.float64)
    out_raw = np.empty(3 * c, np.float64)
    out_sid = np.empty(3 * c, np.int64)
    w = 0
    for b in range(nb):
        kb = cbin[starts[b]]
        n_seen = 0
        for nbk in range(3):
            src = b - 1 + nbk
            if src < 0 or src >= nb or cbin[starts[src]] != kb - 1 + nbk:
                continue
            for t in range(starts[src], starts[src + 1]):
                h = cells[t]
                q = hq[h]
                if best_h[q] < 0:
                    best_h[q] = h
                    best_s[q] = hs[h]
                    seen[n_seen] = q
                    n_seen += 1
                elif hs[h] > best_s[q]:
                    best_h[q] = h
                    best_s[q] = hs[h]
        for i in range(1, n_seen):  # the seen query segments in ascending order: an insertion sort in place
            q = seen[i]  # (a few per bin; np.sort's allocation per bin was 60 % of the kernel)
            j = i - 1
            while j >= 0 and seen[j] > q:
                seen[j + 1] = seen[j]
                j -= 1
            seen[j + 1] = q
        bin_first[b] = w
        total = 0.0
        for i in range(n_seen):
            q = seen[i]
            h = best_h[q]
            total += best_s[q]
            out_q[w] = q
            out_s[w] = best_s[q]
            out_raw[w] = hraw[h]
            out_sid[w] = hsid[h]
            w += 1
            best_h[q] = -1
        h0 = cells[starts[b]]
        bin_video[b] = hv[h0]
        bin_off[b] = hoff[h0]
        bin_score[b] = total / max(n_query, 1)
    bin_first[nb] = w
    # each video's bins best first, then the lower offset (bins are sorted by (video, offset) already)
    by_bin_score = np.argsort(-bin_score, kind="mergesort")
    order = by_bin_score[np.argsort(bin_video[by_bin_score], kind="mergesort")]
    video_first = np.empty(nb + 1, np.int64)
    g = 0
    for t in range(nb):
        if t == 0 or bin_video[order[t]] != bin_video[order[t - 1]]:
            video_first[g] = t
            g += 1
    video_first[g] = nb
    video_first = video_first[: g + 1]
    # videos best first, then by id
    best = np.empty(g, np.float64)
    rank = np.empty(g, np.int64)
    for t in range(g):
        bb = order[video_first[t]]
        best[t] = bin_score[bb]
        rank[t] = id_rank[bin_video[bb]]
    by_id = np.argsort(rank, kind="mergesort")
    ranked = by_id[np.argsort(-best[by_id], kind="mergesort")]
    return (bin_video, bin_off, bin_score, bin_first, out_q[:w], out_s[:w], out_raw[:w], out_sid[:w], order, video_first,
            ranked)


# A query segment belongs to a matched range only if its similarity at the range's offset is at
# least this fraction of the offset's best: every query segment has *some* nearest neighbour at
# the offset, and without this an excerpt inserted into unrelated footage matched the whole query.
RUN_RELATIVE_MIN = 0.6


def _mapped_end(ref_start: float, ref_end: float, query_length: float) -> float:
    """End of a reference window matched by a query window of ``query_length`` seconds: as long as
    the query window (a clipped last window, a short clip), or the whole window for an image (0 s)."""
    return ref_end if query_length <= 0 else min(ref_end, ref_start + query_length)


def _vote_loop(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None, raw_scores: NDArray[np.float32] | None = None,
) -> list[VideoVote]:
    """``vote`` as a plain loop over the hits (dicts of cells): the statement of the vote that the two fast
    implementations must equal (tests/search/test_vote.py), and the path of a process whose compiled kernels
    are not loaded yet (see :func:`vote`). ``raw_scores`` decide which hits vote and which query segments are
    strong enough for a range; ``hit_scores`` rank and score."""
    raw_scores = hit_scores if raw_scores is None else raw_scores
    n_query = len(query_starts)
    video_of, start_of, end_of = table.video, table.start, table.end
    # (video, offset bin) -> {query segment: (score, ref segment id, raw)} keeping the best per query segment
    bins: dict[tuple[int, int], dict[int, tuple[float, int, float]]] = {}
    n_rows = len(video_of)
    rows = zip(ids.tolist(), np.asarray(hit_scores).tolist(), np.asarray(raw_scores).tolist())
    for qi, (row_ids, row_scores, row_raw) in enumerate(rows):
        q_start = float(query_starts[qi])
        for sid, score, raw in zip(row_ids, row_scores, row_raw):
            if sid < 0 or raw < min_similarity or sid >= n_rows:
                continue
            v = int(video_of[sid])
            if v < 0:
                continue
            offset = int(round((float(start_of[sid]) - q_start) / bin_seconds))
            cell = bins.setdefault((v, offset), {})
            if qi not in cell or score > cell[qi][0]:
                cell[qi] = (float(score), int(sid), float(raw))
    # merge each bin with its neighbours (+-1), as _vote_arrays
    per_video: dict[int, list[tuple[float, int, dict[int, tuple[float, int, float]]]]] = {}
    for (v, off), cell in bins.items():
        merged: dict[int, tuple[float, int, float]] = {}
        for o in (off - 1, off, off + 1):
            for qi, hit in bins.get((v, o), {}).items():
                if qi not in merged or hit[0] > merged[qi][0]:
                    merged[qi] = hit
        score = sum(merged[qi][0] for qi in sorted(merged)) / max(n_query, 1)
        per_video.setdefault(v, []).append((score, off, merged))
    ranked = []
    for v, candidates in per_video.items():
        candidates.sort(key=lambda c: (-c[0], c[1]))
        ranked.append((candidates[0][0], table.video_ids[v], candidates))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    q_times = (np.asarray(query_starts, np.float64).tolist(), np.asarray(query_ends, np.float64).tolist())
    votes: list[VideoVote] = []
    for best_score, video_id, candidates in ranked[:limit]:
        matches: list[Match] = []
        for score, _off, merged in candidates:
            if score < 0.75 * best_score or len(matches) >= max_matches:
                break
            qis = sorted(merged)
            sids = [merged[qi][1] for qi in qis]
            r0 = [float(start_of[s]) for s in sids]
            r1 = [_mapped_end(r, float(end_of[s]), q_times[1][qi] - q_times[0][qi]) for r, s, qi in zip(r0, sids, qis)]
            cells = (qis, [merged[qi][0] for qi in qis], r0, r1, [merged[qi][2] for qi in qis])
            for m in _runs(cells, 0, len(qis), q_times):
                if len(matches) < max_matches and not any(_overlaps(m, other) for other in matches):
                    matches.append(m)
        votes.append(VideoVote(video_id, best_score, matches))
    return votes


def _runs(
    cell: tuple[list[int], list[float], list[float], list[float], list[float]],
    first: int,
    end: int,
    q_times: tuple[list[float], list[float]],
) -> list[Match]:
    """Consecutive strong query segments (gaps of one allowed) -> matched time ranges, longest first.

    ``cell[0..4][first:end]`` are one bin's query segments (ascending), scores, the
    start and mapped end (:func:`_mapped_end`) of the reference segment each matched. The reference range ends where the last
    query segment's window ends when laid on the reference (a query shorter than a window, or its
    clipped last window, maps to that many seconds of the reference, not to the reference's whole
    window; an image maps to its window), and raw similarities (which decide the strong segments).
    """
    qis, scores, r_start, r_end, raw = cell
    starts, ends = q_times
    if end - first == 1:  # one query segment at this offset (every hit of a one-segment query): one range
        qi = qis[first]
        return [Match(starts[qi], ends[qi], r_start[first], r_end[first], scores[first])]
    peak = max(raw[first:end])
    strong = [r for r in range(first, end) if raw[r] >= RUN_RELATIVE_MIN * peak]
    runs: list[list[int]] = []
    for r in strong:
        if runs and qis[r] - qis[runs[-1][-1]] <= 2:
            runs[-1].append(r)
        else:
            runs.append([r])
    out = []
    for run in runs:
        out.append(
            Match(
                query_start=starts[qis[run[0]]],
                query_end=ends[qis[run[-1]]],
                ref_start=min([r_start[r] for r in run]),
                ref_end=max([r_end[r] for r in run]),
                score=sum([scores[r] for r in run]) / len(run),
            )
        )
    out.sort(key=lambda m: (-(m.query_end - m.query_start), -m.score))
    return out


def _overlaps(a: Match, b: Match) -> bool:
    return a.ref_start < b.ref_end and b.ref_start < a.ref_end and a.query_start < b.query_end and b.query_start < a.query_end
