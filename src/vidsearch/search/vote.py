"""Segment hits -> ranked videos with matched time ranges (temporal Hough voting).

Each query segment's nearest reference segments vote for (video, time offset) where
offset = reference start - query start. A copy of a reference part shows up as many query
segments agreeing on one offset; the video's score is the mean, over all query segments, of the
best similarity found at that offset (so a 3-segment query matching 3 of 3 segments at 0.9
scores 0.9, matching 1 of 3 scores 0.3). Consecutive query segments along an offset become one
matched time range. Written here because it is a few lines of numpy over the hits and no library
does exactly this; DTW-based alignment for speed changes and reversals comes as a re-ranker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

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
        min_similarity: hits below this do not vote.
        max_matches: matched ranges reported per video at most.
    """
    ids = np.asarray(hit_ids, np.int64)
    if ids.size == 0 or len(query_starts) == 0:
        return []
    if ids.shape[0] == 1:
        vote_hits = _vote_single
    else:
        vote_hits = _vote_loop if ids.size <= SMALL_HITS else _vote_arrays
    return vote_hits(query_starts, query_ends, ids, hit_scores, table, bin_seconds, min_similarity, max_matches, limit)


# Three implementations of one vote, equal in every output (tests/search/test_vote.py checks them against
# each other): numpy over the hits for many (a query of ~10 segments x 100 hits: 1.7 ms against the loop's
# 4.3 ms, where voting was 4/5 of a stored-range search), a plain loop for few (a single segment's 10 hits:
# ~0.1 ms against numpy's ~0.2 ms of fixed cost, which doubled the engine's overhead over its index), and
# for one query segment (an image, a short range: the most common query) a loop with no per-query-segment
# bookkeeping at all, a third of the general loop's cost (one-off timings on a loaded machine).
SMALL_HITS = 64


def _vote_single(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None,
) -> list[VideoVote]:
    """``vote`` for one query segment: a bin's score is its best hit (of the bin and its +-1 neighbours),
    and every matched range spans the whole query segment."""
    row_ids, row_scores = ids[0].tolist(), np.asarray(hit_scores[0], np.float64).tolist()
    n_rows = len(table.video)
    kept = [(sid, score) for sid, score in zip(row_ids, row_scores) if 0 <= sid < n_rows and not score < min_similarity]
    if not kept:
        return []
    sids = [sid for sid, _ in kept]
    scores = [score for _, score in kept]
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
    # merge each bin with its neighbours (+-1): the best hit of the three, ties to the lower offset
    per_video: dict[int, list[tuple[float, int, int]]] = {}
    for v, off in cells:
        merged = -1
        for o in (off - 1, off, off + 1):
            i = cells.get((v, o), -1)
            if i >= 0 and (merged < 0 or scores[i] > scores[merged]):
                merged = i
        per_video.setdefault(v, []).append((scores[merged], off, merged))
    ranked = []
    for v, candidates in per_video.items():
        candidates.sort(key=lambda c: (-c[0], c[1]))
        ranked.append((candidates[0][0], table.video_ids[v], candidates))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    q_len = q1 - q0
    spans_time = q1 > q0  # an image query (0 s) overlaps nothing, so all its ranges are kept
    votes: list[VideoVote] = []
    for best_score, video_id, candidates in ranked[:limit]:
        matches: list[Match] = []
        for score, _off, i in candidates:
            if score < 0.75 * best_score or len(matches) >= max_matches:
                break
            r0 = r_starts[i]
            r1 = _mapped_end(r0, r_ends[i], q_len)
            # every range spans the same query time: two overlap (``_overlaps``) exactly where their reference times do
            if not (spans_time and any(r0 < m.ref_end and m.ref_start < r1 for m in matches)):
                matches.append(Match(q0, q1, r0, r1, score))
        votes.append(VideoVote(video_id, best_score, matches))
    return votes


