"""Structured pruning of EfficientNet-Lite0 with distillation into the same embedding space (issue #18, item 4).

A pruned encoder is useful to a collection only if its vectors can be searched against an index built with the
full model. So the student is the teacher with channels removed, fine-tuned to reproduce the teacher's pooled
1280-d vector of each frame (loss ``1 - cosine``), not a new model trained to a task:

1. **Saliency.** In each inverted-residual block with an expansion (blocks 1-15; block 0 has none and its
   channels are the stem's), the expanded channels are what depthwise and projection convs work on (about 85 % of
   the multiply-adds). A channel's saliency is the mean absolute value of its activation (after the depthwise
   conv, its BatchNorm and ReLU6) over real frames times the L2 norm of the projection weights that read it: how
   much of the block's output it carries. The block inputs and outputs (the residual stream), the stem and the
   1x1 head conv to 1280 channels stay whole, so the output space is the teacher's.
2. **Pruning.** The same ``ratio`` of expanded channels leaves every block (the lowest saliency first), the count
   kept rounded to a multiple of 8 (whole SIMD lanes in ONNX Runtime's kernels); the expand conv's output
   filters, both BatchNorms, the depthwise filters and the projection conv's input columns are sliced.
3. **Distillation.** The student is fine-tuned on augmented real frames (random resized crops, flips, colour and
   gamma changes, blur, noise, JPEG) against the teacher's vectors of the same augmented frames, computed once:
   BatchNorm statistics frozen (the teacher's, sliced), every weight trained, Adam with a cosine learning-rate
   decay. Deterministic with a seed on one thread count (PyTorch's CPU kernels are).

The result is exported to ONNX with the same input (uint8 NHWC ``image``) and output (``embedding``) as the
teacher's export, with a JSON description (teacher, ratio, channels, weights hash) under ``vidsearch_pruned``,
so :class:`~vidsearch.encode.frame.OnnxFrameEncoder` runs it and int8 quantisation
(:func:`vidsearch.encode.effnet.quantize_int8`) applies unchanged. bench/prune.py measures the curve: ratio
against images/s, cosine to the teacher on held-out frames, and VSC-style segment micro-AP of pruned queries
against an index built with the full model.

Hand-written because no library here prunes a model structurally: ``torch.nn.utils.prune`` only masks weights
to zero (no speed-up on CPU), and nothing available does the distillation.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError
from vidsearch.train.onnx_export import export_checked

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

METADATA_KEY = "vidsearch_pruned"
"""ONNX metadata key of a pruned model's JSON description."""
TEACHER = "effnet-lite0"
"""The registry name of the encoder the students are pruned from (its collections are what they may query)."""


@dataclass(frozen=True)
class PruneConfig:
    """How a student is pruned and distilled.

    Attributes:
        ratio: fraction of each block's expanded channels removed, in [0, 1).
        multiple: channels kept per block are rounded to a multiple of this.
        images: augmented training frames (the teacher encodes each once).
        epochs: passes over them.
        batch: frames per step.
        lr: peak learning rate (Adam), decayed to 0 along a cosine.
        saliency_frames: real frames the saliency is averaged over (the first of the sources' frames).
        source_size: (width, height) the source frames are decoded at before the random crops.
        seed: every random choice (frames, augmentations, batches, initial state).
    """

    ratio: float = 0.5
    multiple: int = 8
    images: int = 2048
    epochs: int = 4
    batch: int = 32
    lr: float = 5e-4
    saliency_frames: int = 128
    source_size: tuple[int, int] = (320, 320)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"ratio must be in [0, 1) (the fraction of channels removed), got {self.ratio}")
        for name in ("multiple", "images", "batch", "saliency_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PruneResult:
    """A distilled student and what its training did."""

    model: Any  # the torch module: uint8 NHWC in, (N, 1280) pooled features out
    config: PruneConfig
    channels: list[tuple[int, int]]  # per pruned block: (expanded channels before, kept)
    macs: tuple[int, int]  # multiply-adds of one 224x224 frame: (teacher, student)
    saliency_s: float
    teacher_s: float
    train_s: float
    loss_curve: list[float] = dataclasses.field(default_factory=list)  # mean 1 - cosine per epoch
    cosine_before: float = 0.0  # mean cosine to the teacher on the training frames, pruned but not fine-tuned
    cosine_after: float = 0.0

    def describe(self) -> dict[str, Any]:
        from vidsearch.train.loop import weights_hash

        return {"teacher": TEACHER, "config": self.config.to_dict(), "channels": self.channels,
                "macs": list(self.macs), "weights_sha256": weights_hash(self.model),
                "cosine_train_before": round(self.cosine_before, 5), "cosine_train_after": round(self.cosine_after, 5),
                "loss_curve": [round(x, 6) for x in self.loss_curve],
                "seconds": {"saliency": round(self.saliency_s, 1), "teacher": round(self.teacher_s, 1),
                            "train": round(self.train_s, 1)}}


# ------------------------------------------------------------------------------------------- structure
def _blocks(model: Any) -> list[Any]:
    """The inverted-residual blocks with an expansion conv (the prunable ones) of a ``build_torch_model()``."""
    return [b for b in model.net._blocks if b._block_args.expand_ratio != 1]


def expanded_channels(model: Any) -> list[int]:
    """Expanded channels of each prunable block."""
    return [int(b._depthwise_conv.out_channels) for b in _blocks(model)]


def macs(model: Any, size: int = 224) -> int:
    """Multiply-adds of the convolutions for one ``size`` x ``size`` frame (forward hooks on every Conv2d)."""
    import torch

    total = [0]

    def hook(conv: Any, inputs: Any, output: Any) -> None:
        k = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
        total[0] += int(output.numel() // output.shape[0]) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros((1, size, size, 3), dtype=torch.uint8))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def saliency(model: Any, images: NDArray[np.uint8], batch: int = 16) -> list[NDArray[np.float64]]:
    """Per prunable block, each expanded channel's saliency: mean |activation| entering the projection conv over
    ``images`` ((N, H, W, 3) uint8) times the L2 norm of the projection weights reading it."""
    import torch

    blocks = _blocks(model)
    sums = [np.zeros(int(b._project_conv.in_channels)) for b in blocks]
    counts = [0]

    def hook_for(i: int) -> Callable[[Any, Any], None]:
        def hook(conv: Any, inputs: Any) -> None:
            x = inputs[0]
            sums[i] += x.abs().mean(dim=(2, 3)).sum(dim=0).double().numpy()
        return hook

    handles = [b._project_conv.register_forward_pre_hook(hook_for(i)) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch]))
                model(chunk)
                counts[0] += len(chunk)
    finally:
        for h in handles:
            h.remove()
    out = []
    for s, b in zip(sums, blocks):
        norm = b._project_conv.weight.detach().double().flatten(1).norm(dim=0).numpy()  # (expanded,)
        out.append(s / max(1, counts[0]) * norm)
    return out


