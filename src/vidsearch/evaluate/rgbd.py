"""Synthetic RGB-D benchmark: classes that only depth can tell apart (``vidsearch eval rgbd``).

No real RGB-D footage ships offline, so a small renderer makes it. Each clip shows a textured sphere in front of
a textured wall 4 m away. The sphere's distance follows one of four **depth motions**: ``toward`` (about 3.2 m to
1.2 m), ``away`` (the reverse), ``near`` (about 1.2 m, still) and ``far`` (about 3.2 m, still). Its physical size
grows with its distance so that **its picture never changes**: the colour frames of a clip are a function of the
clip's appearance draws only (which of 8 looks, wall texture, position, drift, radius, noise), drawn independently
of the motion class, so colour alone cannot do better than chance on the motion (a test renders one clip under
every class and checks the colour frames are identical). The depth frames (millimetres, 16-bit, with 1 % noise
and 2 % missing readings like a structured-light sensor) show the sphere's distance and its change.

Methods, each a segment vector per clip, ranked by cosine, leave-one-out (as Moving Fashion-MNIST):

- ``colour+mean``: today's pipeline, the mean of the frame encoder's vectors;
- ``colour+lstm``: an LSTM trained on the colour vectors alone (the same training as below): what colour can learn;
- ``depth+lstm``: an LSTM over :func:`vidsearch.encode.depth.depth_vectors` alone;
- ``rgbd-early+lstm``: an LSTM over each frame's fused colour + depth vector (early fusion);
- ``rgbd-late``: the colour mean and the ``depth+lstm`` segment vector, fused (late fusion), the depth part
  weighted by the one of :data:`LATE_WEIGHTS` that scores best on the train split.

Each LSTM is trained with cross-entropy on the motion class of clips rendered from another seed (the train
split), exported to ONNX and run by ONNX Runtime. Reported: the motion-in-depth mAP and P/R/F1@5; the
appearance mAP (which of the 8 looks, a colour-only distinction: a fused vector ranks clips that share the motion
too above those that share the look only, so it loses here by design); the mAP of look and motion together (a
copy shares both); and, for colour-only data, that the late-fusion vector with no depth ranks exactly as colour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError

MOTIONS: tuple[str, ...] = ("toward", "away", "near", "far")
"""The depth-motion classes."""
APPEARANCES = 8
"""Looks of the sphere: hue and stripe pattern (a colour-only distinction)."""
WALL_M = 4.0
FOCAL_PX = 1.0  # focal length in units of the frame size (a 90-degree-ish view)
NEAR_M, FAR_M = 1.2, 3.2
LATE_WEIGHTS = (0.5, 1.0, 2.0, 3.0, 4.0)
"""Weights of the depth part tried for late fusion (:func:`vidsearch.encode.depth.fuse`)."""

SIZES: dict[str, dict[str, Any]] = {
    # tests: a few clips and epochs (seconds)
    "tiny": {"train_per_class": 8, "test_per_class": 6, "frames": 8, "size": 64, "epochs": 4},
    "small": {"train_per_class": 100, "test_per_class": 40, "frames": 8, "size": 96, "epochs": 40},
}


@dataclass(frozen=True)
class RGBDClip:
    """A rendered clip: colour (T, S, S, 3) uint8, depth (T, S, S) uint16 millimetres, its motion class (index
    into :data:`MOTIONS`) and appearance (0..APPEARANCES-1)."""

    colour: NDArray[np.uint8]
    depth: NDArray[np.uint16]
    motion: int
    appearance: int


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _texture(rng: np.random.Generator, size: int, cells: int = 6) -> NDArray[np.float32]:
    """A smooth random colour texture (S, S, 3) in [0, 1]: a coarse random grid upsampled bilinearly (Pillow)."""
    from PIL import Image

    coarse = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0


def render_clip(seed: int, index: int, motion: int, frames: int = 8, size: int = 96) -> RGBDClip:
    """Clip ``index`` of ``seed`` under depth motion ``motion`` (index into :data:`MOTIONS`).

    The colour frames depend on (seed, index) only, never on ``motion`` (the module doc says why).
    """
    if motion not in range(len(MOTIONS)):
        raise ConfigError(f"motion must be 0..{len(MOTIONS) - 1} ({', '.join(MOTIONS)}), got {motion}")
    look = _rng(seed, index, 0)  # everything the colour frames depend on
    appearance = int(look.integers(APPEARANCES))
    wall = _texture(look, size)
    radius = size * look.uniform(0.16, 0.24)
    cx, cy = size * look.uniform(0.35, 0.65, 2)
    drift = size * look.uniform(-0.012, 0.012, 2)  # pixels a frame
    hue = np.asarray([0.5 + 0.5 * np.cos(2 * np.pi * (appearance / APPEARANCES + c / 3)) for c in range(3)], np.float32)
    stripe_angle = np.pi * (appearance % 4) / 4
    stripe_freq = 3.0 + 3.0 * (appearance // 4)
    colour_noise = look.normal(0, 3.0, (frames, size, size, 3)).astype(np.float32)

    depth_rng = _rng(seed, index, 1 + motion)  # the depth's own draws: class-dependent, colour-independent
    jitter = depth_rng.uniform(-0.2, 0.2, 2)
    start, end = {"toward": (FAR_M, NEAR_M), "away": (NEAR_M, FAR_M),
                  "near": (NEAR_M, NEAR_M), "far": (FAR_M, FAR_M)}[MOTIONS[motion]]
    z = np.linspace(start + jitter[0], end + jitter[1], frames) if start != end else np.full(frames, start + jitter[0])

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    light = np.asarray([-0.4, -0.5, -0.77], np.float32)
    light /= np.linalg.norm(light)
    colour = np.empty((frames, size, size, 3), np.uint8)
    depth = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        x0, y0 = cx + drift[0] * t, cy + drift[1] * t
        u, v = (xs - x0) / radius, (ys - y0) / radius
        r2 = u * u + v * v
        inside = r2 < 1.0
        w = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))  # the sphere's surface towards the camera
        shade = np.clip(-(u * light[0] + v * light[1] - w * light[2]), 0.0, 1.0) * 0.8 + 0.2
        stripes = 0.6 + 0.4 * np.sin(stripe_freq * np.pi * (u * np.cos(stripe_angle) + v * np.sin(stripe_angle)))
        sphere = hue[None, None, :] * (shade * stripes)[..., None]
        img = np.where(inside[..., None], sphere, wall * 0.7) * 255.0 + colour_noise[t]
        colour[t] = np.clip(img, 0, 255).astype(np.uint8)
        # depth: the wall, and the sphere whose radius in metres keeps its picture the same size at distance z
        r_m = radius / (FOCAL_PX * size) * z[t]
        d = np.where(inside, z[t] - r_m * w, WALL_M)
        d = d * (1.0 + depth_rng.normal(0, 0.01, d.shape))
        mm = np.clip(np.round(d * 1000.0), 1, 65535).astype(np.uint16)
        mm[depth_rng.random(d.shape) < 0.02] = 0  # missing readings
        depth[t] = mm
    return RGBDClip(colour, depth, motion, appearance)


def make_clips(per_class: int, seed: int, frames: int = 8, size: int = 96) -> list[RGBDClip]:
    """``per_class`` clips of every motion: clip i has motion i % 4 and its own appearance draws."""
    return [render_clip(seed, i, i % len(MOTIONS), frames, size) for i in range(per_class * len(MOTIONS))]


@dataclass(frozen=True)
class EncodedClips:
    """Per-frame vectors of rendered clips: colour (N, T, Dc), depth (N, T, Dd), labels (N,) each."""

    colour: NDArray[np.float32]
    depth: NDArray[np.float32]
    motion: NDArray[np.int64]
    appearance: NDArray[np.int64]


def encode_clips(clips: list[RGBDClip], encoder: Any) -> EncodedClips:
    """The frame encoder's vectors of every colour frame and :func:`depth_vectors` of every depth frame."""
    from vidsearch.encode.depth import depth_vectors
    from vidsearch.evaluate.fashion import encode_images

    n, t = len(clips), clips[0].colour.shape[0]
    colour = encode_images(encoder, np.concatenate([c.colour for c in clips])).reshape(n, t, -1)
    depth = np.stack([depth_vectors(c.depth) for c in clips])
    return EncodedClips(colour, depth, np.asarray([c.motion for c in clips]), np.asarray([c.appearance for c in clips]))


