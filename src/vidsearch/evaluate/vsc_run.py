"""``vidsearch eval vsc``: the VSC-style copy-detection benchmark, every method in one run.

:func:`run_vsc` builds (or reuses) the data set of ``vsc_data``, indexes its references with every
method, predicts matches for every query and writes, into ``out``:

- ``ground_truth.csv`` and ``predictions/<method>.csv``: VSC's columns (``vsc_metrics``), so any
  implementation of the metrics (facebookresearch/vsc2022's ``vsc/metrics.py`` included) can score
  them;
- ``results.json``: every figure per method (:func:`score`), the data set, the configuration, the
  library versions, the seed and the provenance (git commit, dirty ``src/``, times, load), written
  again after each method so that a long run's finished methods survive;
- ``report.html`` (``vsc_report``): PR curves, per-edit, per-layout and per-length bars, score histograms.

Breakdowns (per edit, layout and copy length) score one class of copies against every false
prediction: the ground truth is the class's copies, and the predictions are those of the class's
(query, reference) pairs plus those of every pair that is not a true pair; predictions of true
pairs of other classes are left out (they are neither hits nor false alarms of this class). So a
class's figure answers "how well are copies like these found among all the false alarms".

Operating point: a threshold on pair scores is chosen on the even-numbered queries (best F1) and
checked on the odd-numbered ones: the share of no-copy queries with a pair at or above it
(``nomatch_fp_rate``) and the share of true pairs at or above it (``true_pair_recall_at_threshold``).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vidsearch.errors import ConfigError, VidsearchError
from vidsearch.evaluate.methods import Reference
from vidsearch.evaluate.vsc_data import DatasetSize, VSCDataset, dataset_config
from vidsearch.evaluate.vsc_methods import DEFAULT_METHODS, QueryPrediction, VSCPredictor
from vidsearch.evaluate.vsc_metrics import Match, pair_micro_ap, pairs_from_matches, segment_micro_ap

K = 20
"""References predicted per query (at most; each with any number of matched ranges)."""
SIZES = tuple(s.value for s in DatasetSize)
LENGTH_BINS = ((0.0, 4.0, "2-4 s"), (4.0, 8.0, "4-8 s"), (8.0, math.inf, "8-15 s"))
"""Copy-length classes, by the seconds of the reference copied."""
SUMMARY_KEYS = ("segment_micro_ap", "pair_micro_ap", "segment_micro_ap_siblings_ignored",
                "pair_micro_ap_siblings_ignored", "true_pair_recall", "calibrated_threshold", "nomatch_fp_rate",
                "true_pair_recall_at_threshold", "query_ms_p50", "query_ms_mean", "index_s", "localization")
PEER_PACKAGES = ("perception", "tmkpy", "videohash", "opencv-contrib-python-headless", "imageio-ffmpeg")


def expand(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """``names`` with 'peers' replaced by every peer, and the peers that cannot run here taken out.

    Returns:
        (names to run, {peer that cannot run: why, and how to install it}). A peer named on its
        own that cannot run is reported the same way: never dropped silently.
    """
    from vidsearch.evaluate import peers

    available = peers.available_peers()
    out: list[str] = []
    missing: dict[str, str] = {}
    for name in names:
        for n in (list(peers.PEERS) if name == "peers" else [name]):
            if n in available and available[n] is not None:
                missing[n] = str(available[n])
            elif n not in out:
                out.append(n)
    return out, missing


def file_name(method: str) -> str:
    """A method's predictions file name: characters other than letters, digits and ``.-_+@:`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._+@:-]", "_", method) + ".csv"


# ---------------------------------------------------------------- classes of copies


def _edit_class(edit: str) -> str:
    """``crop(0.73)`` -> ``crop``."""
    m = re.match(r"[A-Za-z_]+", edit)
    return m.group(0) if m else edit


def copy_classes(dataset: VSCDataset) -> dict[str, dict[str, set[tuple[str, str]]]]:
    """The true (query, reference) pairs of each class: ``{"edit": {name: pairs}, "layout": ..., "length": ...}``.

    Edits by kind (``crop``, ``speed``, ``reverse``...; a copy counts in each of its edits), layouts
    (``full``, ``pip``, ``hstack``, ``vstack``) and copy length (:data:`LENGTH_BINS`).
    """
    out: dict[str, dict[str, set[tuple[str, str]]]] = {"edit": {}, "layout": {}, "length": {}}
    for query_id, infos in dataset.copies.items():
        for c in infos:
            pair = (query_id, c.ref_id)
            for edit in {_edit_class(e) for e in c.edits} or {"none"}:
                out["edit"].setdefault(edit, set()).add(pair)
            out["layout"].setdefault(_edit_class(c.layout), set()).add(pair)
            seconds = c.ref_end - c.ref_start
            label = next(name for lo, hi, name in LENGTH_BINS if lo <= seconds < hi)
            out["length"].setdefault(label, set()).add(pair)
    return out


