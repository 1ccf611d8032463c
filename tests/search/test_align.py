"""Temporal alignment kernels: hand-computed cases, a pure-Python reference, properties, real SSCD frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidsearch.errors import VidsearchError
from vidsearch.search import align as A
from vidsearch.search.align import (
    AlignmentError,
    AlignMethod,
    bidtw,
    cost_matrix,
    dtw,
    lower_bound,
    rerank,
    sub_bidtw_one_side,
    subsequence_dtw,
)

PAIR_FUNCS = {
    AlignMethod.DTW: dtw,
    AlignMethod.BIDTW: bidtw,
    AlignMethod.SUBDTW: subsequence_dtw,
    AlignMethod.SUB_BIDTW: sub_bidtw_one_side,
}
PROPERTY = settings(derandomize=True, deadline=None, max_examples=60)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def onehot(*ids: int, d: int = 4) -> np.ndarray:
    return np.eye(d, dtype=np.float32)[list(ids)]


def circle(*degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.stack([np.cos(t), np.sin(t)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------- pure-Python reference


def ref_align(C: np.ndarray, subsequence: bool = False) -> tuple[float, list[tuple[int, int]]]:
    """Textbook O(nm) DP with lists and floats, trace-back preferring diagonal, then up, then left."""
    n, m = C.shape
    c = [[float(v) for v in row] for row in C]
    D = [[math.inf] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0:
                D[i][j] = c[i][j] if (subsequence or j == 0) else c[i][j] + D[i][j - 1]
            elif j == 0:
                D[i][j] = c[i][j] + D[i - 1][j]
            else:
                D[i][j] = c[i][j] + min(D[i - 1][j - 1], D[i - 1][j], D[i][j - 1])
    j = min(range(m), key=lambda jj: (D[n - 1][jj], jj)) if subsequence else m - 1
    i = n - 1
    path = [(i, j)]
    while i > 0 or (j > 0 and not subsequence):
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag, up, left = D[i - 1][j - 1], D[i - 1][j], D[i][j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    return D[n - 1][path[0][1]], path[::-1]


def reference(a: np.ndarray, b: np.ndarray, method: AlignMethod) -> tuple[float, float, list, bool]:
    """(cost, normalized cost, path in original indices, reversed) for any method, from ref_align."""
    C = cost_matrix(a, b)
    sub = method in (AlignMethod.SUBDTW, AlignMethod.SUB_BIDTW)
    n, m = C.shape
    cost, path = ref_align(C, sub)
    best = (cost, cost / len(path), path, False)
    if method in (AlignMethod.BIDTW, AlignMethod.SUB_BIDTW):
        cost_r, path_r = ref_align(C[::-1], sub)
        if cost_r / len(path_r) < best[1] * (1 - 1e-9) - 1e-12:  # ties stay forward
            best = (cost_r, cost_r / len(path_r), [(n - 1 - i, j) for i, j in path_r], True)
    return best


# ------------------------------------------------------------------------------------- hand-made cases


def test_hand_case_one_hot():
    # a = e0 e1, b = e0 e2 e1: C = [[0,2,2],[2,2,0]]; D = [[0,2,4],[2,2,2]]; from (1,2) the diagonal
    # D[0,1]=2 ties with the left D[1,1]=2 and wins; then along row 0. Cosines on the path: 1, 0, 1.
    r = dtw(onehot(0, 1), onehot(0, 2, 1))
    assert r.cost == pytest.approx(2.0)
    assert r.path.tolist() == [[0, 0], [0, 1], [1, 2]]
    assert r.normalized_cost == pytest.approx(2 / 3)
    assert r.score == pytest.approx(2 / 3)
    assert (r.query_range, r.reference_range, r.reversed) == ((0, 2), (0, 3), False)


def test_hand_case_unit_circle():
    # 0 deg and 90 deg against 180 deg: ||.||^2 = 2 - 2cos = 4 and 2; one column, path down it.
    r = dtw(circle(0, 90), circle(180))
    assert r.cost == pytest.approx(6.0, abs=1e-5)
    assert r.path.tolist() == [[0, 0], [1, 0]]
    assert r.score == pytest.approx(-0.5, abs=1e-6)  # mean of cos 180 = -1 and cos 90 = 0
    # 60-degree steps: each aligned pair costs 2 - 2cos(60) = 1 except the exact ones
    r = dtw(circle(0, 60, 120), circle(0, 120))
    assert r.cost == pytest.approx(1.0, abs=1e-5)
    assert r.path.tolist() == [[0, 0], [1, 0], [2, 1]]  # (1,0) and (1,1) tie at cost 1: "up" before "left"


def test_hand_case_subsequence():
    # a = e1 e2 inside b = e0 e1 e1 e2 e0. D row 0 = C row 0 = [2,0,0,2,2] (free start);
    # row 1 = [4,2,2,0,2]: ends at j=3 with cost 0, back diagonally to (0,2).
    r = subsequence_dtw(onehot(1, 2), onehot(0, 1, 1, 2, 0))
    assert r.cost == pytest.approx(0.0, abs=1e-6)
    assert r.path.tolist() == [[0, 2], [1, 3]]
    assert (r.query_range, r.reference_range) == ((0, 2), (2, 4))
    assert r.score == pytest.approx(1.0)


def test_identical_sequences_cost_zero_score_one():
    x = unit(np.random.default_rng(1), 12, 256)
    for func in (dtw, bidtw, subsequence_dtw, sub_bidtw_one_side):
        r = func(x, x)
        assert r.cost == pytest.approx(0.0, abs=1e-5)
        assert r.score == pytest.approx(1.0, abs=1e-6)
        assert r.path.tolist() == [[i, i] for i in range(12)]
        assert not r.reversed


def test_time_stretched_sequence_costs_zero_off_the_diagonal():
    x = unit(np.random.default_rng(2), 8, 64)
    stretched = np.repeat(x, 2, axis=0)  # every element shown twice: slow motion
    r = dtw(x, stretched)
    assert r.cost == pytest.approx(0.0, abs=1e-5)
    assert r.score == pytest.approx(1.0, abs=1e-6)
    assert r.path.tolist() == [[j // 2, j] for j in range(16)]
    assert len(r.path) == 16 and r.reference_range == (0, 16)


def test_reversed_sequence_dtw_high_bidtw_low():
    x = unit(np.random.default_rng(3), 15, 128)
    fwd, both = dtw(x[::-1], x), bidtw(x[::-1], x)
    assert fwd.score < 0.3 and not fwd.reversed
    assert both.cost == pytest.approx(0.0, abs=1e-5) and both.reversed
    assert both.path.tolist() == [[14 - j, j] for j in range(15)]  # original query indices, i descending


def test_subsequence_found_at_offset():
    rng = np.random.default_rng(4)
    ref = unit(rng, 80, 256)
    r = subsequence_dtw(ref[23:41], ref)
    assert r.reference_range == (23, 41) and r.query_range == (0, 18)
    assert r.score == pytest.approx(1.0, abs=1e-6)
    # played at half speed, with noise: still found, over the same range
    slow = np.repeat(ref[23:41], 2, axis=0) + 0.05 * rng.standard_normal((36, 256)).astype(np.float32) / 16
    slow /= np.linalg.norm(slow, axis=1, keepdims=True)
    r = subsequence_dtw(slow, ref)
    assert r.reference_range == (23, 41) and r.score > 0.95


def test_sub_bidtw_one_side_finds_reversed_playback_both_does_not():
    ref = unit(np.random.default_rng(5), 60, 128)
    query = ref[30:45][::-1]
    one, plain = sub_bidtw_one_side(query, ref), subsequence_dtw(query, ref)
    both = subsequence_dtw(query[::-1], ref[::-1])  # the literal "reverse both sides" reading
    assert one.reversed and one.reference_range == (30, 45) and one.score == pytest.approx(1.0, abs=1e-6)
    assert [tuple(p) for p in one.path] == [(44 - j, j) for j in range(30, 45)]  # query[i] is ref[44 - i]
    assert plain.score < 0.5
    assert both.score == pytest.approx(plain.score, rel=1e-5)  # reversing both sides gains nothing
    assert both.cost == pytest.approx(plain.cost, rel=1e-5)


# ------------------------------------------------------------------------ reference implementation


@pytest.mark.parametrize("method", list(AlignMethod))
def test_matches_pure_python_reference(method: AlignMethod):
    rng = np.random.default_rng(6)
    for _ in range(25):
        n, m, d = int(rng.integers(1, 14)), int(rng.integers(1, 20)), int(rng.choice([2, 3, 16, 256]))
        a, b = unit(rng, n, d), unit(rng, m, d)
        cost, norm, path, rev = reference(a, b, method)
        r = PAIR_FUNCS[method](a, b)
        assert r.cost == pytest.approx(cost, rel=1e-12, abs=1e-12)
        assert r.normalized_cost == pytest.approx(norm, rel=1e-12, abs=1e-12)
        assert [tuple(p) for p in r.path] == path
        assert r.reversed == rev
        assert r.method is method


def test_cost_matrix_is_squared_euclidean():
    rng = np.random.default_rng(7)
    a, b = unit(rng, 9, 512), unit(rng, 11, 512)
    direct = ((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1)
    C = cost_matrix(a, b)
    assert C.dtype == np.float32 and C.shape == (9, 11)
    np.testing.assert_allclose(C, direct, atol=2e-6)
    assert (cost_matrix(a, a) >= 0).all()  # clipped: rounding never makes it negative


@pytest.mark.skipif(not hasattr(A._align_one, "py_func"), reason="numba absent or disabled: kernels run as Python")
def test_compiled_kernel_matches_its_python_source():
    rng = np.random.default_rng(8)
    C = cost_matrix(unit(rng, 7, 32), unit(rng, 13, 32))
    for rev_rows, rev_cols, sub in [(False, False, False), (True, False, True), (True, True, True)]:
        outs = []
        for fn in (A._align_one, A._align_one.py_func):
            D, path = np.empty((7, 13)), np.zeros((20, 2), np.int64)
            cost, L = fn(C, 0, 13, rev_rows, rev_cols, sub, np.inf, D, path)
            outs.append((cost, path[:L].tolist()))
        assert outs[0] == outs[1]


# ------------------------------------------------------------------------------------------ properties


sizes = st.tuples(st.integers(1, 12), st.integers(1, 16), st.sampled_from([2, 8, 64]), st.integers(0, 2**32 - 1))


@PROPERTY
@given(sizes)
def test_reversing_both_sides_keeps_the_cost(s):
    n, m, d, seed = s
    rng = np.random.default_rng(seed)
    a, b = unit(rng, n, d), unit(rng, m, d)
    # through the public functions the float32 cost matrices of reversed inputs differ by rounding
    for func in (dtw, subsequence_dtw):
        fwd, back = func(a, b), func(a[::-1], b[::-1])
        assert back.cost == pytest.approx(fwd.cost, rel=1e-5, abs=1e-6)
    # on the very same cells the costs agree up to float64 summation order
    C = cost_matrix(a, b)
    for sub in (False, True):
        assert ref_align(C[::-1, ::-1], sub)[0] == pytest.approx(ref_align(C, sub)[0], rel=1e-12, abs=1e-12)


@PROPERTY
@given(sizes, st.integers(0, 3))
def test_reversing_both_sides_keeps_the_cost_with_ties(s, alphabet_extra):
    # one-hot sequences from a small alphabet: many equal cells, many optimal paths; costs still equal
    n, m, d, seed = s
    rng = np.random.default_rng(seed)
    k = 2 + alphabet_extra
    a, b = onehot(*rng.integers(0, k, n), d=k), onehot(*rng.integers(0, k, m), d=k)
    assert dtw(a[::-1], b[::-1]).cost == pytest.approx(dtw(a, b).cost, abs=1e-9)  # one-hot: exact cells
    assert subsequence_dtw(a[::-1], b[::-1]).cost == pytest.approx(subsequence_dtw(a, b).cost, abs=1e-9)


@PROPERTY
@given(sizes)
def test_lower_bound_never_exceeds_the_cost(s):
    n, m, d, seed = s
    rng = np.random.default_rng(seed)
    a, b = unit(rng, n, d), unit(rng, m, d)
    if seed % 3 == 0:  # include near matches, where the bounds are tight
        b = np.concatenate([b, a + 0.01 * unit(rng, n, d)])
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    for method, func in PAIR_FUNCS.items():
        r = func(a, b)
        assert lower_bound(a, b, method) <= r.cost * (1 + 1e-9) + 1e-9
        assert lower_bound(a, b, method, normalized=True) <= r.normalized_cost * (1 + 1e-9) + 1e-9


@PROPERTY
@given(sizes, st.sampled_from([0.0, 0.5, 0.9, 0.999, 1.0, 1.001, 2.0]))
def test_early_abandon_returns_inf_only_above_the_bound(s, factor):
    n, m, d, seed = s
    rng = np.random.default_rng(seed)
    a, b = unit(rng, n, d), unit(rng, m, d)
    for method, func in PAIR_FUNCS.items():
        full = func(a, b)
        bound = full.cost * factor
        r = func(a, b, max_cost=bound)
        if method in (AlignMethod.DTW, AlignMethod.SUBDTW):
            assert r.abandoned == (full.cost > bound)
        else:  # abandoned only when both directions cost more than the bound
            one = dtw if method is AlignMethod.BIDTW else subsequence_dtw
            other = one(a[::-1], b)
            cheapest = min(one(a, b).cost, other.cost)
            if abs(cheapest - bound) > 1e-6 * (1 + bound):  # clear of float32 rounding between calls
                assert r.abandoned == (cheapest > bound)
        if r.abandoned:
            assert (r.cost, r.normalized_cost, r.score) == (np.inf, np.inf, -np.inf)
            assert r.path.shape == (0, 2) and r.reference_range == (0, 0) and r.query_range == (0, 0)
        else:
            assert r.cost <= bound
        if factor >= 1.0:  # the best alignment is within the bound: the very same result comes back
            assert r.cost == full.cost and r.path.tolist() == full.path.tolist() and r.reversed == full.reversed


def test_early_abandon_of_bidirectional_methods():
    # the winning direction is kept when it is within the bound, even if the other direction is not
    x = unit(np.random.default_rng(9), 10, 64)
    r = bidtw(x[::-1], x, max_cost=0.01)
    assert r.reversed and r.cost == pytest.approx(0.0, abs=1e-5)
    assert bidtw(x[::-1], x[3:], max_cost=0.01).abandoned
    r = sub_bidtw_one_side(x[::-1][2:6], x, max_cost=0.01)
    assert r.reversed and r.reference_range == (4, 8)


# ------------------------------------------------------------------------------------------- rerank


def _candidates(seed: int, k: int = 40, n: int = 12, d: int = 64):
    """A query, and k candidates of varied lengths: a few noisy (some reversed, some stretched) copies."""
    rng = np.random.default_rng(seed)
    q = unit(rng, n, d)
    cands = []
    for i in range(k):
        m = int(rng.integers(3, 30))
        c = unit(rng, m, d)
        if i % 5 == 0:
            part = q[::-1] if i % 10 == 0 else np.repeat(q, 2, axis=0)
            part = part + rng.uniform(0.05, 0.6) * unit(rng, len(part), d)
            start = int(rng.integers(0, m))
            c = np.concatenate([c[:start], part, c[start:]])
            c /= np.linalg.norm(c, axis=1, keepdims=True)
        cands.append(c)
    cands.append(cands[5].copy())  # an exact duplicate: a tie, resolved by position
    return q, cands


@pytest.mark.parametrize("method", list(AlignMethod))
def test_rerank_without_top_scores_every_candidate_like_the_pair_function(method):
    q, cands = _candidates(10, k=15)
    rr = rerank(q, cands, method)
    assert sorted(rr.indices.tolist()) == list(range(len(cands)))
    assert (rr.status == 1).all() and rr.n_pruned == 0
    for idx, score, al in zip(rr.indices, rr.scores, rr.alignments):
        single = PAIR_FUNCS[method](q, cands[idx])
        # one big matrix product vs one per pair: float32 rounding differs in the last bits
        assert score == al.score == pytest.approx(single.score, abs=1e-6)
        assert al.path.tolist() == single.path.tolist() and al.reversed == single.reversed
    keys = [(-s, i) for s, i in zip(rr.scores, rr.indices)]
    assert keys == sorted(keys)  # best first, ties by position
    norm_by_position = np.empty(len(cands))
    norm_by_position[rr.indices] = [al.normalized_cost for al in rr.alignments]
    assert (rr.lower_bounds <= norm_by_position + 1e-9).all()


@pytest.mark.parametrize("method", list(AlignMethod))
@pytest.mark.parametrize("top", [1, 3, 8, 100])
def test_pruned_rerank_equals_unpruned(method, top):
    for seed in (11, 12):
        q, cands = _candidates(seed)
        exact = rerank(q, cands, method, top=top, prune=False)
        fast = rerank(q, cands, method, top=top)
        assert fast.indices.tolist() == exact.indices.tolist()
        np.testing.assert_array_equal(fast.scores, exact.scores)
        for x, y in zip(fast.alignments, exact.alignments):
            assert x.path.tolist() == y.path.tolist()
        assert len(exact.indices) == min(top, len(cands)) and exact.n_pruned == 0
        if top <= 3:
            assert fast.n_pruned + fast.n_abandoned > 0  # the bound does skip work here


def test_rerank_top_ties_resolved_by_position():
    x = unit(np.random.default_rng(13), 6, 32)
    cands = [unit(np.random.default_rng(14), 6, 32), x, x.copy(), x.copy()]
    for prune in (False, True):
        rr = rerank(x, cands, "dtw", top=2, prune=prune)
        assert rr.indices.tolist() == [1, 2]


def test_rerank_accepts_a_3d_array():
    rng = np.random.default_rng(15)
    q, cands = unit(rng, 10, 32), unit(rng, 7 * 9, 32).reshape(7, 9, 32)
    a, b = rerank(q, cands, "bidtw", top=3), rerank(q, list(cands), "bidtw", top=3)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)


# --------------------------------------------------------------------------------------------- errors


def test_input_errors_say_what_to_do():
    rng = np.random.default_rng(16)
    a = unit(rng, 4, 8)
    with pytest.raises(AlignmentError, match="8 dimensions.*16"):
        dtw(unit(rng, 4, 16), a)
    with pytest.raises(AlignmentError, match="L2-normalised.*row 2.*np.linalg.norm"):
        dtw(a, a * np.array([[1], [1], [2], [1]], np.float32))
    with pytest.raises(AlignmentError, match="row 0"):
        dtw(a, np.full((2, 8), np.nan, np.float32))
    with pytest.raises(AlignmentError, match=r"shape \(8,\).*v\[None, :\]"):
        dtw(a[0], a)
    with pytest.raises(AlignmentError, match="2-d"):
        dtw(a, a[:0])
    with pytest.raises(AlignmentError, match="unknown alignment method 'dwt'.*'bidtw'"):
        rerank(a, [a], "dwt")
    with pytest.raises(AlignmentError, match="top must be"):
        rerank(a, [a], top=0)
    with pytest.raises(AlignmentError, match="empty"):
        rerank(a, [])
    with pytest.raises(AlignmentError, match="max_cost"):
        dtw(a, a, max_cost=float("nan"))
    # one hierarchy, and the built-in it matches
    with pytest.raises(VidsearchError):
        dtw(a, a[:, :4])
    with pytest.raises(ValueError):
        dtw(a, a[:, :4])


# ------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def demo_frames() -> np.ndarray:
    """SSCD-distilled vectors of the iscc demo.mp4 at 1 fps: (61, 512) float32."""
    from vidsearch.decode import iter_frames
    from vidsearch.encode import load_encoder
    from vidsearch.evaluate import samples

    path = next((p for p in samples.iscc_videos() if Path(p).name == "demo.mp4"), None)
    if path is None:
        pytest.skip("iscc-samples not installed")
    enc = load_encoder("sscd-distilled")
    return enc.encode(np.stack([f.image for f in iter_frames(path, enc.input_size, fps=1.0)]))


def test_real_reversed_excerpt_found_by_one_sided_reversal_only(demo_frames):
    x = demo_frames
    assert len(x) >= 40
    query = x[10:30][::-1]  # frames 10..29 played backwards
    found = sub_bidtw_one_side(query, x)
    assert found.reversed and found.reference_range == (10, 30)
    assert found.score > 0.99
    plain, both = subsequence_dtw(query, x), subsequence_dtw(query[::-1], x[::-1])
    assert plain.reference_range != (10, 30) and plain.score < 0.8
    assert both.score == pytest.approx(plain.score, rel=1e-5)  # reversing both sides finds nothing new


def test_real_reversed_excerpt_ranks_its_window_first_with_bidtw(demo_frames):
    x = demo_frames
    query = x[10:30][::-1]
    starts = list(range(0, len(x) - 19, 5))
    windows = [x[s:s + 20] for s in starts]
    bi = rerank(query, windows, "bidtw", top=3)
    assert starts[bi.indices[0]] == 10 and bi.alignments[0].reversed and bi.scores[0] > 0.99
    assert bi.alignments[0].path.tolist() == [[19 - j, j] for j in range(20)]
    plain = rerank(query, windows, "dtw")
    assert plain.scores[0] < 0.75  # forward DTW cannot line the reversed excerpt up with any window
    assert bidtw(query, x).score > dtw(query, x).score
