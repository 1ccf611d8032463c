"""The learned sequence comparator (ViSiL-style, ``rerank="learned"``) against mean pooling with today's re-ranks on
the VSC-style benchmark (issue #16's target: the best learned aggregator or comparator beats mean pooling + the best
re-rank by >= 3 points of segment micro-AP at equal bytes).

    python bench/vsc_comparator.py --size small --train-seed 1 --eval-seeds 0,4 --json
    python bench/vsc_comparator.py --size small --split-sources --train-seed 1 --eval-seeds 0,4,5,6 \
        --out vsc-comparator-split --json

Steps (every search through the product's ``Engine``; the default collection, today's default search parameters):

1. Training data: the data set of ``--train-seed`` (never an evaluated seed; several seeds, comma-separated, are
   pooled), its references indexed and its queries encoded once (``vsc_methods.prepare_vsc``; cached in ``--work``).
2. Choosing a configuration without the evaluated seeds: every third training query (sorted ids) is held out; each
   ``--trials`` configuration is trained on the other queries (``vsc_methods.train_vsc_comparator(query_ids=...)``)
   and scored on the held-out ones (segment micro-AP of ``rerank="learned"``; with several training data sets, the
   same ids held out of each and scored pooled). The default configuration, and the
   trial with the best held-out segment micro-AP, are then trained on every training query.
3. Evaluation on each ``--eval-seeds`` data set: each query encoded once, then searched with every method in a
   rotating order (``vidsearch`` = no re-rank, ``vidsearch:exact|dtw|bidtw``, ``vidsearch:learned`` = the default
   configuration, ``vidsearch:learned@<trial>`` = the chosen one); figures as ``vidsearch eval vsc`` scores them
   (``vsc_run.score``); the re-rank's time per query (``SearchResult.rerank_ms``, best of ``--repeats``) and the
   whole search stage. Where the evaluated references' imagery also appears in the training references
   (``dataset.sources``), the figures are given again for the copies of references whose imagery does not.
4. With several evaluated seeds, the figures again over all their queries pooled (``pooled``), with the paired
   bootstrap of the learned comparator against the best other method over the pooled queries.

``--split-sources``: training on the ``train`` side of the source split and evaluating on the ``test`` side
(``vsc_data.source_side``: no sample video or photograph in both; both sides draw on the wallpaper packages,
``make vsc-data``), so that no evaluated copy shows imagery the model was trained on.

Equal bytes: every method reads the same stored 512-d segment vectors; the comparator adds a model file of a few KB
per collection, nothing per video. The models are written under ``--work`` (a cache folder), never into the repo.
Writes bench/results/vsc-comparator.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

BASE_METHODS = ("none", "exact", "dtw", "bidtw")
"""Re-rank modes of mean pooling measured beside the comparator (``none`` is the method ``vidsearch``)."""
TRIALS: dict[str, dict[str, Any]] = {
    "default": {},
    "epochs10": {"epochs": 10},
    "epochs60": {"epochs": 60},
    "top_rows1": {"top_rows": 1},
    "top_rows6": {"top_rows": 6},
    "candidates50": {"candidates": 50},
    "width16": {"width": 16},
    "no_pair_loss": {"pair_weight": 0.0},
    "background10": {"background_rank": 10},
}
"""Configurations tried (``ComparatorConfig`` fields; ``candidates``: vote candidates per training query, and the
re-rank's ``rerank_candidates`` when the model runs, so that its background channel sees as many candidates)."""
SUMMARY = ("segment_micro_ap", "pair_micro_ap", "pair_micro_ap_video_score", "segment_micro_ap_siblings_ignored",
           "pair_micro_ap_siblings_ignored", "true_pair_recall", "calibrated_threshold", "nomatch_fp_rate",
           "true_pair_recall_at_threshold")


def default_work() -> Path:
    """``$VIDSEARCH_CACHE/vsc-comparator`` (default cache ``~/.cache/vidsearch``)."""
    root = os.environ.get("VIDSEARCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidsearch")
    return Path(root) / "vsc-comparator"


def held_out(query_ids: Sequence[str], every: int = 3) -> tuple[list[str], list[str]]:
    """(fit, held out): every ``every``-th query of the sorted ids held out, starting with the first."""
    ids = sorted(query_ids)
    held = ids[0::every]
    return [q for q in ids if q not in set(held)], held


def trial_config(name: str) -> tuple[Any, Any]:
    """(ComparatorConfig, SearchParams of the training vote) of a trial name of :data:`TRIALS`."""
    from vidsearch.search.results import SearchParams
    from vidsearch.train.comparator import ComparatorConfig

    over = dict(TRIALS[name])
    params = SearchParams(rerank_candidates=int(over.pop("candidates", SearchParams().rerank_candidates)))
    return ComparatorConfig(**over), params


def source_items(sources: str) -> list[tuple[str, Any]]:
    """``dataset.sources`` text of one reference -> [(file name, cell tuple or (start, end) seconds)]:
    ``v1.mp4@0.0-8.3 + photo.jpg#(0.0, 0.0, 0.5, 0.5)`` -> [("v1.mp4", (0.0, 8.3)), ("photo.jpg", (0.0, ...))]."""
    out: list[tuple[str, Any]] = []
    for part in (p.strip() for p in sources.split(" + ") if p.strip()):
        if "#" in part:
            name, cell = part.split("#", 1)
            out.append((name, tuple(float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell))))
        else:
            name, _, span = part.rpartition("@")
            start, _, end = span.partition("-")
            out.append((name, (float(start), float(end))))
    return out


