import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vidsearch.search import vote as vote_module
from vidsearch.search.vote import SegmentTable, vote
from vidsearch.search.vote import _vote_loop as vote_loop



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


# ------------------------------------------------------------------ the two implementations agree
# vote() runs _vote_single (plain Python: a cold process) or the compiled _vote_single_compiled (once the kernels
# are loaded) for one query segment and the compiled _vote_arrays for several; each must equal the plain loop that
# states the vote (_vote_loop) in every output.


def _random_case(seed: int, one_segment: bool):  # type: ignore[no-untyped-def]
    """A seeded vote: padding, out-of-range ids, removed rows, coarse scores (ties), half-stride offsets, images
    (0 s), few or many hits, and half the time normalised scores beside raw ones (a background per row or per hit)."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 15, int(rng.integers(1, 6)))
    video = np.concatenate([np.full(p, i, np.int32) for i, p in enumerate(per)])
    start = np.concatenate([np.arange(p) * 1.0 for p in per])
    if rng.random() < 0.3:
        video[rng.integers(0, len(video))] = -1  # a removed row
    table = SegmentTable(video, start, start + 2.0, [f"v{i}" for i in range(len(per))])
    if one_segment:
        n_query, k = 1, int(rng.integers(1, 120))
        q = np.array([0.5 if rng.random() < 0.3 else float(rng.integers(0, 3))])
        q_end = q + float(rng.choice([0.0, 0.7, 2.0]))
    else:
        n_query, k = int(rng.integers(1, 8)), int(rng.integers(1, 16 if rng.random() < 0.7 else 120))
        q = np.arange(n_query) * 1.0 + (0.5 if rng.random() < 0.3 else 0.0)
        q_end = q + (0.0 if rng.random() < 0.2 else 2.0)  # 0 s: an image query
    ids = rng.integers(-1, len(video) + 1, (n_query, k))
    scores = np.round(rng.random((n_query, k)), 1).astype(np.float32)
    min_similarity, limit, max_matches = float(rng.choice([0.0, 0.3])), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    raw = scores
    if rng.random() < 0.5:
        adjust = np.round(rng.random((n_query, 1 if rng.random() < 0.5 else k)) * 0.5, 1)
        raw, scores = scores, np.maximum(scores - adjust, 0).astype(np.float32)
    return (q, q_end, ids, scores, table, 1.0, min_similarity, max_matches, limit, raw)


def _assert_same(got, want) -> None:  # type: ignore[no-untyped-def]
    assert [v.video_id for v in got] == [v.video_id for v in want]
    assert [v.matches for v in got] == [v.matches for v in want]
    np.testing.assert_allclose([v.score for v in got], [v.score for v in want], rtol=1e-12)


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.integers(0, 2**32 - 1))
def test_compiled_vote_equals_the_loop(seed):
    case = _random_case(seed, one_segment=False)
    _assert_same(vote_module._vote_arrays(*case), vote_loop(*case))


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.integers(0, 2**32 - 1))
def test_single_segment_vote_equals_the_loop(seed):
    case = _random_case(seed, one_segment=True)
    want = vote_loop(*case)
    for got in (vote_module._vote_single(*case), vote_module._vote_single_compiled(*case)):
        _assert_same(got, want)
        assert [v.score for v in got] == [v.score for v in want]  # one segment: the very same floats


def test_a_warm_process_votes_by_compiled_code_for_one_segment_and_for_several(monkeypatch):
    vote_module.load_kernels()
    calls = []
    for name in ("_vote_single", "_vote_single_compiled", "_vote_arrays", "_vote_loop"):
        real = getattr(vote_module, name)
        monkeypatch.setattr(vote_module, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    for n_query, k in ((1, 4), (1, 200), (2, 1), (9, 100)):
        q = np.arange(float(n_query))
        vote(q, q + 1, np.zeros((n_query, k), np.int64), np.ones((n_query, k), np.float32), _table(), 1.0)
    assert calls == ["_vote_single_compiled", "_vote_single_compiled", "_vote_arrays", "_vote_arrays"]


def test_a_cold_process_answers_with_the_loop_while_the_kernels_load(monkeypatch):
    import threading

    calls, loads = [], []
    monkeypatch.setattr(vote_module, "KERNELS_READY", threading.Event())
    monkeypatch.setattr(vote_module, "_loader", None)
    monkeypatch.setattr(vote_module, "load_kernels", lambda: loads.append(1))
    for name in ("_vote_arrays", "_vote_loop"):
        real = getattr(vote_module, name)
        monkeypatch.setattr(vote_module, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    q = np.arange(3.0)
    got = vote(q, q + 1, np.array([[5], [6], [7]]), np.full((3, 1), 0.9, np.float32), _table(), 1.0)
    vote_module._loader.join()
    assert calls == ["_vote_loop"] and loads == [1]
    assert [v.video_id for v in got] == ["A"] and got[0].matches[0].ref_start == 5.0


def test_a_cold_process_votes_one_segment_in_python_without_loading_the_kernels(monkeypatch):
    import threading

    calls, loads = [], []
    monkeypatch.setattr(vote_module, "KERNELS_READY", threading.Event())
    monkeypatch.setattr(vote_module, "_loader", None)
    monkeypatch.setattr(vote_module, "load_kernels", lambda: loads.append(1))
    for name in ("_vote_single", "_vote_single_compiled"):
        real = getattr(vote_module, name)
        monkeypatch.setattr(vote_module, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    got = vote(np.zeros(1), np.ones(1), np.array([[5, 6]]), np.full((1, 2), 0.9, np.float32), _table(), 1.0)
    assert calls == ["_vote_single"] and loads == [] and vote_module._loader is None
    assert [v.video_id for v in got] == ["A"]
