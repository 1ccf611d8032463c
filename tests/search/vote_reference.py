"""The vote stated as a plain loop over the hits (dicts of cells): the reference that
``vidsearch.search.vote``'s two implementations must equal in every output (test_vote.py).
Kept readable, not fast: it is the specification."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vidsearch.search.results import Match
from vidsearch.search.vote import RUN_RELATIVE_MIN, SegmentTable, VideoVote, _mapped_end


def vote_loop(
    query_starts: NDArray[np.float64], query_ends: NDArray[np.float64], ids: NDArray[np.int64],
    hit_scores: NDArray[np.float32], table: SegmentTable, bin_seconds: float, min_similarity: float,
    max_matches: int, limit: int | None, raw_scores: NDArray[np.float32] | None = None,
) -> list[VideoVote]:
    """``vote`` as a loop over the hits (dicts of cells). ``raw_scores`` decide which hits vote and which
    query segments are strong enough for a range; ``hit_scores`` rank and score."""
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
