"""Training the learned comparator (train/comparator.py) on real segment vectors: pairs from the engine's own
candidates, cell targets, a short run that must lower its loss and separate copies from look-alikes,
determinism, and the ONNX file equal to torch and run by rerank='learned'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch import Collection, SearchParams
from vidsearch.errors import ConfigError
from vidsearch.train.comparator import (ComparatorConfig, CopySpan, cell_targets, export_comparator,
                                        group_scores, pairs_from_engine, train_comparator)

# Queries cut from the stored frames of the real collection (VIDEO@START-END), each a copy of its range.
# (bigbuckbunny.mp4 lasts 5.3 s, carphone_pristine.mp4 4.0 s, v1.m4v 5.0 s, bikes.mp4 10 s, demo.mp4 60 s)
RANGES = {"bikes.mp4": [(1, 6), (4, 9)], "bigbuckbunny.mp4": [(0, 5)], "carphone_pristine.mp4": [(0, 4)],
          "v1.m4v": [(0, 5)], "demo.mp4": [(4, 10), (20, 26), (40, 46)]}
FAST = ComparatorConfig(width=4, epochs=40, batch_queries=3, seed=0)


def test_cell_targets_follow_the_copys_time_mapping():
    starts = np.arange(6, dtype=np.float64)  # 1 s segments: centres 0.5 .. 5.5
    t = cell_targets(starts, starts + 1, starts, starts + 1, [CopySpan("r", 1.0, 4.0, 2.0, 5.0)], band=0.5)
    # query centres 1.5, 2.5, 3.5 are in the copy and map to 2.5, 3.5, 4.5 on the reference
    expected = np.zeros((6, 6), np.float32)
    expected[[1, 2, 3], [2, 3, 4]] = 1
    np.testing.assert_array_equal(t, expected)
    rev = cell_targets(starts, starts + 1, starts, starts + 1, [CopySpan("r", 1.0, 4.0, 2.0, 5.0, reversed=True)],
                       band=0.5)
    expected_rev = np.zeros((6, 6), np.float32)
    expected_rev[[1, 2, 3], [4, 3, 2]] = 1
    np.testing.assert_array_equal(rev, expected_rev)
    assert not cell_targets(starts, starts + 1, starts, starts + 1, []).any()


@pytest.fixture(scope="module")
def groups(built_collection: Path):
    with Collection.open(built_collection) as coll:
        engine = coll.engine()
        ids = {Path(v["path"]).name: v["id"] for v in coll.videos()}
        media, copies = {}, {}
        for name, ranges in RANGES.items():
            for a, b in ranges:
                qid = f"{name}@{a}-{b}"
                media[qid] = engine.encode_ref(f"{ids[name]}@{a}-{b}")
                copies[qid] = [CopySpan(ids[name], 0.0, float(b - a), float(a), float(b))]
        out = pairs_from_engine(engine, media, copies, SearchParams(rerank_candidates=5), ref_id=lambda v: v)
    return out


def test_pairs_come_from_the_votes_candidates_with_the_copy_labelled(groups):
    assert len(groups) == sum(len(r) for r in RANGES.values())
    for g in groups:
        assert g.positives == 1 and len(g.pairs) >= 2  # the source and at least one look-alike
        true = next(p for p in g.pairs if p.label)
        assert true.target.sum() >= 3 and not any(p.target.any() for p in g.pairs if not p.label)
        assert all(p.sims.shape[0] == true.sims.shape[0] for p in g.pairs)  # one row per query segment


@pytest.fixture(scope="module")
def trained(groups):
    return train_comparator(groups, FAST, source="test")


def test_training_lowers_the_loss_and_separates_copies_from_look_alikes(trained, groups):
    assert trained.history[-1] < 0.7 * trained.history[0], trained.history
    scored = group_scores(trained.model, groups, FAST)
    true = [s for *_, label, s in scored if label]
    false = [s for *_, label, s in scored if not label]
    assert min(true) > max(false), (true, false)
    assert trained.counts == {"queries": len(groups), "pairs": len(scored), "true_pairs": len(true)}


def test_training_is_deterministic(trained, groups):
    again = train_comparator(groups, FAST, source="test")
    assert again.weights_hash() == trained.weights_hash()
    other = train_comparator(groups, ComparatorConfig(width=4, epochs=40, batch_queries=3, seed=1), source="test")
    assert other.weights_hash() != trained.weights_hash()


def test_training_needs_a_true_pair(groups):
    from dataclasses import replace

    negatives = [replace(g, pairs=tuple(p for p in g.pairs if not p.label)) for g in groups]
    with pytest.raises(ConfigError, match="true pair"):
        train_comparator(negatives, FAST)
    with pytest.raises(ConfigError):
        ComparatorConfig(width=0)


def test_onnx_equals_torch_and_runs_in_the_rerank(trained, groups, tmp_path_factory, built_collection, monkeypatch):
    from vidsearch.search.comparator import OnnxComparator, pair_features
    from vidsearch.train.comparator import refine_torch

    path = export_comparator(trained, tmp_path_factory.mktemp("model") / "comparator.onnx")
    model = OnnxComparator(path)
    assert model.info.weights_hash == trained.weights_hash() and model.info.top_rows == FAST.top_rows
    assert model.info.meta["train"]["counts"]["queries"] == len(groups)
    g = groups[0]
    for x in pair_features([p.sims for p in g.pairs], FAST.background_rank):  # real features, several widths
        np.testing.assert_allclose(model.refine(x), refine_torch(trained.model, x), atol=1e-5)
    monkeypatch.setenv("VIDSEARCH_COMPARATOR", str(path))
    with Collection.open(built_collection) as coll:
        video = next(v["id"] for v in coll.videos() if Path(v["path"]).name == "v1.m4v")
        result = coll.search(f"{video}@3-9", k=3, params=SearchParams(rerank="learned"))
    assert result.results[0].video_id == video and result.results[0].matches