def breakdown(ground_truth: list[Match], matches: list[Match], pairs: set[tuple[str, str]]) -> dict[str, Any]:
    """Segment and pair micro-AP of the copies of ``pairs`` against every false prediction (module docstring)."""
    true_pairs = {g.pair for g in ground_truth}
    truth = [g for g in ground_truth if g.pair in pairs]
    preds = [m for m in matches if m.pair in pairs or m.pair not in true_pairs]
    return {"copies": len(truth), "segment_micro_ap": segment_micro_ap(truth, preds).ap,
            "pair_micro_ap": pair_micro_ap(truth, preds).ap}


def sibling_pairs(dataset: VSCDataset, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The false pairs among ``pairs`` whose reference shares its imagery (a sample video or a photograph,
    ``dataset.sources``) with a true reference of the same query: look-alikes by construction (other windows
    of one static-camera video look the same), counted as false by the benchmark and by VSC's metric."""
    def names(ref_id: str) -> set[str]:
        return {re.split(r"[@#]", part.strip())[0] for part in dataset.sources.get(ref_id, "").split(" + ") if part}

    truth: dict[str, set[str]] = {}
    for g in dataset.ground_truth:
        truth.setdefault(g.query_id, set()).update(names(g.ref_id))
    true_pairs = {g.pair for g in dataset.ground_truth}
    return {(q, r) for q, r in pairs if (q, r) not in true_pairs and names(r) & truth.get(q, set())}


# ---------------------------------------------------------------- scoring


def _best_f1_threshold(ground_truth: list[Match], pair_scores: dict[tuple[str, str], float]) -> float | None:
    """The pair score at which F1 (score >= threshold counts as a copy) is highest; None without ground truth."""
    from vidsearch.evaluate.vsc_metrics import PairPrediction

    if not ground_truth:
        return None
    curve = pair_micro_ap(ground_truth, [PairPrediction(q, r, s) for (q, r), s in pair_scores.items()]).curve
    if not len(curve.scores):
        return None
    p, r = curve.precisions, curve.recalls
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return float(curve.scores[int(np.argmax(f1))])


def operating_point(dataset: VSCDataset, pair_scores: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Threshold from the even-numbered queries, checked on the odd-numbered ones (module docstring)."""
    calib = set(dataset.query_ids[0::2])
    test = [q for q in dataset.query_ids if q not in calib]
    truth = [g for g in dataset.ground_truth if g.query_id in calib]
    thr = _best_f1_threshold(truth, {p: s for p, s in pair_scores.items() if p[0] in calib})
    true_test = {g.pair for g in dataset.ground_truth if g.query_id not in calib}
    nomatch = [q for q in test if not dataset.copies.get(q)]
    out: dict[str, Any] = {"calibrated_threshold": thr, "calibration_queries": len(calib), "test_queries": len(test),
                           "test_nomatch_queries": len(nomatch), "test_true_pairs": len(true_test)}
    if thr is None:
        out.update(nomatch_fp_rate=None, true_pair_recall_at_threshold=None, precision_at_threshold=None)
        return out
    above = {p for p, s in pair_scores.items() if s >= thr and p[0] not in calib}
    out["nomatch_fp_rate"] = (sum(any(p[0] == q for p in above) for q in nomatch) / len(nomatch)) if nomatch else None
    out["true_pair_recall_at_threshold"] = len(above & true_test) / len(true_test) if true_test else None
    out["precision_at_threshold"] = len(above & true_test) / len(above) if above else None
    return out


def _curve(ap: Any) -> dict[str, list[float]]:
    step = max(1, len(ap.curve.recalls) // 200)
    return {"precision": [round(float(x), 4) for x in ap.curve.precisions[::step]],
            "recall": [round(float(x), 4) for x in ap.curve.recalls[::step]]}


def score(dataset: VSCDataset, predictions: dict[str, QueryPrediction]) -> dict[str, Any]:
    """Every figure of one method's predictions (query id -> what it predicted).

    Keys: ``segment_micro_ap``, ``pair_micro_ap`` (and, where the method ranks references by another
    score than its matches', ``pair_micro_ap_video_score``), both again with the predictions of
    look-alike references left out (``*_siblings_ignored``, :func:`sibling_pairs`; a diagnosis, not the
    benchmark's figure), ``true_pair_recall`` (true pairs with any prediction), ``per_edit`` / ``per_layout`` / ``per_copy_length`` (class -> copies and both APs),
    the operating point (:func:`operating_point`), ``scores`` (pair maxima of true and false pairs,
    top score of each no-copy query) and ``pr_curves`` (segment and pair, at most ~200 points each).
    """
    truth = list(dataset.ground_truth)
    matches = [m for p in predictions.values() for m in p.matches]
    true_pairs = {g.pair for g in truth}
    seg, pair = segment_micro_ap(truth, matches), pair_micro_ap(truth, matches)
    pair_scores = {(p.query_id, p.ref_id): p.score for p in pairs_from_matches(matches)}
    out: dict[str, Any] = {
        "segment_micro_ap": seg.ap, "pair_micro_ap": pair.ap,
        "predictions": len(matches), "predicted_pairs": len(pair_scores), "true_pairs": len(true_pairs),
        "true_pair_recall": len(true_pairs & set(pair_scores)) / len(true_pairs),
    }
    video_scores = {(q, r): s for q, p in predictions.items() for r, s in p.video_scores.items()}
    if video_scores:
        from vidsearch.evaluate.vsc_metrics import PairPrediction

        out["pair_micro_ap_video_score"] = pair_micro_ap(
            truth, [PairPrediction(q, r, s) for (q, r), s in video_scores.items()]).ap
    # how much of the loss comes from look-alike references (the benchmark counts them false, as VSC would)
    siblings = sibling_pairs(dataset, set(pair_scores))
    kept = [m for m in matches if m.pair not in siblings]
    out["sibling_false_pairs"] = len(siblings)
    out["segment_micro_ap_siblings_ignored"] = segment_micro_ap(truth, kept).ap
    out["pair_micro_ap_siblings_ignored"] = pair_micro_ap(truth, kept).ap
    classes = copy_classes(dataset)
    for key, kind in (("per_edit", "edit"), ("per_layout", "layout"), ("per_copy_length", "length")):
        out[key] = {name: breakdown(truth, matches, pairs) for name, pairs in sorted(classes[kind].items())}
    out.update(operating_point(dataset, pair_scores))
    nomatch = [q for q in dataset.query_ids if not dataset.copies.get(q)]
    top = {q: max((m.score for m in predictions[q].matches), default=None) for q in nomatch if q in predictions}
    out["scores"] = {
        "true": [round(s, 4) for p, s in pair_scores.items() if p in true_pairs],
        "false": [round(s, 4) for p, s in pair_scores.items() if p not in true_pairs],
        "nomatch_top": [round(s, 4) for s in top.values() if s is not None],
    }
    out["pr_curves"] = {"segment": _curve(seg), "pair": _curve(pair)}
    return out


# ---------------------------------------------------------------- running


def evaluate(dataset: VSCDataset, predictor: VSCPredictor, k: int = K,
             progress: Callable[[str], None] | None = None) -> tuple[list[Match], dict[str, Any]]:
    """Index the references with ``predictor``, predict every query, score.

    A query the method cannot read scores nothing (recorded in ``failed_queries``); the run goes on.

    Returns:
        (all predicted matches, the figures of :func:`score` plus timings and failures).
    """
    refs = [Reference(r, dataset.reference_path(r)) for r in dataset.reference_ids]
    if progress:
        progress(f"  {predictor.name}: indexing {len(refs)} references")
    t0 = time.perf_counter()
    predictor.index(refs)
    index_s = time.perf_counter() - t0
    if dataset.query_ids:  # warm-up (models loaded, caches filled), not timed, not scored
        try:
            predictor.predict(dataset.query_ids[0], dataset.query_path(dataset.query_ids[0]), k)
        except Exception:  # noqa: BLE001 - the timed loop below records the failure
            pass
    _forget_queries(dataset)
    engine_ms: list[dict[str, float]] = getattr(predictor, "timings_ms", [])
    engine_ms.clear()
    predictions: dict[str, QueryPrediction] = {}
    latencies: list[float] = []
    failures: dict[str, str] = {}
    n = len(dataset.query_ids)
    last = time.monotonic()
    for i, query_id in enumerate(dataset.query_ids):
        t = time.perf_counter()
        try:
            predictions[query_id] = predictor.predict(query_id, dataset.query_path(query_id), k)
        except Exception as exc:  # noqa: BLE001 - a query a method cannot read scores nothing; the run goes on
            failures[query_id] = f"{type(exc).__name__}: {exc}"[:300]
            predictions[query_id] = QueryPrediction([])
        latencies.append(time.perf_counter() - t)
        if progress and (time.monotonic() - last > 10 or i + 1 == n):
            last = time.monotonic()
            progress(f"  {predictor.name}: {i + 1}/{n} queries, median {np.median(latencies) * 1000:.0f} ms per query")
    figures = score(dataset, predictions)
    ms = np.array(latencies) * 1000
    if engine_ms:
        figures["engine_ms_p50"] = {key: round(float(np.median([t.get(key, 0.0) for t in engine_ms])), 2)
                                    for key in ("decode", "encode", "search", "total")}
    figures.update({
        "localization": predictor.localization.value, "failed_queries": failures, "index_s": round(index_s, 3),
        "query_ms_p50": round(float(np.percentile(ms, 50)), 2), "query_ms_p90": round(float(np.percentile(ms, 90)), 2),
        "query_ms_mean": round(float(ms.mean()), 2),
    })
    return [m for q in dataset.query_ids for m in predictions[q].matches], figures


def _forget_queries(dataset: VSCDataset) -> None:
    """Drop the queries from the run's encoding cache (``MediaEncoder.cache``), so that every method's query
    latency includes decoding and encoding them; references stay cached (a later method's ``index_s`` may
    then leave out their encoding)."""
    from vidsearch.encode.pipeline import MediaEncoder

    cache = MediaEncoder.cache
    if cache:
        folder = str((dataset.root / "queries").resolve()) + os.sep
        for key in [key for key in cache if str(key[0]).startswith(folder)]:
            del cache[key]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from vidsearch.store.manifest import library_versions

    out = library_versions()
    for name in PEER_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run_vsc(out: Path, size: str = "small", methods: list[str] | None = None, seed: int = 0,
            data_root: Path | None = None, progress: Callable[[str], None] | None = None,
            collection: dict[str, Any] | None = None, k: int = K, sources: str = "all") -> dict[str, Any]:
    """Run ``methods`` (default :data:`~vidsearch.evaluate.vsc_methods.DEFAULT_METHODS`) on the ``size``
    data set; write ``out/ground_truth.csv``, ``out/predictions/<method>.csv``, ``out/results.json``
    and ``out/report.html`` (module docstring).

    Args:
        out: output folder (created).
        size: ``tiny`` (tests), ``small`` (CI) or ``full``.
        methods: method names (``vsc_methods.make_predictor``); ``peers`` stands for every peer.
        seed: the data set's seed.
        sources: ``all`` (the benchmark), or one side of the fixed source split, ``train`` or ``test``
            (``vsc_data.source_side``: data sets of the two sides share no imagery).
        data_root: where the data set is built or found (default: the cache, ``vsc_data.default_root``).
        progress: called with a line of progress now and then (the CLI prints it on stderr).
        collection: ``fps`` / ``window`` / ``stride`` overriding the default collection of vidsearch methods.
        k: references predicted per query at most.

    Returns:
        The results.json document. ``partial`` is true when a method could not run (a peer not
        installed, a method failing): ``unavailable`` says which and why.

    Raises:
        ConfigError: an unknown size or method, or no method to run (before anything is built).
        MissingDataError: the footage or photographs of the data set are not installed.
    """
    from vidsearch.config import CollectionConfig
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate import provenance
    from vidsearch.evaluate.report import machine
    from vidsearch.evaluate.vsc_data import build_dataset, default_root
    from vidsearch.evaluate.vsc_methods import make_predictor
    from vidsearch.evaluate.vsc_metrics import write_matches
    from vidsearch.evaluate.vsc_report import render_html
    from vidsearch.store.manifest import atomic_write_text

    record = provenance.start()
    config = dataset_config(size, seed, sources)
    try:  # the report's plots: checked before an hour of work, not after
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the report needs matplotlib ({exc}); pip install 'vidsearch[eval]'") from exc
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    names, unavailable = expand(list(methods or DEFAULT_METHODS))
    if not names:
        raise ConfigError(f"no method to run: {', '.join(methods or [])} left none that can run here "
                          f"(unavailable: {unavailable or 'none'}); name at least one method, e.g. vidsearch")
    for name in names:  # a misspelt name fails now, before the data set is built
        make_predictor(name, collection).close()
    root = Path(data_root) if data_root is not None else default_root(config)
    cached = (root / "manifest.json").is_file()
    if progress:
        progress(f"data set {size} seed {seed}: {'checking the cached one' if cached else 'building'} in {root}"
                 + ("" if cached else " (minutes for small, an hour for full)"))
    t0 = time.perf_counter()
    dataset = build_dataset(config, root, progress=progress)
    build_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    write_matches(out / "ground_truth.csv", list(dataset.ground_truth), with_score=False)
    n_copy_queries = sum(1 for q in dataset.query_ids if dataset.copies.get(q))
    results: dict[str, Any] = {}
    doc: dict[str, Any] = {
        "benchmark": "vsc", "size": size, "seed": seed, "sources": sources,
        "dataset": {"root": str(dataset.root), "cached": cached, "build_s": round(build_s, 2),
                    "config": json.loads((dataset.root / "manifest.json").read_text())["config"],
                    "references": len(dataset.reference_ids), "queries": len(dataset.query_ids),
                    "queries_with_copies": n_copy_queries, "nomatch_queries": len(dataset.query_ids) - n_copy_queries,
                    "copies": len(dataset.ground_truth)},
        "partial": bool(unavailable), "unavailable": dict(unavailable),
        "git": provenance.git(record), "provenance": provenance.public(record), "machine": machine(),
        "versions": _versions(),
        "config": {"default_collection": CollectionConfig().to_dict(), "collection_overrides": collection or {},
                   "k": k, "methods": names,
                   "prediction_scores": "vidsearch: each matched range's own score (pair_micro_ap_video_score: the "
                                        "video score); others: their pair score"},
        "files": {"ground_truth": "ground_truth.csv", "predictions": {}},
        "methods": results,
    }
    before = MediaEncoder.cache
    MediaEncoder.cache = {} if before is None else before  # methods of one encoder config decode and encode once
    try:
        for name in names:
            if progress:
                progress(f"evaluating {name} on {len(dataset.reference_ids)} references, "
                         f"{len(dataset.query_ids)} queries")
            predictor = make_predictor(name, collection)
            try:
                matches, figures = evaluate(dataset, predictor, k, progress)
            except (VidsearchError, OSError, RuntimeError, ValueError) as exc:  # e.g. a peer that cannot read a reference
                doc["unavailable"][name] = f"failed: {type(exc).__name__}: {exc}"[:500]
                doc["partial"] = True
                if progress:
                    progress(f"  {name} failed: {doc['unavailable'][name]}")
                continue
            finally:
                predictor.close()
            path = write_matches(out / "predictions" / file_name(name), matches)
            doc["files"]["predictions"][name] = str(path.relative_to(out))
            results[name] = figures
            if progress:
                progress(f"  {name}: segment micro-AP {figures['segment_micro_ap']:.3f}, "
                         f"pair micro-AP {figures['pair_micro_ap']:.3f}")
            atomic_write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")  # finished methods survive
    finally:
        MediaEncoder.cache = before
    doc["provenance"] = provenance.public(provenance.finish(record))
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out / "report.html", render_html(doc))
    return doc


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The one object ``vidsearch eval vsc --json`` prints: benchmark, size, and per method its main figures
    (``segment_micro_ap``, ``pair_micro_ap``, ... and the per-layout segment micro-AP)."""
    methods = {}
    for name, v in doc["methods"].items():
        row = {key: _rounded(v.get(key)) for key in SUMMARY_KEYS}
        if "pair_micro_ap_video_score" in v:
            row["pair_micro_ap_video_score"] = _rounded(v["pair_micro_ap_video_score"])
        row["per_layout_segment_micro_ap"] = {c: _rounded(x["segment_micro_ap"]) for c, x in v["per_layout"].items()}
        row["per_layout_pair_micro_ap"] = {c: _rounded(x["pair_micro_ap"]) for c, x in v["per_layout"].items()}
        methods[name] = row
    return {"benchmark": "vsc", "size": doc["size"], "seed": doc["seed"], "sources": doc.get("sources", "all"),
            "references": doc["dataset"]["references"], "queries": doc["dataset"]["queries"],
            "partial": doc["partial"], "unavailable": doc["unavailable"], "methods": methods}