def kept_count(channels: int, ratio: float, multiple: int) -> int:
    """Channels a block of ``channels`` keeps at ``ratio``: rounded to ``multiple``, at least one multiple."""
    keep = channels * (1.0 - ratio)
    return int(min(channels, max(multiple, multiple * round(keep / multiple))))


def _slice_bn(bn: Any, keep: Any) -> Any:
    import torch

    new = torch.nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        new.weight.copy_(bn.weight[keep])
        new.bias.copy_(bn.bias[keep])
        # BatchNorm2d's buffers are typed Optional (track_running_stats=False leaves them None); ours are tracked.
        for name in ("running_mean", "running_var"):
            getattr(new, name).copy_(getattr(bn, name)[keep])
    return new


def prune(model: Any, scores: Sequence[NDArray[np.float64]], ratio: float, multiple: int = 8) -> tuple[Any, list[tuple[int, int]]]:
    """A copy of ``model`` with the lowest-``scores`` expanded channels of each prunable block removed.

    Returns:
        (the pruned copy, per block (channels before, kept)).
    """
    import torch

    student = copy.deepcopy(model)
    blocks = _blocks(student)
    if len(scores) != len(blocks):
        raise ConfigError(f"saliency has {len(scores)} blocks, the model {len(blocks)}")
    shape: list[tuple[int, int]] = []
    for block, score in zip(blocks, scores):
        n = int(block._depthwise_conv.out_channels)
        k = kept_count(n, ratio, multiple)
        keep = torch.from_numpy(np.sort(np.argsort(-score, kind="stable")[:k]).astype(np.int64))
        with torch.no_grad():
            block._expand_conv.weight = torch.nn.Parameter(block._expand_conv.weight[keep].clone())
            block._expand_conv.out_channels = k
            block._bn0 = _slice_bn(block._bn0, keep)
            dw = block._depthwise_conv
            dw.weight = torch.nn.Parameter(dw.weight[keep].clone())
            dw.in_channels = dw.out_channels = dw.groups = k
            block._bn1 = _slice_bn(block._bn1, keep)
            block._project_conv.weight = torch.nn.Parameter(block._project_conv.weight[:, keep].clone())
            block._project_conv.in_channels = k
        shape.append((n, k))
    return student.eval(), shape


# ------------------------------------------------------------------------------------------- data
def augment(frame: NDArray[np.uint8], rng: np.random.Generator, size: int = 224) -> NDArray[np.uint8]:
    """One random view of ``frame`` (H, W, 3) uint8 RGB at ``size`` x ``size``: a resized crop of 30-100 % of the
    area (aspect 3:4-4:3), a flip half the time, brightness, contrast, saturation and gamma changes, and each with
    probability 0.2-0.3: grey, blur, noise, JPEG at quality 20-60."""
    import cv2

    h, w = frame.shape[:2]
    for _ in range(10):
        area = rng.uniform(0.3, 1.0) * h * w
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 8 <= cw <= w and 8 <= ch <= h:
            break
    else:
        cw, ch = w, h
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = cv2.resize(frame[y0 : y0 + ch, x0 : x0 + cw], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)  # contrast, brightness
    grey = out.mean(axis=2, keepdims=True)
    saturation = 0.0 if rng.random() < 0.2 else rng.uniform(0.6, 1.4)
    out = grey + (out - grey) * saturation
    out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(3, 12), out.shape)
    img = np.ascontiguousarray(np.clip(out, 0, 255).round().astype(np.uint8))
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 61))])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            img = np.ascontiguousarray(decoded[:, :, ::-1])
    return img


