"""Re-ranking the top videos from voting: exact re-score, proximal-affinity filter (PAR), and
temporal alignment with (bi-directional) subsequence DTW, which also localises the match.

PAR (the CNN+LSTM paper): take the top-k by Euclidean distance and keep only those whose cosine
similarity exceeds a threshold. For L2-normalised vectors L2 order and cosine order agree, so the
ranking does not change: PAR's value is the threshold, which removes unrelated results and lets a
query with no true match return nothing.

DTW here is the subsequence variant (the query is usually a part of a longer reference):
``dtw`` = subsequence DTW, ``bidtw`` = min(subDTW(q, r), subDTW(reverse(q), r)), which matches
reversed playback (see ``search/align.py`` for why reversing one side is the informative reading).

``tn``: the temporal network (``search/tn.py``, Tan et al.; VCSL's TN): the heaviest forward paths through
each query segment's most similar reference segments, each path a matched range.

``learned``: the learned sequence comparator (``search/comparator.py``, ViSiL-style): a small CNN refines
each candidate's query-by-reference similarity matrix; the video is scored by its refined map, and each
matched range of the vote is kept and scored by the map inside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError
from vidsearch.search.comparator import similarity_matrix
from vidsearch.search.results import RERANK_MODES, Match
from vidsearch.search.vote import VideoVote

# Fetches a video's segment (starts, ends, vectors (m, d)) ordered by time.
Fetch = Callable[[str], tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float32]]]

# The default PAR threshold of each encoder (until a collection is calibrated) is its registry entry's
# ``par_threshold`` (vidsearch.encode.registry), the one place for it.

def rerank(
    mode: str,
    query: NDArray[np.float32],
    q_starts: NDArray[np.float64],
    q_ends: NDArray[np.float64],
    candidates: list[VideoVote],
    fetch: Fetch,
    threshold: float | None = None,
    regions: list[NDArray[np.float32]] | None = None,
    region_blank: list[NDArray[np.bool_]] | None = None,
    comparator: str | os.PathLike[str] | None = None,
    background: list[NDArray[np.float32]] | None = None,
) -> list[VideoVote]:
    """Re-score ``candidates`` (best first from voting) and return them re-ranked.

    Args:
        mode: ``none``, ``exact``, ``par``, ``dtw``, ``bidtw``, ``tn`` or ``learned``.
        query: (n, d) L2-normalised query segment vectors.
        q_starts, q_ends: (n,) query segment times in seconds.
        candidates: videos from voting.
        fetch: a video's segment times and vectors.
        threshold: PAR threshold (required for ``par``); for the others, results at or below it are dropped
            when given.
        regions: (n, d) query segment vectors of crop regions (``SearchParams.crops``); ``exact`` and
            ``par`` score each query segment by its best region (blank regions, ``region_blank``,
            excluded); DTW aligns the whole frames; ``learned`` takes the best region per cell too.
        comparator: ``learned``: the comparator's ONNX file (None: ``comparator.default_path()``).
        background: ``tn``: what score normalisation subtracts from each row's similarities (``SearchParams.norm_beta``
            times its background), for the query rows then each region's (None: raw cosines).

    Raises:
        ConfigError: an unknown mode, ``par`` without a threshold, ``learned`` without a model file.
        EncoderError: ``learned`` with a file that is not a comparator.
    """
    if mode not in RERANK_MODES:
        raise ConfigError(f"unknown re-rank mode {mode!r}; expected one of {', '.join(RERANK_MODES)}")
    if mode == "par" and threshold is None:
        raise ConfigError("re-rank mode 'par' needs a threshold (a cosine in [-1, 1]); pass SearchParams.par_threshold "
                          "or calibrate the collection ('vidsearch calibrate')")
    if mode == "none" or not candidates:
        out = candidates
    elif mode in ("exact", "par"):
        out = []
        for cand in candidates:
            _, _, vectors = fetch(cand.video_id)
            sims = similarity_matrix(query, vectors, regions or [], region_blank)
            out.append(VideoVote(cand.video_id, float(sims.max(axis=1).mean()), cand.matches))
        out.sort(key=lambda v: (-v.score, v.video_id))
    elif mode in ("dtw", "bidtw"):
        out = _align(mode, query, q_starts, q_ends, candidates, fetch)
    elif mode == "tn":
        out = _temporal_network(query, q_starts, q_ends, candidates, fetch, regions or [], region_blank, background)
    elif mode == "learned":
        out = _learned(query, q_starts, q_ends, candidates, fetch, regions or [], region_blank, comparator)
    else:  # unreachable: checked above
        raise ConfigError(f"unknown re-rank mode {mode!r}; expected one of {', '.join(RERANK_MODES)}")
    if threshold is not None and mode != "none":
        out = [v for v in out if v.score > threshold]
    return out


def _learned(query: NDArray[np.float32], q_starts: NDArray[np.float64], q_ends: NDArray[np.float64],
             candidates: list[VideoVote], fetch: Fetch, regions: list[NDArray[np.float32]],
             region_blank: list[NDArray[np.bool_]] | None, path: str | os.PathLike[str] | None) -> list[VideoVote]:
    """Each candidate scored by the comparator's refined map; its vote's ranges kept, each scored by the map
    inside it (:func:`range_score`)."""
    from vidsearch.search.comparator import load_comparator, top_rows_score

    model = load_comparator(path)
    fetched = [fetch(c.video_id) for c in candidates]
    maps = model.compare(query, [f[2] for f in fetched], regions, region_blank)
    out = []
    for cand, (r_starts, r_ends, _), prob in zip(candidates, fetched, maps):
        score = top_rows_score(prob, model.info.top_rows)
        matches = [m._replace(score=range_score(prob, m, q_starts, q_ends, r_starts, r_ends, model.info.top_rows))
                   for m in cand.matches]
        out.append(VideoVote(cand.video_id, score, matches))
    out.sort(key=lambda v: (-v.score, v.video_id))
    return out


def range_score(prob: NDArray[np.float32], match: Match, q_starts: NDArray[np.float64], q_ends: NDArray[np.float64],
                r_starts: NDArray[np.float64], r_ends: NDArray[np.float64], top_rows: int) -> float:
    """A matched range's score from a pair's (n, m) refined map: :func:`comparator.top_rows_score` of the
    cells whose query and reference segments overlap the range (the whole map when none does)."""
    from vidsearch.search.comparator import top_rows_score

    rows = (q_starts < match.query_end) & (q_ends > match.query_start)
    cols = (r_starts < match.ref_end) & (r_ends > match.ref_start)
    if not rows.any() or not cols.any():
        return top_rows_score(prob, top_rows)
    return top_rows_score(prob[np.ix_(rows, cols)], top_rows)


def _temporal_network(query: NDArray[np.float32], q_starts: NDArray[np.float64], q_ends: NDArray[np.float64],
                      candidates: list[VideoVote], fetch: Fetch, regions: list[NDArray[np.float32]],
                      region_blank: list[NDArray[np.bool_]] | None,
                      background: list[NDArray[np.float32]] | None) -> list[VideoVote]:
    """Each candidate localised by the temporal network (``search/tn.py``) on its segment similarities (a query
    segment's best region per cell, as ``exact``; each row less its ``background``, normalised as the votes are);
    its matches are the network's paths, its score the best one's mean similarity (0 and no match when no path
    qualifies)."""
    from vidsearch.search.tn import temporal_network

    out = []
    for cand in candidates:
        r_starts, r_ends, vectors = fetch(cand.video_id)
        sims = similarity_matrix(query, vectors, regions, region_blank, background)
        matches = [Match(float(q_starts[t.q0]), float(q_ends[t.q1]), float(r_starts[t.r0]), float(r_ends[t.r1]),
                         t.score) for t in temporal_network(sims)]
        out.append(VideoVote(cand.video_id, matches[0].score if matches else 0.0, matches))
    out.sort(key=lambda v: (-v.score, v.video_id))
    return out


def _align(mode: str, query: NDArray[np.float32], q_starts: NDArray[np.float64], q_ends: NDArray[np.float64], candidates: list[VideoVote],
           fetch: Fetch) -> list[VideoVote]:
    from vidsearch.search.align import rerank as align_rerank

    fetched = [fetch(c.video_id) for c in candidates]
    result = align_rerank(query, [f[2] for f in fetched], "sub_bidtw" if mode == "bidtw" else "subdtw")
    out = []
    for pos, alignment in zip(result.indices, result.alignments):
        starts, ends, vectors = fetched[pos]
        match = _match_from_path(alignment.path, query, vectors, q_starts, q_ends, starts, ends)
        out.append(VideoVote(candidates[pos].video_id, float(alignment.score), [match] if match else []))
    return out


def _match_from_path(path: NDArray[np.int64], query: NDArray[np.float32], vectors: NDArray[np.float32], q_starts: NDArray[np.float64], q_ends: NDArray[np.float64],
                     r_starts: NDArray[np.float64], r_ends: NDArray[np.float64]) -> Match | None:
    """The longest run of the alignment path whose cells are similar enough, as time ranges.

    A query made of unrelated footage around an excerpt aligns its unrelated parts too (every query
    element is on the path); cells below max(0.3, 0.6 * best cosine on the path) are cut so the
    reported ranges cover the matching part only.
    """
    if len(path) == 0:
        return None
    qi, rj = path[:, 0], path[:, 1]
    sims = np.einsum("ld,ld->l", query[qi], vectors[rj])
    keep = sims >= max(0.3, 0.6 * float(sims.max()))
    best_len, best = 0, (0, 0)
    start = None
    for i, k in enumerate(np.append(keep, False)):
        if k and start is None:
            start = i
        elif not k and start is not None:
            if i - start > best_len:
                best_len, best = i - start, (start, i)
            start = None
    if best_len == 0:
        return None
    a, b = best
    qs, rs = qi[a:b], rj[a:b]
    # a (clipped) short query window maps to as many seconds of the reference, not its whole window
    q_len = q_ends[qs] - q_starts[qs]
    r_end = np.where(q_len > 0, np.minimum(r_ends[rs], r_starts[rs] + q_len), r_ends[rs]).max()
    return Match(float(q_starts[qs.min()]), float(q_ends[qs.max()]), float(r_starts[rs.min()]), float(r_end),
                 float(sims[a:b].mean()))
