"""PWA against global pooling on frame-level copy detection (issue #17, item 3): why the VSC-style figures differ.

    python bench/pwa_copies.py [--seed 0]

References: every frame at 1 fps of the held-out real footage (opencv-doc's videos, never in the PWA fitting data;
Megamind_bugy.avi left out, a copy of Megamind.avi). Queries: every other reference frame through each edit
(crop 70 %, horizontal flip, photometric, blur, noise, text overlay, half size), at full resolution, then resized to
224 x 224 like the references. Relevant: the one source frame; AP of a query = 1 / rank of its source (mAP = MRR);
recall@1. Variants as in bench/fashion_pwa.py, on the same conv maps. Writes bench/results/pwa-copies.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _common as C
import numpy as np
from PIL import Image

from vidsearch.encode import pwa
from vidsearch.encode.effnet import calibration_sources
from vidsearch.encode.temporal import l2_normalize
from vidsearch.evaluate import edits, samples


def _224(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((224, 224), Image.Resampling.BILINEAR)) for f in frames])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="seeds the noise edit")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    payload = C.header("pwa-copies", {"seed": args.seed})
    t_all = time.perf_counter()
    model = str(pwa.pwa_onnx_path())
    stats = pwa.load_statistics()
    cfg = stats.config

    videos = [v for v in samples.opencv_videos() if v.name != "Megamind_bugy.avi"]
    refs: list[np.ndarray] = []
    for v in videos:
        frames, _ = edits.decode_rgb(v, max_fps=1.0)
        refs += frames
    edit_fns = {"crop70": edits.crop(0.7), "hflip": edits.hflip(), "photometric": edits.photometric(0.1, 1.3, 0.8),
                "blur": edits.blur(3.0), "noise": edits.noise(20.0, args.seed), "text": edits.text_overlay(),
                "half-size": edits.resize(0.5)}
    sources = np.arange(0, len(refs), 2)
    queries, q_source, q_edit = [], [], []
    for name, fn in edit_fns.items():
        out, _ = fn([refs[i] for i in sources], 1.0)
        queries += out
        q_source += sources.tolist()
        q_edit += [name] * len(sources)
    payload["data"] = {"videos": [v.name for v in videos], "references": len(refs), "queries": len(queries)}
    C.log(f"[data] {len(refs)} reference frames of {len(videos)} held-out videos, {len(queries)} edited queries")

    ref_maps = pwa.feature_maps(model, _224(refs))
    q_maps = pwa.feature_maps(model, _224(queries))
    foot = np.concatenate([pwa.footage_frames(f, cfg.fit_fps, cfg.fit_flips) for f in calibration_sources()])
    foot_maps = pwa.feature_maps(model, foot)
    ch = {n: pwa.select_parts(pwa.Moments.of(pwa.sum_pooled(foot_maps)), n) for n in (4, 16)}

    def mean_pool(m: np.ndarray) -> np.ndarray:
        return l2_normalize(m.mean(axis=(2, 3)))

    g_white = pwa.fit_whitening(pwa.Moments.of(mean_pool(foot_maps)), cfg.dim, cfg.shrink)
    del foot_maps
    variants: dict[str, Any] = {
        "global": mean_pool,
        "global+white:footage": lambda m: g_white.transform(mean_pool(m)),
        "pwa/4": lambda m: pwa.regional_vectors(m, ch[4], cfg.alpha, cfg.beta),
        "pwa/16": lambda m: pwa.regional_vectors(m, ch[16], cfg.alpha, cfg.beta),
        "pwa/4+white:footage": lambda m: stats.whitening.transform(pwa.regional_vectors(m, ch[4], cfg.alpha, cfg.beta)),
    }
    results: dict[str, Any] = {}
    q_source_a, q_edit_a = np.asarray(q_source), np.asarray(q_edit)
    for name, fn in variants.items():
        xb, xq = l2_normalize(fn(ref_maps)), l2_normalize(fn(q_maps))
        sim = xq @ xb.T
        rank = (sim > sim[np.arange(len(xq)), q_source_a][:, None]).sum(axis=1) + 1  # ties count for the source
        ap = 1.0 / rank
        results[name] = {"mAP": float(ap.mean()), "recall@1": float((rank == 1).mean()),
                         "by_edit": {e: float(ap[q_edit_a == e].mean()) for e in edit_fns}}
    payload["results"] = results
    payload["total_s"] = time.perf_counter() - t_all
    rows = [[n, r["mAP"], r["recall@1"], *[r["by_edit"][e] for e in edit_fns]] for n, r in results.items()]
    C.log(C.table(["variant", "mAP", "R@1", *edit_fns], rows))
    C.emit("pwa-copies", payload, args.json)


if __name__ == "__main__":
    main()
