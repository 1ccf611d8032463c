"""``vidsearch eval fashion``: Fashion-MNIST image retrieval (seen/unseen classes) and Moving
Fashion-MNIST clip retrieval with mean pooling, per frame encoder; results.json and report.html.

Sizes: ``small`` (CI: 20 gallery + 5 query images per class, 2 clips per (item, motion) class,
``sscd-distilled`` only) and ``full`` (100 + 20 images per class, 20 clips per class, every encoder,
the figures of docs/RESULTS.md §5). Quality figures are deterministic for a fixed seed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from vidsearch.errors import ConfigError
from vidsearch.store.manifest import atomic_write_text, library_versions

SPLITS = ("overall", "seen", "unseen")
LABELS = ("item", "motion", "item_x_motion", "motion_axis", "direction_within_axis")
LABEL_TITLES = ("item", "motion", "item x motion", "axis", "direction in axis")
SPLIT_LABELS = ("direction_within_axis_seen", "direction_within_axis_unseen", "motion_seen", "motion_unseen")

SIZES: dict[str, dict[str, Any]] = {
    "small": {"encoders": ["sscd-distilled"], "gallery": 20, "queries": 5, "clips": 2, "frames": 16,
              "encode_frames": 4, "size": 64},
    "full": {"encoders": ["sscd", "sscd-distilled", "effnet-lite0"], "gallery": 100, "queries": 20, "clips": 20,
             "frames": 16, "encode_frames": 4, "size": 64},
}

TEMPORAL_TRAINING: dict[str, dict[str, Any]] = {
    "small": {"clips": 20, "epochs": 30},
    "full": {"clips": 40, "epochs": 30},
}
"""``--temporal``: clips per (item, motion) class of the training set (train split, seed + 1) and epochs."""

DEFAULT_LOSS = {"lstm": "ce", "attention": "ce", "seq2seq": "ce", "dual": "ce"}
"""The loss a learned model in ``--temporal`` is trained with when the name gives none (``lstm:triplet`` does);
seq2seq is pretrained first by reconstruction (``SEQ2SEQ_PRETRAIN`` epochs) unless its loss is ``reconstruct``."""
LOSSES = ("infonce", "triplet", "ce", "reconstruct")
SEQ2SEQ_PRETRAIN = 10


def dataset_info() -> dict[str, Any]:
    """Debian package version and sha256 of the four idx files."""
    from vidsearch.evaluate.fashion import FASHION_MNIST_DIR

    try:
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dataset-fashion-mnist"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        version = None
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(FASHION_MNIST_DIR.glob("*.gz"))}
    return {"package": "dataset-fashion-mnist", "package_version": version, "dir": str(FASHION_MNIST_DIR),
            "sha256": files}


def parse_temporal(names: list[str]) -> list[tuple[str, str | None]]:
    """``["mean", "lstm", "attention:triplet"]`` -> [(model, loss or None)], checked.

    Raises:
        ConfigError: an unknown model or loss, or a loss given to ``mean``.
    """
    out: list[tuple[str, str | None]] = []
    for name in names:
        model, _, loss = name.partition(":")
        base, plus, stream = model.partition("+")
        if (base not in ("mean", *DEFAULT_LOSS) or (loss and (base == "mean" or loss not in LOSSES))
                or (plus and (stream != "flow" or base == "mean"))):
            raise ConfigError(f"unknown temporal model {name!r}; expected mean, lstm, attention, seq2seq or dual, a learned "
                              "one optionally with +flow (the pixel-motion stream fused with the frame vectors) and "
                              ":infonce, :triplet, :ce or :reconstruct (e.g. lstm:triplet, dual+flow)")
        out.append((model, loss or (DEFAULT_LOSS[base] if base != "mean" else None)))
    return out


def with_flow(data: Any) -> Any:
    """``data`` (``fashion.MovingVectors``) with each encoded frame's vector fused with the pixel-motion vector
    (``encode/motion.py``: optical flow from the frame before it) of the same frame."""
    import dataclasses

    import numpy as np

    from vidsearch.encode.depth import fuse
    from vidsearch.encode.motion import flow_vectors

    flow = np.stack([flow_vectors(c.frames, data.picks) for c in data.clips])
    n, p, d = data.vectors.shape
    fused = fuse(data.vectors.reshape(n * p, d), flow.reshape(n * p, -1)).reshape(n, p, -1)
    return dataclasses.replace(data, vectors=fused, encoder={**data.encoder, "stream": "frames + optical flow"})


def run_fashion_eval(out: Path, size: str = "small", encoders: list[str] | None = None, seed: int = 0,
                     unseen: tuple[int, ...] = (7, 8, 9), k: int = 5, moving: bool = True,
                     progress: Callable[[str], None] | None = None, temporal: list[str] | None = None,
                     train_overrides: dict[str, Any] | None = None, seen_only: bool = False) -> dict[str, Any]:
    """Run both Fashion-MNIST benchmarks and write ``out/results.json`` and ``out/report.html``.

    Args:
        temporal: Moving Fashion-MNIST with these temporal models instead of mean pooling alone (see
            :func:`parse_temporal`): each learned one is trained (:mod:`vidsearch.train`) on clips of the
            Fashion-MNIST *train* split (seed ``seed + 1``; the evaluation clips come from the test split),
            exported to ``out/models/ENCODER+MODEL.onnx`` and run by ONNX Runtime; results under
            ``moving["ENCODER+MODEL"]`` with a ``training`` record.
        train_overrides: replace :data:`TEMPORAL_TRAINING`'s ``clips``/``epochs`` (tests).
        seen_only: train the temporal models on the seen item classes only (all but ``unseen``) and report the
            moving figures of seen and unseen items apart.
    """
    from vidsearch.config import EncodeConfig
    from vidsearch.evaluate import fashion, provenance
    from vidsearch.evaluate.report import machine

    record = provenance.start()
    if size not in SIZES:
        raise ConfigError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    models = parse_temporal(temporal) if temporal else None
    cfg = dict(SIZES[size])
    cfg["encoders"] = list(encoders or cfg["encoders"])
    for name in cfg["encoders"]:  # an unknown encoder fails here, before the data set is read
        EncodeConfig(encoder=name)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"benchmark": "fashion", "size": size, "seed": seed, "k": k, "unseen_classes": list(unseen),
                           "config": cfg, "dataset": dataset_info(), "git": provenance.git(record), "provenance": provenance.public(record),
                           "partial": False, "missing": {}, "machine": machine(),
                           "versions": library_versions(), "timing_s": {}}
    t = time.perf_counter()
    if progress:
        progress(f"Fashion-MNIST retrieval: {cfg['gallery']} gallery + {cfg['queries']} queries per class, "
                 f"encoders {', '.join(cfg['encoders'])}")
    doc["retrieval"] = fashion.run_fashion_retrieval(cfg["encoders"], n_gallery=cfg["gallery"], n_query=cfg["queries"],
                                                     seed=seed, unseen_classes=unseen, k=k)
    doc["timing_s"]["retrieval"] = round(time.perf_counter() - t, 2)
    if moving and models:
        doc["moving"] = {}
        doc["temporal_training"] = {**TEMPORAL_TRAINING[size], **(train_overrides or {}), "split": "train",
                                    "seed": seed + 1, "unseen_items": list(unseen) if seen_only else None}
        for name in cfg["encoders"]:
            doc["moving"].update(run_temporal_moving(out / "models", name, cfg, models, doc["temporal_training"], seed,
                                                     k, progress, doc["timing_s"]))
    elif moving:
        doc["moving"] = {}
        for name in cfg["encoders"]:
            if progress:
                progress(f"Moving Fashion-MNIST: {name}, {cfg['clips']} clips per (item, motion)")
            t = time.perf_counter()
            doc["moving"][name] = fashion.run_moving_fashion(
                name, n_per_class=cfg["clips"], frames=cfg["frames"], size=cfg["size"], seed=seed,
                encode_frames=cfg["encode_frames"] or None, k=k)
            doc["timing_s"][f"moving_{name}"] = round(time.perf_counter() - t, 2)
    doc["provenance"] = provenance.public(provenance.finish(record))
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out / "report.html", render_html(doc))
    return doc


def run_temporal_moving(models_dir: Path, encoder: str, cfg: dict[str, Any], models: list[tuple[str, str | None]],
                        training: dict[str, Any], seed: int = 0, k: int = 5,
                        progress: Callable[[str], None] | None = None,
                        timing: dict[str, float] | None = None) -> dict[str, Any]:
    """Moving Fashion-MNIST for one encoder with each temporal model: the evaluation clips (test split, ``seed``)
    encoded once; each learned model trained first on clips of the train split (``training``: ``clips`` per
    (item, motion), ``epochs``, ``seed``, and optionally ``unseen_items``: item classes kept out of training,
    whose evaluation clips are then reported apart as "unseen", as the CNN + LSTM paper splits them) and
    exported to ``models_dir/ENCODER+MODEL.onnx``.

    Args:
        cfg: the clips' settings (``clips``, ``frames``, ``size``, ``encode_frames``; :data:`SIZES`).
        models: from :func:`parse_temporal`.
        timing: where to add the encoding times (seconds).

    Returns:
        ``{"ENCODER+MODEL": score_moving(...) result, with a ``training`` record for a learned model}``.
    """
    import os

    from vidsearch.encode.frame import load_encoder
    from vidsearch.encode.temporal import OnnxTemporalModel
    from vidsearch.evaluate import fashion

    timing = timing if timing is not None else {}
    out: dict[str, Any] = {}
    enc = load_encoder(encoder)
    t = time.perf_counter()
    evaluation = fashion.encode_moving_clips(enc, n_per_class=cfg["clips"], frames=cfg["frames"], size=cfg["size"],
                                             seed=seed, encode_frames=cfg["encode_frames"] or None)
    timing[f"moving_{encoder}"] = round(time.perf_counter() - t, 2)
    train_data = None
    flowed: dict[str, Any] = {}  # the evaluation and training clips with the flow stream, made once

    def streams(data: Any, which: str) -> Any:
        if which not in flowed:
            t = time.perf_counter()
            flowed[which] = with_flow(data)
            timing[f"flow_{which}_{encoder}"] = round(time.perf_counter() - t, 2)  # the optical flow's cost
        return flowed[which]

    for name, loss in models:
        model, _, stream = name.partition("+")
        label = f"{encoder}+{name}" if loss is None or loss == DEFAULT_LOSS.get(model) else f"{encoder}+{name}:{loss}"
        aggregator = None
        record: dict[str, Any] = {}
        if model != "mean":
            from vidsearch.train.loop import TrainConfig, export_onnx, train_temporal

            if train_data is None:
                if progress:
                    progress(f"Moving Fashion-MNIST training clips (train split, seed {training['seed']}): "
                             f"{training['clips']} per (item, motion), {encoder}")
                t = time.perf_counter()
                held_out = set(training.get("unseen_items") or ())
                train_data = fashion.encode_moving_clips(
                    enc, n_per_class=training["clips"], frames=cfg["frames"], size=cfg["size"], seed=training["seed"],
                    items=[c for c in range(len(fashion.CLASS_NAMES)) if c not in held_out] if held_out else None,
                    encode_frames=cfg["encode_frames"] or None, split="train")
                timing[f"train_clips_{encoder}"] = round(time.perf_counter() - t, 2)
            clips = fashion.moving_training_set(streams(train_data, "train") if stream else train_data, "motion")
            if progress:
                progress(f"training {label} ({loss}, {training['epochs']} epochs) on {len(clips)} clips")
            pretrain = SEQ2SEQ_PRETRAIN if model == "seq2seq" and loss != "reconstruct" else 0
            config = TrainConfig(model=model, loss=loss or "ce", epochs=training["epochs"], seed=seed,
                                 pretrain_epochs=pretrain)
            result = train_temporal(clips, config, progress=progress)
            path = export_onnx(result, models_dir / f"{label.replace(':', '-')}.onnx",
                               sample=clips.resampled(config.frames)[:64], extra={"data": clips.source},
                               streams=stream)
            aggregator = OnnxTemporalModel(path)
            record = {"model": str(path), "loss": str(loss), "weights_sha256": result.weights_hash(),
                      "train_s": round(result.seconds, 2), "history": [round(v, 5) for v in result.history],
                      "hard": result.hard, "clips": len(clips), "data": clips.source, "config": config.to_dict(),
                      "load_avg": [round(x, 2) for x in os.getloadavg()]}
        scored = fashion.score_moving(streams(evaluation, "evaluation") if stream else evaluation, aggregator, k,
                                      unseen_items=training.get("unseen_items"))
        if record:
            scored["training"] = record
        out[label] = scored
    return out


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"benchmark", "methods": {name: {"mAP", "mAP_seen", "mAP_unseen", "P@k", ..., "moving_*_mAP"}}}``.

    A method is an encoder (mean pooling), or with ``--temporal`` ``ENCODER+MODEL``: the encoder's image
    retrieval figures (no temporal model there) with that model's Moving Fashion-MNIST figures, its
    ``aggregate_vs_encode`` cost ratio and, for a learned model, its training seconds.
    """
    k = doc["k"]
    methods: dict[str, dict[str, float]] = {}
    for name, r in doc["retrieval"]["encoders"].items():
        base = {"mAP": r["overall"]["mAP"], "mAP_seen": r["seen"]["mAP"], "mAP_unseen": r["unseen"]["mAP"],
                f"P@{k}": r["overall"][f"precision@{k}"], f"R@{k}": r["overall"][f"recall@{k}"],
                f"F1@{k}": r["overall"][f"f1@{k}"], f"accuracy@{k}": r["overall"][f"accuracy@{k}"]}
        moving = doc.get("moving", {})
        variants = [v for v in moving if v.startswith(name + "+")] or [name]
        for variant in variants:
            m = dict(base)
            if variant in moving:
                for label in LABELS:
                    m[f"moving_{label}_mAP"] = moving[variant]["labels"][label]["mAP"]
                for label in SPLIT_LABELS:  # with --temporal-seen-only
                    part = moving[variant]["labels"].get(label)
                    if part and part["mAP"] is not None:
                        m[f"moving_{label}_mAP"] = part["mAP"]
                par = moving[variant]["labels"].get("motion_par")
                if par:
                    m[f"moving_motion_F1@{k}_odd"] = par["plain"][f"f1@{k}"]
                    m[f"moving_motion_par_F1@{k}_odd"] = par["par"][f"f1@{k}"]
                    m["moving_motion_par_threshold"] = par["threshold"]
                if "+" in variant:
                    m["aggregate_vs_encode"] = moving[variant]["timing"]["aggregate_vs_encode"]
                    if "training" in moving[variant]:
                        m["train_s"] = moving[variant]["training"]["train_s"]
            methods[variant] = {key: round(v, 4) for key, v in m.items()}
    return {"benchmark": "fashion", "size": doc["size"], "seed": doc["seed"], "methods": methods,
            "chance_mAP": round(doc["retrieval"]["chance"]["mAP"], 4)}


