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

from collections import defaultdict
from dataclasses import dataclass

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


@dataclass(frozen=True)
class VideoVote:
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
    n_query = len(query_starts)
    video_of, start_of = table.video, table.start
    # (video, offset bin) -> {query segment: (score, ref segment id)} keeping the best per query segment
    bins: dict[tuple[int, int], dict[int, tuple[float, int]]] = defaultdict(dict)
    n_rows = len(video_of)
    for qi, (row_ids, row_scores) in enumerate(zip(hit_ids.tolist(), hit_scores.tolist())):
        q_start = float(query_starts[qi])
        for sid, score in zip(row_ids, row_scores):
            if sid < 0 or score < min_similarity or sid >= n_rows:
                continue
            v = int(video_of[sid])
            if v < 0:
                continue
            offset = int(round((float(start_of[sid]) - q_start) / bin_seconds))
            cell = bins[(v, offset)]
            if qi not in cell or score > cell[qi][0]:
                cell[qi] = (float(score), int(sid))
    # Merge each bin with its neighbours (+-1) so a half-stride misalignment still agrees.
    per_video: dict[int, list[tuple[float, int, dict[int, tuple[float, int]]]]] = defaultdict(list)
    for (v, off), cell in bins.items():
        merged: dict[int, tuple[float, int]] = {}
        for o in (off - 1, off, off + 1):
            for qi, hit in bins.get((v, o), {}).items():
                if qi not in merged or hit[0] > merged[qi][0]:
                    merged[qi] = hit
        score = sum(h[0] for h in merged.values()) / max(n_query, 1)
        per_video[v].append((score, off, merged))
    ranked = []
    for v, candidates in per_video.items():
        candidates.sort(key=lambda c: (-c[0], c[1]))
        ranked.append((candidates[0][0], table.video_ids[v], candidates))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    votes: list[VideoVote] = []
    for best_score, video_id, candidates in ranked[:limit]:
        matches: list[Match] = []
        for score, _off, merged in candidates:
            if score < 0.75 * best_score or len(matches) >= max_matches:
                break
            for m in _runs(merged, query_starts, query_ends, table):
                if len(matches) < max_matches and not any(_overlaps(m, other) for other in matches):
                    matches.append(m)
        votes.append(VideoVote(video_id, best_score, matches))
    return votes


# A query segment belongs to a matched range only if its similarity at the range's offset is at
# least this fraction of the offset's best: every query segment has *some* nearest neighbour at
# the offset, and without this an excerpt inserted into unrelated footage matched the whole query.
RUN_RELATIVE_MIN = 0.6


def _runs(
    merged: dict[int, tuple[float, int]],
    query_starts: NDArray[np.float64],
    query_ends: NDArray[np.float64],
    table: SegmentTable,
) -> list[Match]:
    """Consecutive strong query segments (gaps of one allowed) -> matched time ranges, longest first.

    The reference range ends where the last query segment's window ends when laid on the
    reference (a query shorter than a window, or its clipped last window, maps to that many
    seconds of the reference, not to the reference's whole window; an image maps to its window).
    """
    if len(merged) == 1:  # one query segment at this offset (every hit of a one-segment query): one range
        ((qi, (score, s)),) = merged.items()
        q0, q1 = float(query_starts[qi]), float(query_ends[qi])
        r0 = float(table.start[s])
        return [Match(q0, q1, r0, float(_mapped_end(r0, float(table.end[s]), q1 - q0)), score)]
    peak = max(h[0] for h in merged.values())
    order = sorted(qi for qi, h in merged.items() if h[0] >= RUN_RELATIVE_MIN * peak)
    runs: list[list[int]] = []
    for qi in order:
        if runs and qi - runs[-1][-1] <= 2:
            runs[-1].append(qi)
        else:
            runs.append([qi])
    out = []
    for run in runs:
        sids = [merged[qi][1] for qi in run]
        out.append(
            Match(
                query_start=float(query_starts[run[0]]),
                query_end=float(query_ends[run[-1]]),
                ref_start=float(min(table.start[s] for s in sids)),
                ref_end=float(max(_mapped_end(table.start[s], table.end[s], query_ends[qi] - query_starts[qi])
                                  for qi, s in zip(run, sids))),
                score=sum(merged[qi][0] for qi in run) / len(run),
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