def training_views(frames: NDArray[np.uint8], count: int, seed: int, size: int = 224) -> NDArray[np.uint8]:
    """``count`` augmented views of ``frames`` (each frame in turn, a new random view each time)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frames))
    return np.stack([augment(frames[order[i % len(frames)]], rng, size) for i in range(count)])


def encode_torch(model: Any, images: NDArray[np.uint8], batch: int = 32) -> NDArray[np.float32]:
    """L2-normalised vectors of ``images`` through a torch encoder (inference)."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            v = model(torch.from_numpy(np.ascontiguousarray(images[start : start + batch])))
            out.append(torch.nn.functional.normalize(v, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


# ------------------------------------------------------------------------------------------- training
def prune_and_distill(frames: NDArray[np.uint8], config: PruneConfig | None = None, *, teacher: Any = None,
                      progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune the EfficientNet-Lite0 ``teacher`` (default: :func:`vidsearch.encode.effnet.build_torch_model`) by
    ``config.ratio`` and distil it on augmented views of ``frames`` ((N, H, W, 3) uint8 RGB real frames, e.g. at
    ``config.source_size``)."""
    import torch

    from vidsearch.encode import effnet
    from vidsearch.train.loop import require_torch

    require_torch()
    config = config or PruneConfig()
    if len(frames) == 0:
        raise ConfigError("no training frames: pass real video frames or photographs")
    say = progress or (lambda message: None)
    torch.manual_seed(config.seed)
    teacher = teacher if teacher is not None else effnet.build_torch_model()
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    t0 = time.perf_counter()
    step = max(1, len(frames) // config.saliency_frames)
    probe = np.stack([_center(f) for f in frames[::step][: config.saliency_frames]])
    scores = saliency(teacher, probe)
    student, channels = prune(teacher, scores, config.ratio, config.multiple)
    saliency_s = time.perf_counter() - t0
    for p in student.parameters():
        p.requires_grad_(True)
    say(f"pruned {config.ratio:.0%} of the expanded channels: {sum(k for _, k in channels)} of "
        f"{sum(n for n, _ in channels)} kept")

    t0 = time.perf_counter()
    views = training_views(frames, config.images, config.seed)
    targets = torch.from_numpy(encode_torch(teacher, views))
    teacher_s = time.perf_counter() - t0
    say(f"teacher vectors of {len(views)} augmented frames in {teacher_s:.0f} s")

    def mean_cosine() -> float:
        return float((torch.from_numpy(encode_torch(student, views)) * targets).sum(dim=1).mean())

    before = mean_cosine()
    steps_per_epoch = math.ceil(len(views) / config.batch)
    total = max(1, steps_per_epoch * config.epochs)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    rng = np.random.default_rng(config.seed + 1)
    student.eval()  # BatchNorm keeps the teacher's statistics (sliced); gradients still flow to every weight
    curve: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        order = rng.permutation(len(views))
        losses = []
        for start in range(0, len(order), config.batch):
            idx = order[start : start + config.batch]
            x = torch.from_numpy(views[idx])
            z = torch.nn.functional.normalize(student(x), dim=1)
            loss = (1.0 - (z * targets[idx]).sum(dim=1)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        curve.append(float(np.mean(losses)))
        say(f"epoch {epoch + 1}/{config.epochs}: 1 - cosine {curve[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    for p in student.parameters():
        p.requires_grad_(False)
    after = mean_cosine()
    return PruneResult(student.eval(), config, channels, (macs(teacher), macs(student)), saliency_s, teacher_s,
                       train_s, curve, before, after)


def _center(frame: NDArray[np.uint8], size: int = 224) -> NDArray[np.uint8]:
    import cv2

    return np.ascontiguousarray(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))


def export(result: PruneResult, target: str | os.PathLike[str], sample: NDArray[np.uint8], atol: float = 1e-3) -> Path:
    """Write the student as ONNX (input ``image`` uint8 NHWC 224x224, output ``embedding`` (N, 1280)), its
    :meth:`PruneResult.describe` under :data:`METADATA_KEY`, checked against torch on ``sample`` frames."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(sample))
    with torch.no_grad():
        expected = result.model(x).numpy()

    def check(session: Any) -> float:
        return float(np.abs(session.run(None, {"image": x.numpy()})[0] - expected).max())

    path, _ = export_checked(result.model, (x,), target, input_names=["image"], output_names=["embedding"],
                             dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
                             metadata_key=METADATA_KEY, meta=result.describe(), check=check, atol=atol,
                             what=f"pruned {TEACHER}")
    return path


def read_description(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON description of a pruned model file, or None when ``path`` holds no pruned model's metadata."""
    import json

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            value: dict[str, Any] = json.loads(prop.value)
            return value
    return None