def _streams(data: EncodedClips) -> dict[str, NDArray[np.float32]]:
    """The per-frame inputs of the learned models: colour, depth, and both fused (early fusion)."""
    from vidsearch.encode.depth import fuse

    n, t, _ = data.colour.shape
    early = fuse(data.colour.reshape(n * t, -1), data.depth.reshape(n * t, -1)).reshape(n, t, -1)
    return {"colour": data.colour, "depth": data.depth, "rgbd-early": early}


def _train(name: str, frames: NDArray[np.float32], labels: NDArray[np.int64], epochs: int, seed: int,
           models_dir: Path, progress: Callable[[str], None] | None) -> tuple[Any, dict[str, Any]]:
    """An LSTM trained with cross-entropy on the motion class, exported to ONNX; (ONNX Runtime model, record)."""
    from vidsearch.encode.temporal import OnnxTemporalModel
    from vidsearch.train.datasets import clip_set
    from vidsearch.train.loop import TrainConfig, export_onnx, train_temporal

    clips = clip_set(frames, labels, source=f"rgbd synthetic ({name}, train split)")
    config = TrainConfig(model="lstm", loss="ce", epochs=epochs, seed=seed, frames=frames.shape[1], batch_size=32)
    if progress:
        progress(f"training {name}+lstm (ce, {epochs} epochs) on {len(clips)} clips of {frames.shape[2]}-d frames")
    result = train_temporal(clips, config, progress=progress)
    path = export_onnx(result, models_dir / f"{name}+lstm.onnx", sample=clips.resampled(config.frames)[:32],
                       extra={"data": clips.source}, streams="depth" if name == "rgbd-early" else "")
    return OnnxTemporalModel(path), {"model": str(path), "weights_sha256": result.weights_hash(),
                                     "train_s": round(result.seconds, 2),
                                     "history": [round(v, 5) for v in result.history], "clips": len(clips)}


