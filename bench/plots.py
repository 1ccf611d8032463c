"""Plots of the ANN and compression benchmarks, drawn from their result files (no measuring here).

    python bench/plots.py            # reads bench/results/ann-*.json and compress.json
                                     # writes bench/results/plots/*.png

1. ``ann-<data>-<n>.png``: every method's single-query p50 latency against RAM bytes per vector, both
   log scales, recall@10 in the label: the issue's trade-off (HNSW's speed vs PQ's memory).
2. ``ann-scaling.png``: p50 latency against collection size, exact scan beside our index, the 10M
   run added when its result file exists.
3. ``compress-rerank.png``: recall@10 against re-rank depth for PQ / OPQ / learned PQ at equal bytes.
4. ``segments-map.png``: segment-level near-duplicate mAP against bytes per vector (bench/segments.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402
import numpy as np  # noqa: E402

OUT = common.RESULTS_DIR / "plots"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: Path, legend: int | None = 8) -> None:  # type: ignore[no-untyped-def]
    """Grid, legend, layout; write the PNG and free the figure."""
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def plot_tradeoff(doc: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    placed: list[tuple[float, float]] = []
    for name, m in doc["methods"].items():
        style = dict(marker="*", s=180, color="crimson") if name == "vidsearch" else dict(marker="o", s=50)
        ax.scatter(m["ram_bytes_per_vector"], m["p50_ms"], **style)
        flag = "" if m.get("reached_target", True) else " (best, < 0.98)"
        ours = name.startswith("vidsearch")  # ours labelled below-right, peers above-right: they sit close
        x, y = m["ram_bytes_per_vector"], m["p50_ms"]
        # a peer on top of an already labelled one (within ~15 % on both axes) gets its label lower down
        stacked = sum(1 for px, py in placed if abs(np.log(x / px)) < 0.15 and abs(np.log(y / py)) < 0.15)
        placed.append((x, y))
        ax.annotate(f"{name}\nR@10 {m['recall10']:.3f}{flag}", (x, y),
                    textcoords="offset points", xytext=(8, (-18 if ours else 4) - 22 * stacked), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("RAM bytes per vector (re-rank vectors on disk not counted)")
    ax.set_ylabel("single-query p50 latency, ms (1 thread)")
    cfg = doc.get("config", {})
    ax.set_title(f"{cfg.get('data', '?')} n={doc['n']:,} d={doc['dim']}: cheapest setting with recall@10 >= 0.98",
                 fontsize=9)
    _finish(fig, ax, path, legend=None)


def plot_scaling(doc: dict[str, Any], extra: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    rows = [r for r in doc.get("scaling", [])]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, label, color in (("faiss_flat", "exact scan (faiss Flat)", "grey"), ("vidsearch", "vidsearch index", "crimson")):
        pts = [(r["n"], r[key]["p50_ms"]) for r in rows if key in r]
        for e in extra:  # larger runs (10M): their own result files
            if key == "vidsearch" and "vidsearch" in e["methods"]:
                pts.append((e["n"], e["methods"]["vidsearch"]["p50_ms"]))
            if key == "faiss_flat" and e.get("exact_single_query"):
                pts.append((e["n"], e["exact_single_query"]["p50_ms"]))
        pts.sort()
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vectors in the collection (256-d synthetic)")
    ax.set_ylabel("single-query p50 latency, ms")
    ax.set_title("latency vs collection size (vidsearch at recall@10 >= 0.98)", fontsize=9)
    _finish(fig, ax, path)


def plot_compress(doc: dict[str, Any], path: Path) -> None:
    plt = _plt()
    datasets = doc["datasets"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.2), squeeze=False)
    for ax, (dname, d) in zip(axes[0], datasets.items()):
        colors: dict[str, str] = {}
        for size, methods in d["sizes"].items():
            for method, r in methods.items():
                color = colors.setdefault(method, f"C{len(colors)}")  # one colour per method, one line style per size
                curve = sorted((int(depth), rec) for depth, rec in r["recall_at_10_after_rerank"].items())
                ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", color=color,
                        linestyle="-" if size == min(d["sizes"], key=int) else "--", label=f"{method} {size} B")
        ax.axhline(0.95, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("re-rank depth (candidates re-scored exactly; 10 = codes only)")
        ax.set_ylabel("recall@10")
        ax.set_title(f"{dname}: n={d['n_base']:,}, d={d['dim']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_segments(doc: dict[str, Any], path: Path) -> None:
    import re

    plt = _plt()
    res = doc["results"]
    fig, ax = plt.subplots(figsize=(6, 4))
    by_method: dict[str, list[tuple[int, float]]] = {}
    for name, r in res.items():
        m = re.fullmatch(r"([a-z_]+?)(\d+)", name)
        if m:
            by_method.setdefault(m.group(1), []).append((int(m.group(2)), r["mAP_segments"]))
    for method, pts in by_method.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    if "exact" in res:
        ax.axhline(res["exact"]["mAP_segments"], color="grey", linestyle=":", label="exact (float32, 2048 B)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector (codes only, no re-rank)")
    ax.set_ylabel("segment-level near-duplicate mAP")
    ax.set_title(f"{doc['query_segments']:,} query segments vs {doc['reference_segments']:,} reference segments (SSCD)",
                 fontsize=9)
    _finish(fig, ax, path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    big = []
    for path in sorted(common.RESULTS_DIR.glob("ann-*.json")):
        doc = _load(path)
        if not doc or "methods" not in doc:
            continue
        if len(doc["methods"]) > 1:
            target = OUT / f"{path.stem}.png"
            plot_tradeoff(doc, target)
            written.append(target)
        if doc.get("n", 0) > 1_000_000 and doc.get("config", {}).get("data") == "synthetic":
            big.append(doc)
    base = _load(common.RESULTS_DIR / "ann-synthetic-1000000.json")
    if base:
        target = OUT / "ann-scaling.png"
        plot_scaling(base, big, target)
        written.append(target)
    comp = _load(common.RESULTS_DIR / "compress.json")
    if comp:
        target = OUT / "compress-rerank.png"
        plot_compress(comp, target)
        written.append(target)
    seg = _load(common.RESULTS_DIR / "segments.json")
    if seg:
        target = OUT / "segments-map.png"
        plot_segments(seg, target)
        written.append(target)
    for w in written:
        common.log(f"wrote {w.relative_to(common.REPO_DIR) if w.is_relative_to(common.REPO_DIR) else w}")


if __name__ == "__main__":
    main()
