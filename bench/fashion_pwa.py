"""Why PWA scores what it scores on Fashion-MNIST: the retrieval benchmark of bench/fashion.py (same images,
seed and metrics, through ``run_fashion_retrieval``) for variants of the aggregation and of the whitening's
fitting data, all on the same EfficientNet-Lite0 conv maps (issue #17, item 3).

    python bench/fashion_pwa.py [--seed 0] [--train-images 1000]

Variants (``<pooling>[/<parts>][+white:<data>[:<shrink>]]``): ``global`` = mean pooling of the map (the
``effnet-lite0`` encoder); ``pwa/P`` = PWA with P part channels chosen on the sample footage; ``+white:footage``
= PCA-whitening to 256 fitted on the sample footage (the ``effnet-lite0-pwa`` encoder: ``pwa/4+white:footage``);
``+white:train`` = fitted on ``--train-images`` images of Fashion-MNIST's *train* split (other data than the test
split evaluated, but the same domain); ``pwa-train/P`` = part channels chosen on those train images.
``part_activity`` in the result: how often each part channel is silent (all-zero map) on each data set.
Writes bench/results/fashion-pwa-ablation.json.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from typing import Any

import _common as C
import numpy as np

from vidsearch.encode import pwa
from vidsearch.encode.effnet import calibration_sources
from vidsearch.encode.temporal import l2_normalize


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="seeds the gallery/query choice and the train images")
    p.add_argument("--gallery", type=int, default=100)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--train-images", type=int, default=1000, help="Fashion-MNIST train images to fit on")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


class MapEncoder:
    """A frame encoder computing one variant from EfficientNet-Lite0's conv maps (cached per input batch)."""

    cache: dict[str, np.ndarray] = {}

    def __init__(self, name: str, fn: Any, dim: int, model: str) -> None:
        self.name, self.fn, self.dim, self.input_size, self.model = name, fn, dim, (224, 224), model

    def encode(self, images: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(images.tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = pwa.feature_maps(self.model, images)
        return l2_normalize(self.fn(self.cache[key]))


def _rewhiten(w: pwa.Whitening, shrink_from: float, shrink_to: float) -> pwa.Whitening:
    """The same eigenvectors with another shrinkage (``fit_whitening``'s eps = shrink * mean eigenvalue)."""
    lam = w.eigenvalues
    vectors = w.projection * np.sqrt(lam + shrink_from * lam.mean() + 1e-12)
    return pwa.Whitening(w.mean, (vectors / np.sqrt(lam + shrink_to * lam.mean() + 1e-12)).astype(np.float32), lam)


def main() -> None:
    args = parse_args()
    from vidsearch.evaluate import fashion

    payload = C.header("fashion-pwa-ablation", {k: v for k, v in vars(args).items() if k != "json"})
    t_all = time.perf_counter()
    model = str(pwa.pwa_onnx_path())
    stats = pwa.load_statistics()
    cfg = stats.config
    C.log("[fit] conv maps of the sample footage and of Fashion-MNIST train images")
    footage = np.concatenate([pwa.footage_frames(p, cfg.fit_fps, cfg.fit_flips) for p in calibration_sources()])
    foot_maps = pwa.feature_maps(model, footage)
    images, labels = fashion.load_fashion_mnist("train")
    pick = np.random.default_rng(args.seed + 1).choice(len(images), args.train_images, replace=False)
    train_maps = pwa.feature_maps(model, fashion.to_encoder_input(images[pick], (224, 224)))
    payload["fit"] = {"footage_frames": len(foot_maps), "train_images": int(len(pick)), "train_seed": args.seed + 1}

    def channels_of(maps: np.ndarray, parts: int) -> np.ndarray:
        return pwa.select_parts(pwa.Moments.of(pwa.sum_pooled(maps)), parts)

    def mean_pool(m: np.ndarray) -> np.ndarray:
        return l2_normalize(m.mean(axis=(2, 3)))

    def regional(ch: np.ndarray) -> Any:
        return lambda m: pwa.regional_vectors(m, ch, cfg.alpha, cfg.beta)

    foot_ch = {p: channels_of(foot_maps, p) for p in (1, 4, 8, 16)}
    train_ch = {p: channels_of(train_maps, p) for p in (4, 8, 16)}
    train_ch4 = train_ch[4]

    def activity(maps: np.ndarray, ch: np.ndarray) -> dict[str, Any]:
        """How the part channels respond on these maps: share of frames where a part's map is all zero, and
        its mean sum-pooled response over that of an average channel."""
        pooled = pwa.sum_pooled(maps)
        return {"silent_share": [float((pooled[:, c] <= 0).mean()) for c in ch],
                "response_over_mean_channel": [float(pooled[:, c].mean() / pooled.mean()) for c in ch]}

    payload["part_activity"] = {
        "footage channels on footage": activity(foot_maps, foot_ch[4]),
        "footage channels on fashion train": activity(train_maps, foot_ch[4]),
        "fashion-train channels on fashion train": activity(train_maps, train_ch4),
        "fashion-train channels on footage": activity(foot_maps, train_ch4),
    }
    C.log(f"[parts] {payload['part_activity']}")
    assert np.array_equal(foot_ch[4], stats.channels), (foot_ch[4], stats.channels)  # the encoder's channels
    C.log("[fit] whitening: global on footage and train, PWA on train (the footage one is the encoder's)")
    g_foot = pwa.fit_whitening(pwa.Moments.of(mean_pool(foot_maps)), cfg.dim, cfg.shrink)
    g_train = pwa.fit_whitening(pwa.Moments.of(mean_pool(train_maps)), cfg.dim, cfg.shrink)
    p_train = pwa.fit_whitening(pwa.Moments.of(regional(foot_ch[4])(train_maps)), cfg.dim, cfg.shrink)
    p_foot = stats.whitening
    p_foot_s1 = _rewhiten(p_foot, cfg.shrink, 1.0)
    p_foot_s0 = _rewhiten(p_foot, cfg.shrink, 0.0)
    payload["channels"] = {"footage": {p: c.tolist() for p, c in foot_ch.items()},
                           "train": {p: c.tolist() for p, c in train_ch.items()}}
    del foot_maps, train_maps

    variants = {
        "global": (mean_pool, 1280),
        "global+white:footage": (lambda m: g_foot.transform(mean_pool(m)), cfg.dim),
        "global+white:train": (lambda m: g_train.transform(mean_pool(m)), cfg.dim),
        "pwa/1": (regional(foot_ch[1]), 1280),
        "pwa/4": (regional(foot_ch[4]), 4 * 1280),
        "pwa/8": (regional(foot_ch[8]), 8 * 1280),
        "pwa/16": (regional(foot_ch[16]), 16 * 1280),
        "pwa-train/4": (regional(train_ch4), 4 * 1280),
        "pwa-train/8": (regional(train_ch[8]), 8 * 1280),
        "pwa-train/16": (regional(train_ch[16]), 16 * 1280),
        "pwa/4+white:footage": (lambda m: p_foot.transform(regional(foot_ch[4])(m)), cfg.dim),
        "pwa/4+white:footage:0": (lambda m: p_foot_s0.transform(regional(foot_ch[4])(m)), cfg.dim),
        "pwa/4+white:footage:1": (lambda m: p_foot_s1.transform(regional(foot_ch[4])(m)), cfg.dim),
        "pwa/4+white:train": (lambda m: p_train.transform(regional(foot_ch[4])(m)), cfg.dim),
    }
    encoders = [MapEncoder(name, fn, dim, model) for name, (fn, dim) in variants.items()]
    C.log(f"[retrieval] {len(encoders)} variants, {args.gallery} gallery + {args.queries} queries per class, "
          f"seed {args.seed}")
    result = fashion.run_fashion_retrieval(encoders, n_gallery=args.gallery, n_query=args.queries, seed=args.seed)
    payload["retrieval"] = result
    payload["total_s"] = time.perf_counter() - t_all
    rows = [[name, r["dim"], r["overall"]["mAP"], r["seen"]["mAP"], r["unseen"]["mAP"], r["overall"]["precision@5"]]
            for name, r in result["encoders"].items()]
    C.log(C.table(["variant", "dim", "mAP", "seen mAP", "unseen mAP", "P@5"], rows))
    C.emit("fashion-pwa-ablation", payload, args.json)


if __name__ == "__main__":
    main()
