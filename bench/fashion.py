"""Semantic benchmarks on Fashion-MNIST (Debian dataset-fashion-mnist), per frame encoder:
image retrieval with a seen/unseen class split, and Moving Fashion-MNIST clip retrieval with
mean-pooled frame vectors (item vs motion vs item x motion, against chance).

    python bench/fashion.py [--encoders sscd,sscd-distilled,effnet-lite0] [--json]

Retrieval: ``--gallery`` images per class as gallery, ``--queries`` other images per class as
queries, test split, seed ``--seed``; relevant = same class; macro means over classes.
Moving: ``--clips`` clips per (item, motion) class over ``--items`` (default all ten) and all eight
motions, ``--frames`` frames on a ``--size`` canvas, of which ``--encode-frames`` evenly spaced
ones (symmetric in time) are encoded and mean-pooled; every clip queries all the others.
Quality figures are deterministic for a fixed seed and data; times are wall-clock on this machine.

Writes bench/results/fashion.json; prints markdown tables (stdout, or stderr with --json).
Optionally writes a few clips as mp4 (``--write-clips DIR``) for indexing with the normal pipeline.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from typing import Any

import _common as C

ENCODERS = ("sscd", "sscd-distilled", "effnet-lite0")
SPLITS = ("overall", "seen", "unseen")
LABELS = ("item", "motion", "item_x_motion", "motion_axis", "direction_within_axis")
LABEL_TITLES = ("item", "motion", "item x motion", "axis", "direction in axis")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated frame encoders")
    p.add_argument("--seed", type=int, default=0, help="seeds every choice of images")
    p.add_argument("--gallery", type=int, default=100, help="retrieval: gallery images per class")
    p.add_argument("--queries", type=int, default=20, help="retrieval: query images per class")
    p.add_argument("--unseen", default="7,8,9", help="retrieval: comma-separated unseen class labels")
    p.add_argument("--k", type=int, default=5, help="cut-off of P/R/F1/accuracy@k")
    p.add_argument("--clips", type=int, default=20, help="moving: clips per (item, motion) class")
    p.add_argument("--items", default="", help="moving: comma-separated item labels (default all ten)")
    p.add_argument("--frames", type=int, default=16, help="moving: frames per clip")
    p.add_argument("--encode-frames", type=int, default=4, help="moving: frames encoded per clip (0 = all)")
    p.add_argument("--size", type=int, default=64, help="moving: canvas side in pixels")
    p.add_argument("--no-moving", action="store_true", help="skip the Moving Fashion-MNIST benchmark")
    p.add_argument("--write-clips", metavar="DIR", default=None, help="also write one clip per (item, motion) as mp4")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    bad = [e for e in args.encoders if e not in ENCODERS]
    if bad:
        p.error(f"unknown encoder(s) {bad}; expected some of {', '.join(ENCODERS)}")
    args.unseen = [int(c) for c in args.unseen.split(",") if c.strip()]
    args.items = [int(c) for c in args.items.split(",") if c.strip()] or None
    return args


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


def retrieval_tables(result: dict[str, Any], k: int) -> str:
    cols = [f"precision@{k}", f"recall@{k}", f"f1@{k}", f"accuracy@{k}", "mAP"]
    lines = [f"| encoder | split | P@{k} | R@{k} | F1@{k} | acc@{k} | mAP |", "|---|---|---|---|---|---|---|"]
    for name, r in result["encoders"].items():
        for split in SPLITS:
            lines.append(f"| {name} | {split} | " + " | ".join(f"{r[split][c]:.3f}" for c in cols) + " |")
    ch = result["chance"]
    lines.append(f"| random ranking | any | " + " | ".join(f"{ch[c]:.3f}" for c in cols) + " |")
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


def main() -> None:
    args = parse_args()
    from vidsearch.encode.frame import load_encoder
    from vidsearch.evaluate import fashion

    config = {k: v for k, v in vars(args).items() if k not in ("json",)}
    payload = C.header("fashion", config)
    payload["dataset"] = dataset_info()
    t_all = time.perf_counter()

    load_s = {}
    for name in args.encoders:  # load (and warm) outside the timed parts
        t = time.perf_counter()
        load_encoder(name)
        load_s[name] = time.perf_counter() - t
    payload["encoder_load_s"] = load_s

    C.log(f"[retrieval] {args.gallery} gallery + {args.queries} queries per class, seed {args.seed}")
    t = time.perf_counter()
    payload["retrieval"] = fashion.run_fashion_retrieval(
        args.encoders, n_gallery=args.gallery, n_query=args.queries, seed=args.seed,
        unseen_classes=args.unseen, k=args.k)
    payload["retrieval_s"] = time.perf_counter() - t

    if not args.no_moving:
        payload["moving"] = {}
        payload["moving_s"] = {}
        for name in args.encoders:
            C.log(f"[moving] {name}: {args.clips} clips per (item, motion), {args.frames} frames, "
                  f"encoding {args.encode_frames or args.frames}")
            t = time.perf_counter()
            payload["moving"][name] = fashion.run_moving_fashion(
                name, n_per_class=args.clips, frames=args.frames, size=args.size, seed=args.seed,
                items=args.items, encode_frames=args.encode_frames or None, k=args.k)
            payload["moving_s"][name] = time.perf_counter() - t
            C.log(f"[moving] {name}: {payload['moving_s'][name]:.1f} s")

    if args.write_clips:
        clips = fashion.make_moving_fashion(1, frames=args.frames, size=args.size, seed=args.seed, items=args.items)
        paths = fashion.write_clips(clips, args.write_clips)
        payload["written_clips"] = [str(p) for p in paths]
        C.log(f"wrote {len(paths)} clips to {args.write_clips}")

    payload["total_s"] = time.perf_counter() - t_all
    payload["load_avg_end_1_5_15"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    payload["process_cpu_s"] = time.process_time()  # CPU time this process got (vs total_s: machine contention)
    text = ["## Fashion-MNIST image retrieval (test split; gallery holds all classes)", "",
            retrieval_tables(payload["retrieval"], args.k)]
    if "moving" in payload:
        n = next(iter(payload["moving"].values()))["config"]["n_clips"] if payload["moving"] else 0
        text += ["", f"## Moving Fashion-MNIST, mean-pooled ({n} clips, leave-one-out)", "",
                 moving_table(payload["moving"], args.k)]
        text += ["", "axis: relevant = same motion pair (left/right, up/down, zoom, rotate); direction in axis: "
                 "each query ranks only its own axis's clips, relevant = same motion (frames are the same set, "
                 "only their order differs)"]
    text += ["", f"total {payload['total_s']:.0f} s (retrieval {payload['retrieval_s']:.0f} s"
             + (", moving " + ", ".join(f"{k} {v:.0f} s" for k, v in payload["moving_s"].items())
                if "moving_s" in payload else "") + ")"]
    out = "\n".join(text)
    if args.json:
        C.log(out)
    else:
        print(out)
        sys.stdout.flush()
    C.emit("fashion", payload, args.json)


if __name__ == "__main__":
    main()