def _retrieval(vectors: NDArray[np.float32], labels: NDArray[np.int64], k: int) -> dict[str, Any]:
    """Leave-one-out cosine retrieval; relevant = same label: mAP, P/R/F1@k (macro over labels), chance."""
    from vidsearch.encode.temporal import l2_normalize
    from vidsearch.evaluate.fashion import _label_scores, _rank

    v = l2_normalize(np.asarray(vectors, np.float32))
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    order = _rank(sim)[:, :-1]  # the query itself (-inf) is last: dropped
    _, summary = _label_scores(order, labels.tolist(), k)
    return {key: (round(val, 4) if isinstance(val, float) else val) for key, val in summary.items()}


def run_rgbd(out: Path, size: str = "small", seed: int = 0, encoder: str = "sscd-distilled", k: int = 5,
             epochs: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Render the train (seed + 1) and test (seed) clips, encode them, train the three LSTMs, score the five
    methods (module doc); write ``out/results.json`` and the models under ``out/models``.

    Raises:
        ConfigError: an unknown size or encoder.
    """
    from vidsearch.config import EncodeConfig
    from vidsearch.encode.depth import fuse
    from vidsearch.encode.frame import load_encoder
    from vidsearch.evaluate import provenance
    from vidsearch.evaluate.report import machine
    from vidsearch.store.manifest import atomic_write_text, library_versions

    if size not in SIZES:
        raise ConfigError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    EncodeConfig(encoder=encoder)  # an unknown encoder fails before any work
    record = provenance.start()
    cfg = dict(SIZES[size])
    if epochs is not None:
        cfg["epochs"] = epochs
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t = time.perf_counter()
    if progress:
        progress(f"rendering {cfg['train_per_class']} train and {cfg['test_per_class']} test clips per motion "
                 f"({cfg['frames']} frames, {cfg['size']} px)")
    train = make_clips(cfg["train_per_class"], seed + 1, cfg["frames"], cfg["size"])
    test = make_clips(cfg["test_per_class"], seed, cfg["frames"], cfg["size"])
    timing["render"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    enc = load_encoder(encoder)
    train_v, test_v = encode_clips(train, enc), encode_clips(test, enc)
    timing["encode"] = round(time.perf_counter() - t, 2)
    train_s, test_s = _streams(train_v), _streams(test_v)
    segments: dict[str, NDArray[np.float32]] = {"colour+mean": test_v.colour.mean(axis=1)}
    training: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name in ("colour", "depth", "rgbd-early"):
        model, training[f"{name}+lstm"] = _train(name, train_s[name], train_v.motion, cfg["epochs"], seed,
                                                 out / "models", progress)
        t = time.perf_counter()
        models[name] = model
        segments[f"{name}+lstm"] = model.aggregate_many(list(test_s[name]))
        training[f"{name}+lstm"]["inference_ms_per_segment"] = round(
            1000 * (time.perf_counter() - t) / len(test_s[name]), 4)
    # late fusion's weight of the depth part: chosen on the train split (best mean of motion and appearance mAP)
    train_depth = models["depth"].aggregate_many(list(train_s["depth"]))
    train_colour = train_v.colour.mean(axis=1)
    scored = {}
    for w in LATE_WEIGHTS:
        fused = fuse(train_colour, train_depth, w)
        scored[w] = (_retrieval(fused, train_v.motion, k)["mAP"] + _retrieval(fused, train_v.appearance, k)["mAP"]) / 2
    late_weight = max(LATE_WEIGHTS, key=lambda w: (scored[w], -w))
    segments["rgbd-late"] = fuse(segments["colour+mean"], segments["depth+lstm"], late_weight)
    training["rgbd-late"] = {"depth_weight": late_weight, "chosen_on": "train split",
                             "train_split_scores": {str(w): round(v, 4) for w, v in scored.items()}}
    # colour-only data (no depth): the late-fusion vector with an absent depth part must rank as colour alone
    absent = fuse(segments["colour+mean"], np.zeros_like(segments["depth+lstm"]), late_weight)
    both = test_v.appearance * len(MOTIONS) + test_v.motion  # the same look and the same motion: a copy
    methods = {}
    for name, vectors in segments.items():
        methods[name] = {"motion": _retrieval(vectors, test_v.motion, k),
                         "appearance": _retrieval(vectors, test_v.appearance, k),
                         "appearance_and_motion": _retrieval(vectors, both, k),
                         "dim": int(vectors.shape[1])}
        if name in training:
            methods[name]["training"] = training[name]
    doc = {"benchmark": "rgbd", "size": size, "seed": seed, "k": k, "encoder": encoder, "config": cfg,
           "motions": list(MOTIONS), "appearances": APPEARANCES, "train_split_seed": seed + 1,
           "clips": {"train": len(train), "test": len(test)}, "methods": methods, "timing_s": timing,
           "colour_only": {"late_fusion_without_depth_appearance": _retrieval(absent, test_v.appearance, k),
                           "colour_mean_appearance": methods["colour+mean"]["appearance"]},
           "machine": machine(), "versions": library_versions(), "git": provenance.git(record)}
    doc["provenance"] = provenance.public(provenance.finish(record))
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")
    return doc


METHOD_NOTES = {
    "colour+mean": "colour, mean pooling (today's default)",
    "colour+lstm": "colour, LSTM trained on the motion",
    "depth+lstm": "depth alone, LSTM",
    "rgbd-early+lstm": "colour + depth per frame (early fusion), LSTM",
    "rgbd-late": "colour mean + depth LSTM (late fusion)",
}


def markdown_table(doc: dict[str, Any]) -> str:
    """The methods' motion and appearance figures as a markdown table."""
    k = doc["k"]
    lines = [f"| method | motion-in-depth mAP | P@{k} | R@{k} | F1@{k} | appearance mAP | appearance + motion mAP "
             "| dim |", "|---|---|---|---|---|---|---|---|"]
    for name, m in doc["methods"].items():
        mo = m["motion"]
        lines.append(f"| {name}: {METHOD_NOTES.get(name, name)} | {mo['mAP']:.3f} | {mo[f'precision@{k}']:.3f} | "
                     f"{mo[f'recall@{k}']:.3f} | {mo[f'f1@{k}']:.3f} | {m['appearance']['mAP']:.3f} | "
                     f"{m['appearance_and_motion']['mAP']:.3f} | {m['dim']} |")
    first = next(iter(doc["methods"].values()))
    lines.append(f"| chance (random ranking) | {first['motion']['random_mAP']:.3f} | | | | "
                 f"{first['appearance']['random_mAP']:.3f} | {first['appearance_and_motion']['random_mAP']:.3f} | |")
    return "\n".join(lines)


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``vidsearch eval rgbd --json`` prints: per method the headline figures, and the targets."""
    methods = {name: {"motion_mAP": m["motion"]["mAP"], "appearance_mAP": m["appearance"]["mAP"],
                      "appearance_and_motion_mAP": m["appearance_and_motion"]["mAP"],
                      f"motion_f1@{doc['k']}": m["motion"][f"f1@{doc['k']}"], "dim": m["dim"]}
               for name, m in doc["methods"].items()}
    best_depth = max(methods[n]["motion_mAP"] for n in ("rgbd-early+lstm", "rgbd-late"))
    colour_best = max(methods[n]["motion_mAP"] for n in ("colour+mean", "colour+lstm"))
    chance = next(iter(doc["methods"].values()))["motion"]["random_mAP"]
    return {"benchmark": "rgbd", "size": doc["size"], "seed": doc["seed"], "encoder": doc["encoder"],
            "methods": methods, "motion_mAP_chance": chance,
            "targets": {"with_depth_motion_mAP_at_least_0.9": best_depth >= 0.9,
                        "colour_only_within_0.1_of_chance": colour_best <= chance + 0.1,
                        # no loss on colour-only data: without depth the fused vector ranks as colour alone
                        "colour_only_data_unchanged": doc["colour_only"]["late_fusion_without_depth_appearance"]
                            == doc["colour_only"]["colour_mean_appearance"]}}
