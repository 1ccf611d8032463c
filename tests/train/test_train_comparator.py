"""Training the learned comparator (train/comparator.py) on real segment vectors: pairs from the engine's own
candidates, cell targets, a short run that must lower its loss and separate copies from look-alikes,
determinism, and the ONNX file equal to torch and run by rerank='learned'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchload import load_bench

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


# ---------------------------------------------------------------- the VSC-style benchmark's pieces
# (vsc_methods.prepare_vsc / dataset_subset / ranges_prediction / train_vsc_comparator, and bench/vsc_comparator.py)

VSC_TINY_SEED = 3  # the tiny size of seed 3 has queries with copies and without (tests/evaluate/conftest.py)


def _bench():  # type: ignore[no-untyped-def]
    """bench/vsc_comparator.py, imported by path."""
    return load_bench("vsc_comparator")


@pytest.fixture(scope="module")
def vsc_work(tmp_path_factory):
    return tmp_path_factory.mktemp("vsc-work")


@pytest.fixture(scope="module")
def prepared(vsc_work):
    from vidsearch.evaluate.vsc_methods import prepare_vsc

    return prepare_vsc(vsc_work / "work", "tiny", VSC_TINY_SEED, data_root=vsc_work / "data")


@pytest.mark.slow  # builds, indexes and encodes a tiny VSC data set: ~40-60 s on a cold cache
def test_prepare_vsc_indexes_and_encodes_once(prepared, vsc_work, monkeypatch):
    from vidsearch.evaluate.vsc_methods import prepare_vsc
    from vidsearch.search.engine import Engine

    ds = prepared.dataset
    assert set(prepared.media) == set(ds.query_ids) and sorted(prepared.ref_of_video.values()) == list(ds.reference_ids)
    assert all(m.segment_vectors.shape[0] >= 1 and "encode" in m.timings for m in prepared.media.values())

    def no_encoding(*_args, **_kwargs):
        raise AssertionError("the cached queries were encoded again")

    monkeypatch.setattr(Engine, "encode_query", no_encoding)
    again = prepare_vsc(vsc_work / "work", "tiny", VSC_TINY_SEED, data_root=vsc_work / "data")
    assert again.collection == prepared.collection
    q = ds.query_ids[0]
    np.testing.assert_array_equal(again.media[q].segment_vectors, prepared.media[q].segment_vectors)
    with pytest.raises(AssertionError, match="encoded again"):  # other encoding parameters: not the cache's
        prepare_vsc(vsc_work / "work", "tiny", VSC_TINY_SEED, SearchParams(insets=False), data_root=vsc_work / "data")


@pytest.mark.slow  # builds, indexes and encodes a tiny VSC data set: ~40-60 s on a cold cache
def test_dataset_subset_keeps_only_its_queries(prepared):
    from vidsearch.evaluate.vsc_methods import dataset_subset

    ds = prepared.dataset
    with_copy = next(q for q in ds.query_ids if ds.copies.get(q))
    sub = dataset_subset(ds, [with_copy])
    assert sub.query_ids == (with_copy,) and sub.reference_ids == ds.reference_ids
    assert sub.ground_truth and all(g.query_id == with_copy for g in sub.ground_truth)
    assert set(sub.copies) == {with_copy}
    with pytest.raises(ConfigError, match="unknown"):
        dataset_subset(ds, ["Q999999"])
    with pytest.raises(ConfigError):
        dataset_subset(ds, [])


@pytest.mark.slow  # builds, indexes and encodes a tiny VSC data set: ~40-60 s on a cold cache
def test_bench_scores_the_encoded_queries_as_eval_vsc_scores_its_searches(prepared):
    """The bench's figures (one encoding, searched per method) equal `vidsearch eval vsc`'s for the same method,
    and 'exact' (which keeps the vote's ranges and their scores) scores the same matches as no re-rank."""
    from vidsearch.evaluate.vsc_methods import make_predictor
    from vidsearch.evaluate.vsc_run import evaluate

    bench = _bench()
    out = bench.evaluate_methods(prepared, {"vidsearch": SearchParams(), "vidsearch:exact": SearchParams(rerank="exact")},
                                 k=20, repeats=1)
    none, exact = out["methods"]["vidsearch"], out["methods"]["vidsearch:exact"]
    assert out["queries"] == len(prepared.dataset.query_ids)
    assert exact["segment_micro_ap"] == none["segment_micro_ap"] and exact["pair_micro_ap"] == none["pair_micro_ap"]
    assert none["rerank_ms"]["p50"] == 0.0 and exact["rerank_ms"]["p50"] > 0.0
    predictor = make_predictor("vidsearch")
    try:
        _, figures = evaluate(prepared.dataset, predictor, 20)
    finally:
        predictor.close()
    assert figures["segment_micro_ap"] == pytest.approx(none["segment_micro_ap"], abs=1e-9)
    assert figures["pair_micro_ap"] == pytest.approx(none["pair_micro_ap"], abs=1e-9)


def test_bench_split_sources_and_trials():
    bench = _bench()
    fit, held = bench.held_out([f"Q{i:06d}" for i in range(7)][::-1])
    assert held == ["Q000000", "Q000003", "Q000006"] and fit == ["Q000001", "Q000002", "Q000004", "Q000005"]
    assert bench.source_items("v1.mp4@0.0-8.3 + baboon.jpg#(0.0, 0.5, 0.25, 0.75)") == [
        ("v1.mp4", (0.0, 8.3)), ("baboon.jpg", (0.0, 0.5, 0.25, 0.75))]
    train = {"R0": "v1.mp4@0.0-8.3", "R1": "baboon.jpg#(0.0, 0.0, 0.5, 0.5)"}
    seen = bench.seen_references({"A": "v1.mp4@8.3-15.0", "B": "v1.mp4@5.0-9.0", "C": "baboon.jpg#(0.0, 0.0, 0.5, 0.5)",
                                  "D": "baboon.jpg#(0.5, 0.0, 1.0, 0.5)", "E": "fruits.jpg#(0.0, 0.0, 0.5, 0.5)"}, train)
    assert seen == {"file": {"A", "B", "C", "D"}, "content": {"B", "C"}}
    config, params = bench.trial_config("candidates50")
    assert params.rerank_candidates == 50 and config == ComparatorConfig()
    assert bench.trial_config("top_rows1")[0].top_rows == 1
    for name in bench.TRIALS:  # every trial is a valid configuration
        bench.trial_config(name)


@pytest.mark.slow  # builds, indexes and encodes a tiny VSC data set: ~40-60 s on a cold cache
def test_train_vsc_comparator_on_a_subset_of_queries(prepared, vsc_work):
    from vidsearch.evaluate.vsc_methods import train_vsc_comparator
    from vidsearch.search.comparator import OnnxComparator

    ds = prepared.dataset
    chosen = [q for q in ds.query_ids if ds.copies.get(q)][:2]
    path = train_vsc_comparator(vsc_work / "work", vsc_work / "m.onnx", "tiny", VSC_TINY_SEED,
                                ComparatorConfig(width=4, epochs=2), query_ids=chosen, data_root=vsc_work / "data")
    info = OnnxComparator(path).info
    assert info.meta["data"]["queries"] == chosen and info.meta["train"]["counts"]["queries"] == len(chosen)
    assert f"{len(chosen)} of {len(ds.query_ids)} queries" in info.meta["train"]["data"]


def test_paired_bootstrap_of_a_difference():
    from vidsearch.evaluate.vsc_methods import QueryPrediction
    from vidsearch.evaluate.vsc_metrics import Match

    bench = _bench()
    truth = [Match("Q1", "R1", 0, 5, 0, 5), Match("Q2", "R2", 0, 5, 0, 5)]
    right = {"Q1": QueryPrediction([Match("Q1", "R1", 0, 5, 0, 5, 0.9)]),
             "Q2": QueryPrediction([Match("Q2", "R2", 0, 5, 0, 5, 0.8)]), "Q3": QueryPrediction([])}
    wrong = {"Q1": QueryPrediction([Match("Q1", "R9", 0, 5, 0, 5, 0.9)]), "Q2": right["Q2"],
             "Q3": QueryPrediction([Match("Q3", "R2", 0, 5, 0, 5, 0.95)])}
    same = bench.paired_bootstrap(truth, right, right, ["Q1", "Q2", "Q3"], resamples=50)
    assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["share_above_0"] == 0.0
    better = bench.paired_bootstrap(truth, right, wrong, ["Q1", "Q2", "Q3"], resamples=50)
    assert better["mean"] > 0.3 and better["ci95"][0] >= 0.0 and better["share_above_0"] > 0.8
    assert 0 < better["resamples"] <= 50  # samples without a copy have no AP: left out


def test_pooled_figures_keep_the_queries_and_references_of_each_seed_apart():
    from types import SimpleNamespace

    from vidsearch.evaluate.vsc_methods import QueryPrediction
    from vidsearch.evaluate.vsc_metrics import Match

    bench = _bench()
    # both seeds have a Q000000 and an R000001; seed 4's copy is of R000002
    seed0 = SimpleNamespace(query_ids=("Q000000",), ground_truth=(Match("Q000000", "R000001", 0, 5, 0, 5),))
    seed4 = SimpleNamespace(query_ids=("Q000000",), ground_truth=(Match("Q000000", "R000002", 0, 5, 0, 5),))
    r1 = {"Q000000": QueryPrediction([Match("Q000000", "R000001", 0, 5, 0, 5, 0.9)])}
    r2 = {"Q000000": QueryPrediction([Match("Q000000", "R000002", 0, 5, 0, 5, 0.9)])}
    parts = [(0, seed0, {"vidsearch": r1, "vidsearch:learned": r1}), (4, seed4, {"vidsearch": r1, "vidsearch:learned": r2})]
    out = bench.pooled_figures(parts, bootstrap=20)
    assert out["queries"] == 2 and out["copies"] == 2 and out["seeds"] == [0, 4]
    assert out["methods"]["vidsearch:learned"] == {"segment_micro_ap": 1.0, "pair_micro_ap": 1.0}
    # one right and one wrong pair at one score, of two: 0.25 (0.5 if seed 4's R000001 were taken for seed 0's)
    assert out["methods"]["vidsearch"]["pair_micro_ap"] == 0.25
    assert out["best_baseline"] == "vidsearch"
    assert out["learned_minus_best_baseline_segment_micro_ap"]["vidsearch:learned"] == pytest.approx(
        1.0 - out["methods"]["vidsearch"]["segment_micro_ap"])
    assert out["bootstrap_vs_best_baseline"]["vidsearch:learned"]["baseline"] == "vidsearch"


def test_train_vsc_comparator_checks_its_seeds_before_building_anything(tmp_path):
    from vidsearch.evaluate.vsc_methods import train_vsc_comparator

    for seeds, root in (([1, 1], None), ([], None), ([1, 2], tmp_path / "data")):
        with pytest.raises(ConfigError, match="distinct seeds"):
            train_vsc_comparator(tmp_path / "work", tmp_path / "m.onnx", "tiny", seeds, data_root=root)
    assert not (tmp_path / "work").exists()


@pytest.mark.slow  # builds, indexes and encodes two tiny VSC data sets (the cache's): ~1-2 min on a cold cache
def test_train_vsc_comparator_pools_several_seeds(tmp_path):
    from vidsearch.evaluate.vsc_methods import train_vsc_comparator
    from vidsearch.search.comparator import OnnxComparator

    held = ["Q000000", "Q000003"]
    fit = ["Q000001", "Q000002", "Q000004"]
    path = train_vsc_comparator(tmp_path / "work", tmp_path / "m.onnx", "tiny", [VSC_TINY_SEED, 5],
                                ComparatorConfig(width=4, epochs=2), query_ids=fit)
    info = OnnxComparator(path).info
    assert info.meta["data"]["seed"] == [VSC_TINY_SEED, 5] and not set(held) & set(info.meta["data"]["queries"]["5"])
    assert info.meta["data"]["queries"] == {str(VSC_TINY_SEED): fit, "5": fit}
    assert f"seeds {VSC_TINY_SEED},5" in info.meta["train"]["data"] and "6 of 10 queries" in info.meta["train"]["data"]
    assert info.meta["train"]["counts"]["queries"] == 6  # three of each seed, kept apart (ids prefixed by seed)


def test_a_one_segment_query_trains_when_its_axes_are_flipped():
    """A one-segment query against one-segment references (1 x 1 maps), time axes reversed by the augmentation: numpy calls the
    flipped view contiguous, torch refuses its negative stride (found on the VSC split's training seeds)."""
    from vidsearch.train.comparator import ComparatorPair, QueryGroup, train_comparator

    rng = np.random.default_rng(0)
    pairs = tuple(ComparatorPair(f"R{i}", rng.random((1, 1), dtype=np.float32), np.full((1, 1), float(i == 0), np.float32),
                                 int(i == 0)) for i in range(3))
    result = train_comparator([QueryGroup("Q0", pairs)], ComparatorConfig(width=4, epochs=3, flip=1.0, crop=0.0))
    assert len(result.history) == 3 and all(np.isfinite(result.history))


def test_the_cli_checks_what_each_model_trains_on(tmp_path, capsys):
    from vidsearch.cli import main

    cases = [(["--model", "lstm", "--out", str(tmp_path / "m.onnx")], "give --collection DIR and --out"),
             (["--model", "lstm", "--collection", str(tmp_path)], "give --collection DIR and --out"),
             (["--model", "comparator", "--vsc-seeds", "0,1"], "must not hold 0"),
             (["--model", "comparator", "--vsc-seeds", "one"], "comma-separated integers"),
             (["--model", "comparator", "--collection", str(tmp_path)], "drop --collection"),
             (["--model", "comparator", "--loss", "triplet"], "--loss do not apply to --model comparator"),
             (["--model", "lstm", "--vsc-seeds", "1", "--background-rank", "5", "--collection", str(tmp_path),
               "--out", str(tmp_path / "m.onnx")], "--vsc-seeds, --background-rank do not apply to --model lstm")]
    for args, message in cases:
        assert main(["train", *args, "--json"]) == 2, args
        assert message in json.loads(capsys.readouterr().out)["message"], args
    assert not any(tmp_path.iterdir())  # nothing built or written


@pytest.mark.slow  # builds, indexes and encodes a tiny VSC data set in an empty cache: ~1 min
def test_the_cli_trains_the_comparator_where_rerank_learned_looks(tmp_path, monkeypatch, capsys):
    from vidsearch.cli import main
    from vidsearch.search.comparator import OnnxComparator, default_path

    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIDSEARCH_COMPARATOR", raising=False)
    assert main(["train", "--model", "comparator", "--vsc-size", "tiny", "--vsc-seeds", str(VSC_TINY_SEED),
                 "--epochs", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(default_path()) and default_path().is_file()
    info = OnnxComparator(default_path()).info
    assert info.background_rank == 10 and info.weights_hash == out["weights_sha256"]
    assert info.meta["data"]["size"] == "tiny" and info.meta["data"]["seed"] == VSC_TINY_SEED