def retrieval_table(result: dict[str, Any], k: int) -> str:
    cols = [f"precision@{k}", f"recall@{k}", f"f1@{k}", f"accuracy@{k}", "mAP"]
    lines = [f"| encoder | split | P@{k} | R@{k} | F1@{k} | acc@{k} | mAP |", "|---|---|---|---|---|---|---|"]
    for name, r in result["encoders"].items():
        for split in SPLITS:
            lines.append(f"| {name} | {split} | " + " | ".join(f"{r[split][c]:.3f}" for c in cols) + " |")
    ch = result["chance"]
    lines.append("| random ranking | any | " + " | ".join(f"{ch[c]:.3f}" for c in cols) + " |")
    names = list(result["encoders"])
    lines += ["", "mAP by class", "", "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cls in result["config"]["class_names"]:
        tag = " (unseen)" if result["config"]["class_names"].index(cls) in result["config"]["unseen_classes"] else ""
        lines.append(f"| {cls}{tag} | " + " | ".join(f"{result['encoders'][n]['by_class'][cls]['mAP']:.3f}"
                                                    for n in names) + " |")
    return "\n".join(lines)


def moving_table(moving: dict[str, Any], k: int) -> str:
    lines = ["| encoder | " + " | ".join(f"{t} mAP | {t} P@{k}" for t in LABEL_TITLES) + " |",
             "|---|" + "---|---|" * len(LABELS)]
    first = None
    for name, r in moving.items():
        first = first or r
        lab = r["labels"]
        lines.append(f"| {name} | " + " | ".join(f"{lab[x]['mAP']:.3f} | {lab[x][f'precision@{k}']:.3f}"
                                                  for x in LABELS) + " |")
    if first:
        lab = first["labels"]
        lines.append("| random ranking | " + " | ".join(f"{lab[x]['random_mAP']:.3f} | {lab[x]['random_precision']:.3f}"
                                                          for x in LABELS) + " |")
        lines.append("| chance (1 / classes) | " + " | ".join(f"{lab[x]['chance']:.3f} | {lab[x]['chance']:.3f}"
                                                                for x in LABELS) + " |")
    return "\n".join(lines)


def par_table(moving: dict[str, Any], k: int) -> str:
    """Motion P/R/F1@k with and without proximal-affinity re-ranking (``fashion.par_scores``), one row per method."""
    lines = [f"| method | PAR threshold | P@{k} | R@{k} | F1@{k} | with PAR: P@{k} | R@{k} | F1@{k} | empty answers |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in moving.items():
        par = r["labels"].get("motion_par")
        if not par:
            continue
        a, b = par["plain"], par["par"]
        lines.append(f"| {name} | {par['threshold']:.4f} | " + " | ".join(
            f"{x[s]:.3f}" for x in (a, b) for s in (f"precision@{k}", f"recall@{k}", f"f1@{k}"))
            + f" | {b['empty_answers']:.1%} |")
    return "\n".join(lines)


def markdown_tables(doc: dict[str, Any]) -> str:
    text = ["## Fashion-MNIST image retrieval (test split; gallery holds all classes)", "",
            retrieval_table(doc["retrieval"], doc["k"])]
    if doc.get("moving"):
        n = next(iter(doc["moving"].values()))["config"]["n_clips"]
        how = "temporal models" if doc.get("temporal_training") else "mean-pooled"
        text += ["", f"## Moving Fashion-MNIST, {how} ({n} clips, leave-one-out)", "",
                 moving_table(doc["moving"], doc["k"]), "",
                 "axis: relevant = same motion pair (left/right, up/down, zoom, rotate); direction in axis: each "
                 "query ranks only its own axis's clips, relevant = same motion (frames are the same set, only "
                 "their order differs)"]
        if any("motion_par" in r["labels"] for r in doc["moving"].values()):
            par = next(r["labels"]["motion_par"] for r in doc["moving"].values() if "motion_par" in r["labels"])
            text += ["", f"Motion with proximal-affinity re-ranking (PAR: of the top {doc['k']}, only those above the "
                     f"threshold; calibrated for the best F1 on the {par['calibrated_on']}, both scored on the "
                     f"{par['n_queries']} {par['scored_on']})", "", par_table(doc["moving"], doc["k"])]
        if doc.get("temporal_training"):
            tr = doc["temporal_training"]
            text += ["", f"Temporal models: trained on {tr['clips']} clips per (item, motion) of the train split (seed "
                     f"{tr['seed']}), {tr['epochs']} epochs; cost = aggregation time / frame-encoding time per clip", "",
                     "| method | loss | train s | ms per clip | cost vs encoding |", "|---|---|---|---|---|"]
            for name, r in doc["moving"].items():
                rec = r.get("training", {})
                text.append(f"| {name} | {rec.get('loss', '-')} | {rec.get('train_s', '-')} | "
                            f"{r['timing']['aggregate_ms_per_clip']:.3f} | {r['timing']['aggregate_vs_encode']:.4f} |")
            if tr.get("unseen_items"):
                k = doc["k"]
                text += ["", f"Seen and unseen items: the models were trained on items other than {tr['unseen_items']}; "
                         "each figure averages the queries of seen or unseen items (every clip stays a candidate)", "",
                         f"| method | split | direction in axis mAP | P@{k} | R@{k} | F1@{k} | motion mAP | P@{k} | R@{k} "
                         f"| F1@{k} |", "|---|---|---|---|---|---|---|---|---|---|"]
                for name, r in doc["moving"].items():
                    for part in ("seen", "unseen"):
                        cells = []
                        for label in ("direction_within_axis", "motion"):
                            x = r["labels"].get(f"{label}_{part}") or {}
                            cells += ["-" if x.get(s) is None else f"{x[s]:.3f}"
                                      for s in ("mAP", f"precision@{k}", f"recall@{k}", f"f1@{k}")]
                        text.append(f"| {name} | {part} | " + " | ".join(cells) + " |")
    return "\n".join(text)


def render_html(doc: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from vidsearch.evaluate.report import _figure_png

    images = []
    enc = doc["retrieval"]["encoders"]
    classes = doc["retrieval"]["config"]["class_names"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(enc), 1)
    for i, (name, r) in enumerate(enc.items()):
        ax.bar(np.arange(len(classes)) + i * width, [r["by_class"][c]["mAP"] for c in classes], width, label=name)
    ax.axhline(doc["retrieval"]["chance"]["mAP"], color="k", ls=":", lw=1, label="random ranking")
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="mAP", ylim=(0, 1.05), title="Fashion-MNIST retrieval: mAP by class (unseen: "
           + ", ".join(classes[c] for c in doc["unseen_classes"]) + ")")
    ax.legend(fontsize=7)
    images.append(("mAP by class", _figure_png(fig)))
    plt.close(fig)
    if doc.get("moving"):
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / (len(doc["moving"]) + 1)
        for i, (name, r) in enumerate(doc["moving"].items()):
            ax.bar(np.arange(len(LABELS)) + i * width, [r["labels"][x]["mAP"] for x in LABELS], width, label=name)
        first = next(iter(doc["moving"].values()))["labels"]
        ax.bar(np.arange(len(LABELS)) + len(doc["moving"]) * width, [first[x]["random_mAP"] for x in LABELS], width,
               color="grey", label="random ranking")
        ax.set_xticks(np.arange(len(LABELS)) + 0.4 - width / 2, LABEL_TITLES, fontsize=8)
        ax.set(ylabel="mAP", ylim=(0, 1.05), title="Moving Fashion-MNIST, mean pooling: mAP by label")
        ax.legend(fontsize=7)
        images.append(("Moving Fashion-MNIST", _figure_png(fig)))
        plt.close(fig)
    tables = "".join(
        "<table>" + "".join("<tr>" + "".join(f"<td>{c.strip()}</td>" for c in line.strip("|").split("|")) + "</tr>"
                            for line in block.splitlines() if line.startswith("|") and not line.startswith("|---"))
        + "</table>" for block in markdown_tables(doc).split("\n\n") if block.startswith("|"))
    figs = "".join(f"<h2>{t}</h2><img src='data:image/png;base64,{b}'/>" for t, b in images)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>vidsearch eval fashion</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{padding:2px 8px;border-bottom:1px solid #ddd}"
            "table{margin-bottom:1em}</style>"
            f"</head><body><h1>fashion ({doc['size']}, seed {doc['seed']})</h1>"
            f"<p>{doc['machine']['cpu']}, {doc['machine']['cores']} cores</p>{tables}{figs}</body></html>")