def seen_references(eval_sources: dict[str, str], train_sources: dict[str, str]) -> dict[str, set[str]]:
    """Which evaluated references share imagery with a training reference: ``file`` (the same sample video or
    photograph) and ``content`` (the same photograph cell, or an overlapping window of the same video)."""
    train = [item for s in train_sources.values() for item in source_items(s)]
    files = {name for name, _ in train}

    def same(name: str, where: Any) -> bool:
        for n, w in train:
            if n != name:
                continue
            if len(where) == 4 and w == where:
                return True
            if len(where) == 2 and len(w) == 2 and where[0] < w[1] and w[0] < where[1]:
                return True
        return False

    out: dict[str, set[str]] = {"file": set(), "content": set()}
    for ref, s in eval_sources.items():
        items = source_items(s)
        if any(name in files for name, _ in items):
            out["file"].add(ref)
        if any(same(name, where) for name, where in items):
            out["content"].add(ref)
    return out


def _pick(figures: dict[str, Any]) -> dict[str, Any]:
    out = {k: figures.get(k) for k in SUMMARY}
    for key in ("per_layout", "per_edit", "per_copy_length"):
        out[key] = {c: {"copies": v.get("copies"), "segment_micro_ap": v["segment_micro_ap"],
                        "pair_micro_ap": v["pair_micro_ap"]} for c, v in figures[key].items()}
    return out


def pool(parts: Sequence[tuple[int, Any, dict[str, dict[str, Any]]]]) -> tuple[list[Any], dict[str, dict[str, Any]], list[str]]:
    """Several evaluated data sets as one: [(seed, dataset, method -> query id -> QueryPrediction)] ->
    (ground truth, method -> query -> prediction, query ids), each query id prefixed ``s<seed>:`` so that the
    queries of different seeds stay apart (references too: ``R000000`` of seed 0 is not that of seed 4)."""
    from vidsearch.evaluate.vsc_methods import QueryPrediction

    def rename(m: Any, seed: int) -> Any:
        return dataclasses.replace(m, query_id=f"s{seed}:{m.query_id}", ref_id=f"s{seed}:{m.ref_id}")

    truth: list[Any] = []
    ids: list[str] = []
    preds: dict[str, dict[str, Any]] = {}
    for seed, dataset, predictions in parts:
        truth += [rename(g, seed) for g in dataset.ground_truth]
        ids += [f"s{seed}:{q}" for q in dataset.query_ids]
        for name, by_query in predictions.items():
            preds.setdefault(name, {}).update({f"s{seed}:{q}": QueryPrediction([rename(m, seed) for m in p.matches])
                                               for q, p in by_query.items()})
    return truth, preds, ids


