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

SIZES: dict[str, dict[str, Any]] = {
    "small": {"encoders": ["sscd-distilled"], "gallery": 20, "queries": 5, "clips": 2, "frames": 16,
              "encode_frames": 4, "size": 64},
    "full": {"encoders": ["sscd", "sscd-distilled", "effnet-lite0"], "gallery": 100, "queries": 20, "clips": 20,
             "frames": 16, "encode_frames": 4, "size": 64},
}


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


def run_fashion_eval(out: Path, size: str = "small", encoders: list[str] | None = None, seed: int = 0,
                     unseen: tuple[int, ...] = (7, 8, 9), k: int = 5, moving: bool = True,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run both Fashion-MNIST benchmarks and write ``out/results.json`` and ``out/report.html``."""
    from vidsearch.config import EncodeConfig
    from vidsearch.evaluate import fashion, provenance
    from vidsearch.evaluate.report import machine

    record = provenance.start()
    if size not in SIZES:
        raise ConfigError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    cfg = dict(SIZES[size])
    cfg["encoders"] = list(encoders or cfg["encoders"])
    for name in cfg["encoders"]:  # an unknown encoder fails here, before the data set is read
        EncodeConfig(encoder=name)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"benchmark": "fashion", "size": size, "seed": seed, "k": k, "unseen_classes": list(unseen),
                           "config": cfg, "dataset": dataset_info(), "provenance": provenance.public(record),
                           "partial": False, "missing": {}, "machine": machine(),
                           "versions": library_versions(), "timing_s": {}}
    t = time.perf_counter()
    if progress:
        progress(f"Fashion-MNIST retrieval: {cfg['gallery']} gallery + {cfg['queries']} queries per class, "
                 f"encoders {', '.join(cfg['encoders'])}")
    doc["retrieval"] = fashion.run_fashion_retrieval(cfg["encoders"], n_gallery=cfg["gallery"], n_query=cfg["queries"],
                                                     seed=seed, unseen_classes=unseen, k=k)
    doc["timing_s"]["retrieval"] = round(time.perf_counter() - t, 2)
    if moving:
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


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"benchmark", "methods": {encoder: {"mAP", "mAP_seen", "mAP_unseen", "P@k", ..., "moving_*_mAP"}}}``."""
    k = doc["k"]
    methods: dict[str, dict[str, float]] = {}
    for name, r in doc["retrieval"]["encoders"].items():
        m = {"mAP": r["overall"]["mAP"], "mAP_seen": r["seen"]["mAP"], "mAP_unseen": r["unseen"]["mAP"],
             f"P@{k}": r["overall"][f"precision@{k}"], f"R@{k}": r["overall"][f"recall@{k}"],
             f"F1@{k}": r["overall"][f"f1@{k}"], f"accuracy@{k}": r["overall"][f"accuracy@{k}"]}
        for label in LABELS:
            if name in doc.get("moving", {}):
                m[f"moving_{label}_mAP"] = doc["moving"][name]["labels"][label]["mAP"]
        methods[name] = {key: round(v, 4) for key, v in m.items()}
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


def markdown_tables(doc: dict[str, Any]) -> str:
    text = ["## Fashion-MNIST image retrieval (test split; gallery holds all classes)", "",
            retrieval_table(doc["retrieval"], doc["k"])]
    if doc.get("moving"):
        n = next(iter(doc["moving"].values()))["config"]["n_clips"]
        text += ["", f"## Moving Fashion-MNIST, mean-pooled ({n} clips, leave-one-out)", "",
                 moving_table(doc["moving"], doc["k"]), "",
                 "axis: relevant = same motion pair (left/right, up/down, zoom, rotate); direction in axis: each "
                 "query ranks only its own axis's clips, relevant = same motion (frames are the same set, only "
                 "their order differs)"]
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
