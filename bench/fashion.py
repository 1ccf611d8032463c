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

With ``--temporal mean,lstm,attention`` the learned temporal models are trained on clips of the train split
(``--train-clips`` per class, ``--train-epochs``) and compared with mean pooling on the same evaluation clips;
that run writes bench/results/fashion-temporal.json.

Writes bench/results/fashion.json; prints markdown tables (stdout, or stderr with --json).
Optionally writes a few clips as mp4 (``--write-clips DIR``) for indexing with the normal pipeline.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as C

from vidsearch.encode.registry import encoder_names
from vidsearch.evaluate.fashion_eval import dataset_info, markdown_tables

ENCODERS = tuple(encoder_names())


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
    p.add_argument("--temporal", default="", help="moving: comma-separated temporal models, mean|lstm|attention"
                   "[:infonce|triplet|ce]; learned ones are trained on clips of the train split first (default: "
                   "mean pooling only, as before)")
    p.add_argument("--train-seen-only", action="store_true",
                   help="--temporal: train on the seen item classes only (all but --unseen) and report the moving "
                        "figures of seen and unseen items apart (the CNN + LSTM paper's split)")
    p.add_argument("--train-clips", type=int, default=20, help="--temporal: training clips per (item, motion)")
    p.add_argument("--train-epochs", type=int, default=30, help="--temporal: training epochs")
    p.add_argument("--models-dir", default="bench/results/fashion-models", help="--temporal: where trained models go")
    p.add_argument("--write-clips", metavar="DIR", default=None, help="also write one clip per (item, motion) as mp4")
    p.add_argument("--out", default="", help="result name under bench/results/ (default: fashion, or "
                   "fashion-temporal with --temporal), e.g. fashion-pwa for effnet-lite0-pwa against effnet-lite0")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.encoders = C.encoder_list(p, args.encoders, ENCODERS)
    args.unseen = [int(c) for c in args.unseen.split(",") if c.strip()]
    args.items = [int(c) for c in args.items.split(",") if c.strip()] or None
    args.temporal = [t.strip() for t in args.temporal.split(",") if t.strip()]
    return args



def clip_filename(index: int, clip: Any) -> str:
    """``00012_t-shirt-top_rotate_cw.mp4``: index, item name, motion."""
    slug = re.sub(r"[^a-z0-9]+", "-", clip.item_name.lower()).strip("-")
    return f"{index:05d}_{slug}_{clip.motion}.mp4"


def write_clips(clips: Sequence[Any], folder: str | os.PathLike[str], fps: int = 8) -> list[Path]:
    """Write ``MovingClip``s as mp4 into ``folder`` (created), named by :func:`clip_filename`; returns the paths."""
    from vidsearch.evaluate import fashion

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return [fashion.write_clip(c, out / clip_filename(i, c), fps) for i, c in enumerate(clips)]


def main() -> None:
    args = parse_args()
    from vidsearch.encode.frame import load_encoder
    from vidsearch.evaluate import fashion

    config = {k: v for k, v in vars(args).items() if k not in ("json", "out")}
    payload = C.header("fashion", config)
    payload["dataset"] = dataset_info()
    t_all = time.perf_counter()

    load_s = {}
    for name in args.encoders:  # load (and warm) outside the timed parts
        t = time.perf_counter()
        enc = load_encoder(name)
        load_s[name] = time.perf_counter() - t
        if hasattr(enc, "describe"):  # fitted statistics (effnet-lite0-pwa: part channels, fitting footage)
            payload.setdefault("encoder_info", {})[name] = enc.describe()
    payload["encoder_load_s"] = load_s

    C.log(f"[retrieval] {args.gallery} gallery + {args.queries} queries per class, seed {args.seed}")
    t = time.perf_counter()
    payload["retrieval"] = fashion.run_fashion_retrieval(
        args.encoders, n_gallery=args.gallery, n_query=args.queries, seed=args.seed,
        unseen_classes=args.unseen, k=args.k)
    payload["retrieval_s"] = time.perf_counter() - t

    if not args.no_moving and args.temporal:
        from vidsearch.evaluate.fashion_eval import parse_temporal, run_temporal_moving

        models = parse_temporal(args.temporal)
        training = {"clips": args.train_clips, "epochs": args.train_epochs, "split": "train", "seed": args.seed + 1,
                    "unseen_items": args.unseen if args.train_seen_only else None}
        cfg = {"clips": args.clips, "frames": args.frames, "size": args.size, "encode_frames": args.encode_frames}
        payload["temporal_training"] = training
        payload["moving"], payload["moving_s"] = {}, {}
        payload["load_before"] = list(os.getloadavg())
        for name in args.encoders:
            C.log(f"[moving] {name}: temporal models {', '.join(args.temporal)}; training on {args.train_clips} "
                  f"train-split clips per (item, motion), {args.train_epochs} epochs")
            t = time.perf_counter()
            payload["moving"].update(run_temporal_moving(Path(args.models_dir), name, cfg, models, training, args.seed,
                                                         args.k, C.log, payload["moving_s"]))
            payload["moving_s"][name] = time.perf_counter() - t
        payload["load_after"] = list(os.getloadavg())
    elif not args.no_moving:
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
        paths = write_clips(clips, args.write_clips)
        payload["written_clips"] = [str(p) for p in paths]
        C.log(f"wrote {len(paths)} clips to {args.write_clips}")

    payload["total_s"] = time.perf_counter() - t_all
    payload["process_cpu_s"] = time.process_time()  # CPU time this process got (vs total_s: machine contention)
    text = [markdown_tables({"retrieval": payload["retrieval"], "moving": payload.get("moving"), "k": args.k,
                             "temporal_training": payload.get("temporal_training")})]
    text += ["", f"total {payload['total_s']:.0f} s (retrieval {payload['retrieval_s']:.0f} s"
             + (", moving " + ", ".join(f"{k} {v:.0f} s" for k, v in payload["moving_s"].items())
                if "moving_s" in payload else "") + ")"]
    out = "\n".join(text)
    if args.json:
        C.log(out)
    else:
        print(out)
        sys.stdout.flush()
    # a --temporal run leaves fashion.json (the mean-only figures) as it is
    C.emit(args.out or ("fashion-temporal" if args.temporal else "fashion"), payload, args.json)


if __name__ == "__main__":
    main()