def pooled_figures(parts: Sequence[tuple[int, Any, dict[str, dict[str, Any]]]], bootstrap: int) -> dict[str, Any]:
    """Segment and pair micro-AP of each method over the pooled queries of :func:`pool`, and the paired bootstrap
    of each learned method against the best other one."""
    from vidsearch.evaluate.vsc_metrics import pair_micro_ap, segment_micro_ap

    truth, preds, ids = pool(parts)
    methods = {}
    for n, p in preds.items():
        matches = [m for q in ids for m in p[q].matches]
        methods[n] = {"segment_micro_ap": round(segment_micro_ap(truth, matches).ap, 4),
                      "pair_micro_ap": round(pair_micro_ap(truth, matches).ap, 4)}
    base = {n: v["segment_micro_ap"] for n, v in methods.items() if not n.startswith("vidsearch:learned")}
    best = max(base, key=lambda n: base[n])
    out: dict[str, Any] = {"seeds": [seed for seed, _, _ in parts], "queries": len(ids), "copies": len(truth),
                           "methods": methods, "best_baseline": best,
                           "learned_minus_best_baseline_segment_micro_ap": {
                               n: round(v["segment_micro_ap"] - base[best], 4) for n, v in methods.items()
                               if n.startswith("vidsearch:learned")}}
    if bootstrap:
        out["bootstrap_vs_best_baseline"] = {
            n: {"baseline": best, **paired_bootstrap(truth, preds[n], preds[best], ids, bootstrap)}
            for n in methods if n.startswith("vidsearch:learned")}
    return out


def search_all(prepared: Any, methods: dict[str, Any], query_ids: Sequence[str], k: int, repeats: int
               ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """Every query searched with every method (rotating order per query, ``repeats`` times, best time kept).

    Returns:
        (method -> query id -> ``QueryPrediction``, method -> {"rerank_ms": [...], "search_ms": [...]} per query).
    """
    from vidsearch.evaluate.vsc_methods import ranges_prediction
    from vidsearch.search.engine import Engine

    names = list(methods)
    predictions: dict[str, dict[str, Any]] = {n: {} for n in names}
    times: dict[str, dict[str, list[float]]] = {n: {"rerank_ms": [], "search_ms": []} for n in names}
    with Engine.open(prepared.collection) as engine:
        snap = engine.snapshot
        first = prepared.media[query_ids[0]]
        for n in names:  # warm-up: the comparator loaded, kernels compiled; not timed
            engine.search_encoded([first], [query_ids[0]], k, methods[n], snap)
        for i, q in enumerate(query_ids):
            order = names[i % len(names):] + names[: i % len(names)]
            best: dict[str, list[float]] = {n: [np.inf, np.inf] for n in names}
            for _ in range(repeats):
                for n in order:
                    t = time.perf_counter()
                    result = engine.search_encoded([prepared.media[q]], [q], k, methods[n], snap)[0]
                    total = (time.perf_counter() - t) * 1000
                    best[n] = [min(best[n][0], result.rerank_ms), min(best[n][1], total)]
                    predictions[n][q] = ranges_prediction(result, q, prepared.ref_of_video)
            for n in names:
                times[n]["rerank_ms"].append(best[n][0])
                times[n]["search_ms"].append(best[n][1])
    return predictions, times


def paired_bootstrap(truth: Sequence[Any], a: dict[str, Any], b: dict[str, Any], query_ids: Sequence[str],
                     resamples: int = 500, seed: int = 0) -> dict[str, Any]:
    """Segment micro-AP of method ``a`` minus method ``b`` (query id -> ``QueryPrediction``) over ``resamples``
    bootstrap samples of the queries (drawn with replacement, each draw a query of its own): the spread that
    45 queries leave on a difference."""
    from vidsearch.evaluate.vsc_metrics import segment_micro_ap

    rng = np.random.default_rng(seed)
    by_query: dict[str, list[Any]] = {}
    for g in truth:
        by_query.setdefault(g.query_id, []).append(g)
    ids = list(query_ids)
    diffs = []
    for _ in range(resamples):
        picks = [ids[int(i)] for i in rng.integers(0, len(ids), len(ids))]
        t: list[Any] = []
        pa: list[Any] = []
        pb: list[Any] = []
        for j, q in enumerate(picks):
            name = f"{q}#{j}"
            t += [dataclasses.replace(g, query_id=name) for g in by_query.get(q, ())]
            pa += [dataclasses.replace(m, query_id=name) for m in a[q].matches]
            pb += [dataclasses.replace(m, query_id=name) for m in b[q].matches]
        if t:
            diffs.append(segment_micro_ap(t, pa).ap - segment_micro_ap(t, pb).ap)
    d = np.asarray(diffs)
    return {"resamples": len(d), "mean": round(float(d.mean()), 4), "ci95": [round(float(np.percentile(d, 2.5)), 4),
            round(float(np.percentile(d, 97.5)), 4)], "share_above_0": round(float((d > 0).mean()), 3),
            "share_at_least_0.03": round(float((d >= 0.03).mean()), 3)}


def _ms(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"p50": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3)}


