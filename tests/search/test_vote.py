import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from vidsearch.search import vote as vote_module
from vidsearch.search.results import Match
from vidsearch.search.vote import SegmentTable, vote


def _table():
    # video A: segments 0..9 at 0..9 s (1 s windows); video B: segments 10..14 at 0..4 s
    starts = np.r_[np.arange(10.0), np.arange(5.0)]
    return SegmentTable(
        video=np.r_[np.zeros(10, np.int32), np.ones(5, np.int32)],
        start=starts, end=starts + 1.0, video_ids=["A", "B"],
    )


def test_consistent_offset_wins_over_scattered_hits():
    # 3 query segments at 0,1,2 s. A matches them at 5,6,7 s (offset 5) with 0.9;
    # B matches each one somewhere else with 0.95 but at inconsistent offsets... all are counted,
    # B's best offset has only one query segment.
    q = np.array([0.0, 1.0, 2.0])
    ids = np.array([[5, 10], [6, 14], [7, 10]])  # B: offsets 0, +3, -2 s
    scores = np.array([[0.9, 0.95], [0.9, 0.95], [0.9, 0.95]], np.float32)
    votes = vote(q, q + 1, ids, scores, _table(), bin_seconds=1.0)
    assert [v.video_id for v in votes] == ["A", "B"]
    assert abs(votes[0].score - 0.9) < 1e-6
    assert abs(votes[1].score - 0.95 / 3) < 1e-6
    m = votes[0].matches[0]
    assert (m.query_start, m.query_end, m.ref_start, m.ref_end) == (0.0, 3.0, 5.0, 8.0)


def test_min_similarity_and_padding_are_ignored():
    q = np.array([0.0])
    ids = np.array([[3, -1]])
    scores = np.array([[0.2, -np.inf]], np.float32)
    assert vote(q, q + 1, ids, scores, _table(), 1.0, min_similarity=0.3) == []
    assert [v.video_id for v in vote(q, q + 1, ids, scores, _table(), 1.0)] == ["A"]


def test_two_separate_runs_become_two_matches():
    # query 0..5 s; segments 0,1 match A at 0,1 and 4,5 match A at 4,5 (2,3 unmatched: a gap of 2)
    q = np.arange(6.0)
    ids = np.array([[0], [1], [-1], [-1], [4], [5]])
    scores = np.array([[0.9], [0.9], [-np.inf], [-np.inf], [0.8], [0.8]], np.float32)
    (v,) = vote(q, q + 1, ids, scores, _table(), 1.0)
    spans = sorted((m.query_start, m.query_end) for m in v.matches)
    assert spans == [(0.0, 2.0), (4.0, 6.0)]
    assert abs(v.score - (0.9 * 2 + 0.8 * 2) / 6) < 1e-6


def test_removed_segments_do_not_vote():
    t = _table()
    video = t.video.copy()
    video[5] = -1
    t2 = SegmentTable(video, t.start, t.end, t.video_ids)
    assert vote(np.array([0.0]), np.array([1.0]), np.array([[5]]), np.array([[0.9]], np.float32), t2, 1.0) == []


def test_inserted_excerpt_localises_to_its_strong_segments_only():
    # query 0..9 s: segments 3..6 are a copy of A 2..5 s (0.9); the unrelated rest still finds its
    # nearest neighbour at the same offset, weakly (0.2): the range must cover only the copy
    q = np.arange(10.0)
    ids = np.array([[min(i - 1, 9)] if i >= 1 else [10] for i in range(10)])  # offset -1 s throughout
    scores = np.array([[0.9] if 3 <= i <= 6 else [0.2] for i in range(10)], np.float32)
    m = vote(q, q + 1, ids, scores, _table(), 1.0)[0].matches[0]
    assert (m.query_start, m.query_end, m.ref_start, m.ref_end) == (3.0, 7.0, 2.0, 6.0)


def test_short_and_image_queries_map_to_their_own_length():
    # a 0.4 s clip (one clipped window) matches A's 1 s window at 6 s: the range is 6..6.4 s;
    # an image (0 s window) keeps the reference window it fell in
    m = vote(np.array([0.0]), np.array([0.4]), np.array([[6]]), np.array([[0.9]], np.float32), _table(), 1.0)[0].matches[0]
    assert (m.ref_start, m.ref_end) == (6.0, 6.4)
    m = vote(np.array([0.0]), np.array([0.0]), np.array([[6]]), np.array([[0.9]], np.float32), _table(), 1.0)[0].matches[0]
    assert (m.ref_start, m.ref_end) == (6.0, 7.0)


# ------------------------------------------------------------------ the vectorised vote = the plain loop
# The per-hit loop vote() was before it was vectorised (issue #14: it took 4/5 of a stored-range
# search), kept as the oracle: same videos, scores (to rounding), order and matched ranges.


def reference_vote(query_starts, query_ends, hit_ids, hit_scores, table, bin_seconds, min_similarity=0.0,
                   max_matches=5, limit=None):
    from collections import defaultdict

    from vidsearch.search.vote import VideoVote, _overlaps

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
            for m in reference_runs(merged, query_starts, query_ends, table):
                if len(matches) < max_matches and not any(_overlaps(m, other) for other in matches):
                    matches.append(m)
        votes.append(VideoVote(video_id, best_score, matches))
    return votes




def reference_runs(
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
        return [Match(q0, q1, r0, float(vote_module._mapped_end(r0, float(table.end[s]), q1 - q0)), score)]
    peak = max(h[0] for h in merged.values())
    order = sorted(qi for qi, h in merged.items() if h[0] >= vote_module.RUN_RELATIVE_MIN * peak)
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
                ref_end=float(max(vote_module._mapped_end(table.start[s], table.end[s], query_ends[qi] - query_starts[qi])
                                  for qi, s in zip(run, sids))),
                score=sum(merged[qi][0] for qi in run) / len(run),
            )
        )
    out.sort(key=lambda m: (-(m.query_end - m.query_start), -m.score))
    return out



@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.integers(0, 2**32 - 1))
def test_vectorised_vote_equals_the_plain_loop(seed):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 15, int(rng.integers(1, 6)))
    video = np.concatenate([np.full(p, i, np.int32) for i, p in enumerate(per)])
    start = np.concatenate([np.arange(p) * 1.0 for p in per])
    if rng.random() < 0.3:
        video[rng.integers(0, len(video))] = -1  # a removed row
    table = SegmentTable(video, start, start + 2.0, [f"v{i}" for i in range(len(per))])
    n_query, k = int(rng.integers(1, 8)), int(rng.integers(1, 16))
    q = np.arange(n_query) * 1.0 + (0.5 if rng.random() < 0.3 else 0.0)
    q_end = q + (0.0 if rng.random() < 0.2 else 2.0)  # 0 s: an image query
    ids = rng.integers(-1, len(video) + 1, (n_query, k))  # padding (-1) and out-of-range ids too
    scores = np.round(rng.random((n_query, k)), 1).astype(np.float32)  # coarse: many ties
    min_similarity, limit = float(rng.choice([0.0, 0.3])), int(rng.integers(1, 6))
    got = vote(q, q_end, ids, scores, table, 1.0, min_similarity, 3, limit=limit)
    want = reference_vote(q, q_end, ids, scores, table, 1.0, min_similarity, 3, limit=limit)
    assert [v.video_id for v in got] == [v.video_id for v in want]
    assert [v.matches for v in got] == [v.matches for v in want]
    np.testing.assert_allclose([v.score for v in got], [v.score for v in want], rtol=1e-12)