def _vote_arrays(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None,
) -> list[VideoVote]:
    """``vote`` vectorised. Ties break as in the loop: the first hit (row-major) of a query segment in a
    cell wins, then the lower offset of the merge (o-1, o, o+1)."""
    n_query = len(query_starts)
    n_rows = len(table.video)
    scores = np.asarray(hit_scores, np.float64).ravel()
    sid = ids.ravel()
    qi = np.repeat(np.arange(ids.shape[0], dtype=np.int64), ids.shape[1])
    keep = (sid >= 0) & (sid < n_rows) & ~(scores < min_similarity)
    sid, scores, qi = sid[keep], scores[keep], qi[keep]
    v = table.video[sid].astype(np.int64)
    keep = v >= 0
    if not keep.any():
        return []
    sid, scores, qi, v = sid[keep], scores[keep], qi[keep], v[keep]
    off = np.rint((table.start[sid] - np.asarray(query_starts, np.float64)[qi]) / bin_seconds).astype(np.int64)
    # (video, offset bin, query segment) cells: the best hit of each
    v, off, qi, scores, sid = _best_per_group(v, off, qi, scores, sid, np.arange(len(sid)))
    # Merge each bin with its neighbours (+-1) so a half-stride misalignment still agrees: a cell at
    # offset o counts for the bins o+1, o, o-1 that exist (first choice: the bin's own o-1 side).
    lo = int(off.min()) - 1
    span = int(off.max()) - lo + 2
    bin_key = v * span + (off - lo)  # ascending: the cells are sorted by (video, offset, query segment)
    bins = bin_key[_starts(bin_key)]
    n = len(bin_key)
    target = np.concatenate((bin_key + 1, bin_key, bin_key - 1))
    at = np.minimum(np.searchsorted(bins, target), len(bins) - 1)
    there = bins[at] == target
    src = np.flatnonzero(there)
    priority, src = np.divmod(src, n)
    key = target[there]
    mv, moff, mqi, ms, msid = _best_per_group(key // span, key % span + lo, qi[src], scores[src], sid[src], priority)
    # one score per bin: the mean over all query segments of its merged best similarities
    bin_start = np.flatnonzero(_starts(mv * span + moff))
    bin_end = np.append(bin_start[1:], len(mv))
    bin_score = np.add.reduceat(ms, bin_start) / max(n_query, 1)
    bv, boff = mv[bin_start], moff[bin_start]
    # candidates of a video: best score first, then the lower offset; videos: best first, then id
    order = np.lexsort((boff, -bin_score, bv))
    video_sorted = bv[order]  # each video's bins are one slice of ``order``
    bounds = np.flatnonzero(_starts(video_sorted))
    first = order[bounds]
    slice_of = dict(zip(video_sorted[bounds].tolist(), zip(bounds.tolist(), np.append(bounds[1:], len(order)).tolist())))
    ranked = sorted(((float(bin_score[i]), table.video_ids[int(bv[i])], int(bv[i])) for i in first),
                    key=lambda r: (-r[0], r[1]))
    # the matched ranges of the shown videos, over plain lists (small; numpy per element is slower)
    q0, q1 = np.asarray(query_starts, np.float64), np.asarray(query_ends, np.float64)
    r0, r1, q_len = table.start[msid], table.end[msid], (q1 - q0)[mqi]
    mapped_end = np.where(q_len <= 0, r1, np.minimum(r1, r0 + q_len))  # see _mapped_end
    cell = (mqi.tolist(), ms.tolist(), r0.tolist(), mapped_end.tolist())
    q_times = (q0.tolist(), q1.tolist())
    first_row, end_row, score_of = bin_start.tolist(), bin_end.tolist(), bin_score.tolist()
    votes: list[VideoVote] = []
    for best_score, video_id, video in ranked[:limit]:
        matches: list[Match] = []
        lo_pos, hi_pos = slice_of[video]
        for b in order[lo_pos:hi_pos].tolist():
            if score_of[b] < 0.75 * best_score or len(matches) >= max_matches:
                break
            for m in _runs(cell, first_row[b], end_row[b], q_times):
                if len(matches) < max_matches and not any(_overlaps(m, other) for other in matches):
                    matches.append(m)
        votes.append(VideoVote(video_id, best_score, matches))
    return votes


def _vote_loop(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None,
) -> list[VideoVote]:
    """``vote`` as a loop over the hits (dicts of cells), for few hits."""
    n_query = len(query_starts)
    video_of, start_of, end_of = table.video, table.start, table.end
    # (video, offset bin) -> {query segment: (score, ref segment id)} keeping the best per query segment
    bins: dict[tuple[int, int], dict[int, tuple[float, int]]] = {}
    n_rows = len(video_of)
    for qi, (row_ids, row_scores) in enumerate(zip(ids.tolist(), np.asarray(hit_scores).tolist())):
        q_start = float(query_starts[qi])
        for sid, score in zip(row_ids, row_scores):
            if sid < 0 or score < min_similarity or sid >= n_rows:
                continue
            v = int(video_of[sid])
            if v < 0:
                continue
            offset = int(round((float(start_of[sid]) - q_start) / bin_seconds))
            cell = bins.setdefault((v, offset), {})
            if qi not in cell or score > cell[qi][0]:
                cell[qi] = (float(score), int(sid))
    # merge each bin with its neighbours (+-1), as _vote_arrays
    per_video: dict[int, list[tuple[float, int, dict[int, tuple[float, int]]]]] = {}
    for (v, off), cell in bins.items():
        merged: dict[int, tuple[float, int]] = {}
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
            for m in _runs((qis, [merged[qi][0] for qi in qis], r0, r1), 0, len(qis), q_times):
                if len(matches) < max_matches and not any(_overlaps(m, other) for other in matches):
                    matches.append(m)
        votes.append(VideoVote(video_id, best_score, matches))
    return votes


def _best_per_group(
    v: NDArray[np.int64], off: NDArray[np.int64], qi: NDArray[np.int64], scores: NDArray[np.float64],
    sid: NDArray[np.int64], tie: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """One row per (video, offset, query segment), sorted by them: the highest score, ties to the lowest ``tie``."""
    order = np.lexsort((tie, -scores, qi, off, v))
    v, off, qi = v[order], off[order], qi[order]
    first = np.ones(len(v), bool)
    first[1:] = (v[1:] != v[:-1]) | (off[1:] != off[:-1]) | (qi[1:] != qi[:-1])
    return v[first], off[first], qi[first], scores[order][first], sid[order][first]


def _starts(sorted_keys: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True where a run of equal keys begins."""
    first = np.ones(len(sorted_keys), bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


# A query segment belongs to a matched range only if its similarity at the range's offset is at
# least this fraction of the offset's best: every query segment has *some* nearest neighbour at
# the offset, and without this an excerpt inserted into unrelated footage matched the whole query.
RUN_RELATIVE_MIN = 0.6


def _runs(
    cell: tuple[list[int], list[float], list[float], list[float]],
    first: int,
    end: int,
    q_times: tuple[list[float], list[float]],
) -> list[Match]:
    """Consecutive strong query segments (gaps of one allowed) -> matched time ranges, longest first.

    ``cell[0..3][first:end]`` are one bin's query segments (ascending), similarities, and the
    start and mapped end (:func:`_mapped_end`) of the reference segment each matched. The reference range ends where the last
    query segment's window ends when laid on the reference (a query shorter than a window, or its
    clipped last window, maps to that many seconds of the reference, not to the reference's whole
    window; an image maps to its window).
    """
    qis, scores, r_start, r_end = cell
    starts, ends = q_times
    if end - first == 1:  # one query segment at this offset (every hit of a one-segment query): one range
        qi = qis[first]
        return [Match(starts[qi], ends[qi], r_start[first], r_end[first], scores[first])]
    peak = max(scores[first:end])
    strong = [r for r in range(first, end) if scores[r] >= RUN_RELATIVE_MIN * peak]
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


def _mapped_end(ref_start: float, ref_end: float, query_length: float) -> float:
    """End of a reference window matched by a query window of ``query_length`` seconds: as long as
    the query window (a clipped last window, a short clip), or the whole window for an image (0 s)."""
    return ref_end if query_length <= 0 else min(ref_end, ref_start + query_length)


def _overlaps(a: Match, b: Match) -> bool:
    return a.ref_start < b.ref_end and b.ref_start < a.ref_end and a.query_start < b.query_end and b.query_start < a.query_end