def evaluate_methods(prepared: Any, methods: dict[str, Any], k: int, repeats: int,
                     query_ids: Sequence[str] | None = None, seen: dict[str, set[str]] | None = None,
                     bootstrap: int = 0, keep: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Figures (``vsc_run.score``) and re-rank times of each method on ``prepared`` (or its ``query_ids`` only);
    ``seen``: name -> evaluated references whose imagery the training data has (figures of the copies of the
    others, and of theirs); ``bootstrap``: resamples of :func:`paired_bootstrap` (learned vs the best other);
    ``keep``: filled with the predictions (method -> query id -> QueryPrediction), for :func:`pooled_figures`."""
    from vidsearch.evaluate.vsc_methods import dataset_subset
    from vidsearch.evaluate.vsc_run import breakdown, score

    dataset = prepared.dataset if query_ids is None else dataset_subset(prepared.dataset, query_ids)
    predictions, times = search_all(prepared, methods, list(dataset.query_ids), k, repeats)
    if keep is not None:
        keep.update(predictions)
    wanted = set(dataset.query_ids)
    decode_encode = [1000 * (m.timings.get("decode", 0.0) + m.timings.get("encode", 0.0))
                     for q, m in prepared.media.items() if q in wanted]
    out: dict[str, Any] = {"queries": len(dataset.query_ids), "copies": len(dataset.ground_truth),
                           "query_decode_encode_ms": _ms(decode_encode), "methods": {}}
    truth = list(dataset.ground_truth)
    for name, preds in predictions.items():
        figures = _pick(score(dataset, preds))
        figures["rerank_ms"] = _ms(times[name]["rerank_ms"])
        figures["search_ms"] = _ms(times[name]["search_ms"])
        matches = [m for q in dataset.query_ids for m in preds[q].matches]
        for label, refs in (seen or {}).items():
            for side, pairs in (("without", {g.pair for g in truth if g.ref_id not in refs}),
                                ("with", {g.pair for g in truth if g.ref_id in refs})):
                if pairs:
                    b = breakdown(truth, matches, pairs)
                    figures[f"copies_of_references_{side}_training_{label}"] = {
                        "copies": b.get("copies"), "segment_micro_ap": b["segment_micro_ap"],
                        "pair_micro_ap": b["pair_micro_ap"]}
        out["methods"][name] = figures
    if bootstrap:
        base = {n: v["segment_micro_ap"] for n, v in out["methods"].items() if not n.startswith("vidsearch:learned")}
        best = max(base, key=lambda n: base[n])
        out["bootstrap_vs_best_baseline"] = {
            n: {"baseline": best, **paired_bootstrap(truth, predictions[n], predictions[best], dataset.query_ids,
                                                     bootstrap)}
            for n in out["methods"] if n.startswith("vidsearch:learned")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--train-seed", default="1", help="comma-separated: the training data sets (pooled)")
    ap.add_argument("--eval-seeds", default="0", help="comma-separated; 0 is the benchmark's")
    ap.add_argument("--trials", default="default", help=f"comma-separated, of {', '.join(TRIALS)}")
    ap.add_argument("--work", type=Path, default=None, help="cache folder for collections, queries and models")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="timed searches per query and method (best kept)")
    ap.add_argument("--bootstrap", type=int, default=500, help="query resamples for the learned-minus-best CI")
    ap.add_argument("--wait-quiet", type=float, default=0.0)
    ap.add_argument("--out", default="vsc-comparator", help="result name under bench/results")
    ap.add_argument("--split-sources", action="store_true",
                    help="train on the train side of the source split, evaluate on the test side (no shared imagery)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    eval_seeds = [int(s) for s in args.eval_seeds.split(",") if s.strip()]
    train_seeds = [int(s) for s in args.train_seed.split(",") if s.strip()]
    trials = [t.strip() for t in args.trials.split(",") if t.strip()]
    bad = [t for t in trials if t not in TRIALS]
    if bad or set(train_seeds) & set(eval_seeds) or not train_seeds or len(set(train_seeds)) != len(train_seeds):
        ap.error(f"unknown trials {bad} (expected some of {', '.join(TRIALS)}), or training seeds {train_seeds} "
                 f"empty, repeated or among the evaluated seeds {eval_seeds}")
    work = args.work or default_work()

    from vidsearch.evaluate.vsc_methods import dataset_subset, prepare_vsc, train_vsc_comparator
    from vidsearch.search.comparator import load_comparator
    from vidsearch.search.results import SearchParams

    payload = C.header("vsc-comparator", {**vars(args), "work": str(work), "trial_configs": {t: TRIALS[t] for t in trials},
                                           "search_params": dataclasses.asdict(SearchParams())})
    train_side, eval_side = ("train", "test") if args.split_sources else ("all", "all")
    trains = [prepare_vsc(work, args.size, seed, progress=C.log, sources=train_side) for seed in train_seeds]
    fit, held = held_out(trains[0].dataset.query_ids)  # the same ids held out of every training data set
    payload["train_data"] = {"seed": train_seeds[0] if len(train_seeds) == 1 else train_seeds, "sources": train_side,
                             "root": [str(t.dataset.root) for t in trains],
                             "references": sum(len(t.dataset.reference_ids) for t in trains),
                             "queries": sum(len(t.dataset.query_ids) for t in trains),
                             "copies": sum(len(t.dataset.ground_truth) for t in trains), "fit_queries": fit,
                             "held_out_queries": held}
    train_seed: int | list[int] = train_seeds[0] if len(train_seeds) == 1 else train_seeds
    tag = f"{args.size}-seed{'-'.join(map(str, train_seeds))}" + ("-split" if args.split_sources else "")

    # 2. choose on held-out training queries
    selection: dict[str, Any] = {}
    for name in trials:
        config, params = trial_config(name)
        t = time.perf_counter()
        path = train_vsc_comparator(work, work / f"comparator-{tag}-{name}-fit.onnx", args.size, train_seed,
                                    config, params, C.log, query_ids=fit, sources=train_side)
        train_s = time.perf_counter() - t
        methods = {"vidsearch": SearchParams(), "vidsearch:learned": dataclasses.replace(
            params, rerank="learned", comparator=str(path))}
        held_parts = []  # the held-out queries of every training data set, pooled
        for seed, tr in zip(train_seeds, trains):
            held_kept: dict[str, dict[str, Any]] = {}
            evaluate_methods(tr, methods, args.k, 1, query_ids=held, keep=held_kept)
            held_parts.append((seed, dataset_subset(tr.dataset, held), held_kept))
        figures = pooled_figures(held_parts, args.bootstrap)
        info = load_comparator(path).info
        selection[name] = {"config": dataclasses.asdict(config), "candidates": params.rerank_candidates,
                           "train_s": round(train_s, 1), "model": info.name,
                           "loss_history": info.meta.get("train", {}).get("history"),
                           "held_out": {m: {k: v[k] for k in ("segment_micro_ap", "pair_micro_ap")}
                                        for m, v in figures["methods"].items()},
                        "held_out_bootstrap": figures.get("bootstrap_vs_best_baseline", {}).get("vidsearch:learned")}
        held_figures = selection[name]["held_out"]
        C.log(f"trial {name}: held-out segment micro-AP learned {held_figures['vidsearch:learned']['segment_micro_ap']:.3f}"
              f" vs none {held_figures['vidsearch']['segment_micro_ap']:.3f} ({train_s:.0f} s)")
    chosen = max(trials, key=lambda n: (selection[n]["held_out"]["vidsearch:learned"]["segment_micro_ap"],
                                        -trials.index(n)))
    payload["selection"] = {"held_out_every": 3, "trials": selection, "chosen": chosen,
                            "rule": "best held-out segment micro-AP of rerank='learned' (ties: the earlier trial)"}

    # final models on every training query
    models: dict[str, str] = {}
    for name in dict.fromkeys(["default", chosen]):
        config, params = trial_config(name)
        t = time.perf_counter()
        path = train_vsc_comparator(work, work / f"comparator-{tag}-{name}.onnx", args.size, train_seed, config,
                                    params, C.log, sources=train_side)
        info = load_comparator(path).info
        models[name] = str(path)
        payload.setdefault("models", {})[name] = {
            "path": str(path), "name": info.name, "weights_sha256": info.weights_hash, "bytes": path.stat().st_size,
            "train_s": round(time.perf_counter() - t, 1), "train": info.meta.get("train")}

    # 3. evaluate
    methods = {("vidsearch" if m == "none" else f"vidsearch:{m}"): SearchParams(rerank=m) for m in BASE_METHODS}
    methods["vidsearch:learned"] = SearchParams(rerank="learned", comparator=models["default"])
    if chosen != "default":
        methods[f"vidsearch:learned@{chosen}"] = dataclasses.replace(trial_config(chosen)[1], rerank="learned",
                                                                    comparator=models[chosen])
    payload["config"]["methods"] = {n: dataclasses.asdict(p) for n, p in methods.items()}
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["evaluation"] = {}
    parts = []
    for seed in eval_seeds:
        prepared = prepare_vsc(work, args.size, seed, progress=C.log, sources=eval_side)
        seen = seen_references(prepared.dataset.sources, {f"s{seed}:{r}": text for seed, t in zip(train_seeds, trains)
                                                          for r, text in t.dataset.sources.items()})
        load_before = C.load_average()
        kept: dict[str, dict[str, Any]] = {}
        figures = evaluate_methods(prepared, methods, args.k, args.repeats, seen=seen, bootstrap=args.bootstrap,
                                   keep=kept)
        parts.append((seed, prepared.dataset, kept))
        figures.update({"seed": seed, "sources": eval_side, "root": str(prepared.dataset.root), "references": len(prepared.dataset.reference_ids),
                        "references_sharing_training_imagery": {k: len(v) for k, v in seen.items()},
                        "load_before": load_before, "load_after": C.load_average()})
        base = {n: v["segment_micro_ap"] for n, v in figures["methods"].items() if not n.startswith("vidsearch:learned")}
        best_base = max(base, key=lambda n: base[n])
        figures["best_baseline"] = best_base
        figures["learned_minus_best_baseline_segment_micro_ap"] = {
            n: round(v["segment_micro_ap"] - base[best_base], 4) for n, v in figures["methods"].items()
            if n.startswith("vidsearch:learned")}
        payload["evaluation"][str(seed)] = figures
        C.log(C.table(["seed", "method", "segment", "pair", "rerank ms p50"],
                      [[seed, n, v["segment_micro_ap"], v["pair_micro_ap"], v["rerank_ms"]["p50"]]
                       for n, v in figures["methods"].items()]))
    if len(parts) > 1:
        payload["pooled"] = pooled_figures(parts, args.bootstrap)
        C.log(C.table(["pooled seeds", "method", "segment", "pair"],
                      [[",".join(map(str, eval_seeds)), n, v["segment_micro_ap"], v["pair_micro_ap"]]
                       for n, v in payload["pooled"]["methods"].items()]))
    C.emit(args.out, payload, args.json)


if __name__ == "__main__":
    main()
