"""Training loops for the temporal models, and their export to ONNX.

Deterministic for a seed on one machine: ``torch.manual_seed``, ``torch.use_deterministic_algorithms``,
a fixed number of threads (:attr:`TrainConfig.threads`, 1 by default: the models are small and the
machine shared) and one seeded ``numpy`` generator for batches and augmentations. The same
configuration and data give the same weights, hence the same :func:`weights_hash`.

Losses (:class:`Loss`):

- ``ce``: cosine classifier over the clips' labels, cross-entropy.
- ``triplet``: batch-hard triplet loss over P x K batches of the labels, then ``hard_rounds`` rounds of
  retraining on the clips the model got wrong (whose nearest clip, by the model's vectors, has another
  label): each round's batches are built around them.
- ``infonce``: self-supervised (labels unused): two augmented views of each clip are positives; every
  other clip's view in the batch is a negative, and so are the clip's look-alikes: itself played
  backwards, and its video at another time (when the data has one).
- ``reconstruct``: self-supervised seq2seq autoencoding: a decoder (:class:`~vidsearch.train.models.Seq2SeqDecoder`,
  not exported) rebuilds the clean window from the model's bottleneck given an augmented view; loss
  ``1 - cosine`` per frame. ``pretrain_epochs`` runs it before any other loss (reconstruction pretraining).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, EncoderError
from vidsearch.train.datasets import Augmentation, ClipSet, augment, class_batches, other_time
from vidsearch.train.onnx_export import export_checked

if TYPE_CHECKING:
    import torch

    from vidsearch.train.models import TemporalNet

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vidsearch[train]'"


class Loss(enum.StrEnum):
    """Training objective (``vidsearch train --loss``)."""

    INFONCE = "infonce"
    TRIPLET = "triplet"
    CE = "ce"
    RECONSTRUCT = "reconstruct"


LossLike = Union[Loss, str]

STRONG = Augmentation()
"""InfoNCE's views: temporal crop, speed change, dropped and repeated frames, a spliced frame, feature noise."""
LIGHT = Augmentation(crop=0.0, speed=0.0, splice=0.0)
"""The supervised losses' views: dropped and repeated frames and feature noise only."""
LEARNING_RATES = {"lstm": 2e-3, "attention": 1e-3, "seq2seq": 2e-3, "dual": 2e-3}
"""Default AdamW learning rate per model."""


def require_torch() -> None:
    """Raise :class:`ConfigError` naming the extra when PyTorch or onnx is missing (training and export need them)."""
    import importlib.util

    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"training a temporal model needs {', '.join(missing)}, not installed; run {INSTALL_HINT} "
                          "(running a trained model needs only onnxruntime)")


@dataclass(frozen=True)
class TrainConfig:
    """How a temporal model is trained.

    Attributes:
        model: ``lstm``, ``attention``, ``seq2seq`` or ``dual`` (:class:`vidsearch.train.models.TemporalKind`).
        loss: :class:`Loss` (or its value).
        epochs: passes over the clips (a triplet run adds ``hard_rounds`` shorter rounds).
        batch_size: clips per batch.
        lr: AdamW learning rate (cosine decay to 0); None picks the model's (:data:`LEARNING_RATES`: 2e-3 for the
            LSTM, 1e-3 for attention, the better of the two on Moving Fashion-MNIST); weight_decay: AdamW's.
        hidden: width inside the model; frames: frames per window the model takes (windows are resampled).
        seed: seeds torch and every random choice.
        threads: torch intra-op threads (fixed, for determinism).
        temperature: InfoNCE temperature; margin: triplet margin (cosine distance).
        per_class: clips per class in a triplet batch (P x K sampling).
        hard_rounds: triplet: rounds of retraining on the clips got wrong.
        pretrain_epochs: epochs of ``reconstruct`` before the main loss (seq2seq pretraining; 0: none).
        augmentation: the views every loss trains on; None (the default) picks :data:`STRONG` for InfoNCE (its
            positives are these views) and :data:`LIGHT` for the supervised losses (on Moving Fashion-MNIST
            crops and speed changes cost them direction mAP: LSTM + ce 0.950 -> 0.958 without).
    """

    model: str = "lstm"
    loss: LossLike = Loss.INFONCE
    epochs: int = 30
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 1e-4
    hidden: int = 128
    frames: int = 16
    seed: int = 0
    threads: int = 1
    temperature: float = 0.1
    margin: float = 0.2
    per_class: int = 4
    hard_rounds: int = 1
    pretrain_epochs: int = 0
    augmentation: Augmentation | None = None

    def __post_init__(self) -> None:
        from vidsearch.config import choice

        object.__setattr__(self, "loss", choice(Loss, self.loss, "loss"))
        if self.model not in LEARNING_RATES:
            raise ConfigError(f"unknown temporal model {self.model!r}; expected one of "
                              f"{', '.join(repr(m) for m in LEARNING_RATES)}")
        for name in ("epochs", "batch_size", "hidden", "frames", "threads", "per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if self.batch_size < 4 or self.hard_rounds < 0 or self.pretrain_epochs < 0 or not self.learning_rate() > 0 or not self.temperature > 0:
            raise ConfigError(f"expected batch_size >= 4, hard_rounds >= 0, lr > 0, temperature > 0; got "
                              f"{self.batch_size}, {self.hard_rounds}, {self.lr}, {self.temperature}")

    def learning_rate(self) -> float:
        """``lr``, or the model's default (:data:`LEARNING_RATES`)."""
        return LEARNING_RATES[self.model] if self.lr is None else self.lr

    def views(self) -> Augmentation:
        """The augmentation this configuration trains with (see ``augmentation``)."""
        if self.augmentation is not None:
            return self.augmentation
        return STRONG if self.loss == Loss.INFONCE else LIGHT

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["loss"] = str(self.loss)
        out["augmentation"] = dataclasses.asdict(self.views())
        out["lr"] = self.learning_rate()
        return out


@dataclass
class TrainResult:
    """A trained model and its record.

    Attributes:
        model: the torch module (eval mode).
        config: how it was trained.
        history: mean loss of each epoch of the main run, in order.
        pretrain_history: mean reconstruction loss of each pretraining epoch.
        seconds: wall-clock training time.
        source: what the clips were (``ClipSet.source``) and how many.
        hard: triplet only: clips whose nearest clip had another label, before and after retraining.
        hard_history: triplet only: mean loss of each epoch of the hard-sample rounds (their batches are
            the hard clips, so their loss is not comparable with ``history``).
    """

    model: TemporalNet
    config: TrainConfig
    history: list[float]
    seconds: float
    source: str
    hard: dict[str, int] = field(default_factory=dict)
    hard_history: list[float] = field(default_factory=list)
    pretrain_history: list[float] = field(default_factory=list)

    def weights_hash(self) -> str:
        return weights_hash(self.model)


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of a module's weights: each state-dict entry's name, shape and float32 little-endian
    values, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        values = tensor.detach().cpu().numpy().astype("<f4")
        digest.update(name.encode() + b"\0" + repr(tuple(values.shape)).encode() + b"\0" + values.tobytes())
    return digest.hexdigest()


def _seed_everything(config: TrainConfig) -> np.random.Generator:
    import torch

    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(config.threads)
    return np.random.default_rng(config.seed)


def embed(model: TemporalNet, windows: NDArray[np.float32], batch: int = 512) -> NDArray[np.float32]:
    """(N, frames, D) resampled windows -> (N, D) with the torch model (no gradient)."""
    import torch

    model.eval()
    with torch.no_grad():
        parts = [model(torch.from_numpy(np.ascontiguousarray(windows[i : i + batch]))).numpy()
                 for i in range(0, len(windows), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, model.dim), np.float32)


def nearest_label_errors(vectors: NDArray[np.float32], labels: NDArray[np.int64]) -> NDArray[np.int64]:
    """Indices of the clips whose nearest other clip (cosine) has another label."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return np.flatnonzero(labels[similarity.argmax(axis=1)] != labels).astype(np.int64)


def train_temporal(data: ClipSet, config: TrainConfig | None = None,
                   progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train a temporal model on ``data`` (see the module docstring for the losses).

    Args:
        data: the clips (labels needed by ``ce`` and ``triplet``).
        config: the training settings (default :class:`TrainConfig`).
        progress: called with one line per epoch (loss, seconds).

    Raises:
        ConfigError: PyTorch missing, or labels missing for a supervised loss.
    """
    require_torch()
    import torch

    from vidsearch.train import losses
    from vidsearch.train.models import Seq2SeqDecoder, build_model

    config = config or TrainConfig()
    if config.loss in (Loss.CE, Loss.TRIPLET) and data.labels is None:
        raise ConfigError(f"the {config.loss} loss needs labelled clips; these ({data.source}) have none: use "
                          "--loss infonce (self-supervised)")
    if len(data) < 2:
        raise ConfigError(f"training needs at least 2 clips, got {len(data)} ({data.source}); index more videos")
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = _seed_everything(config)
    t0 = time.perf_counter()
    model = build_model(config.model, data.dim, config.hidden, config.frames)
    head: torch.nn.Parameter | None = None
    params = list(model.parameters())
    if config.loss == Loss.CE:
        assert data.labels is not None  # checked above
        n_classes = int(data.labels.max()) + 1
        head = torch.nn.Parameter(torch.randn(n_classes, data.dim) * 0.01)
        params.append(head)
    decoder: Seq2SeqDecoder | None = None
    if config.loss == Loss.RECONSTRUCT or config.pretrain_epochs:
        decoder = Seq2SeqDecoder(data.dim, config.hidden, config.frames)
        params += list(decoder.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate(), weight_decay=config.weight_decay)
    labels_t = torch.from_numpy(data.labels) if data.labels is not None else None
    aug = config.views()
    n = len(data)
    history: list[float] = []
    hard_history: list[float] = []
    pretrain_history: list[float] = []
    hard: dict[str, int] = {}
    clean = data.resampled(config.frames)  # reconstruction targets

    def batches(focus: NDArray[np.int64] | None = None) -> list[NDArray[np.int64]]:
        if config.loss == Loss.TRIPLET:
            assert data.labels is not None
            return class_batches(data.labels, config.batch_size, config.per_class, rng, focus)
        order = rng.permutation(n)
        return [order[i : i + config.batch_size] for i in range(0, n, config.batch_size) if n - i >= 2]

    def view(i: int) -> NDArray[np.float32]:
        other = data.clips[int(rng.integers(0, n))]
        return augment(data.clips[i], config.frames, rng, aug, other)

    def step(batch: NDArray[np.int64], loss_kind: Loss) -> float:
        model.train()
        x = torch.from_numpy(np.stack([view(int(i)) for i in batch]))
        if loss_kind == Loss.RECONSTRUCT:
            assert decoder is not None
            rebuilt = decoder(model.body(model.project(x)))
            loss = (1.0 - (rebuilt * torch.from_numpy(clean[batch])).sum(dim=-1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            return float(loss.detach())
        z = model(x)
        if loss_kind == Loss.CE:
            assert head is not None and labels_t is not None
            loss = losses.cross_entropy(z, labels_t[batch], head)
        elif loss_kind == Loss.TRIPLET:
            assert labels_t is not None
            loss, _ = losses.batch_hard_triplet(z, labels_t[batch], config.margin)
        else:
            positives = model(torch.from_numpy(np.stack([view(int(i)) for i in batch])))
            looks = np.zeros((len(batch), 2, config.frames, data.dim), np.float32)
            mask = np.zeros((len(batch), 2), bool)
            for b, i in enumerate(batch):
                clip = data.clips[int(i)]
                if len(clip) > 1:  # a one-frame clip played backwards is itself
                    looks[b, 0] = augment(clip[::-1], config.frames, rng, aug)
                    mask[b, 0] = True
                j = other_time(data, int(i), rng)
                if j is not None:
                    looks[b, 1] = augment(data.clips[j], config.frames, rng, aug)
                    mask[b, 1] = True
            flat = model(torch.from_numpy(looks.reshape(-1, config.frames, data.dim))).reshape(len(batch), 2, -1)
            loss = losses.info_nce(z, positives, flat, torch.from_numpy(mask), config.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    def run_epochs(epochs: int, label: str, record: list[float], focus: NDArray[np.int64] | None = None,
                   loss_kind: Loss | None = None) -> None:
        kind = Loss(config.loss) if loss_kind is None else loss_kind
        plan = [batches(focus) if kind != Loss.RECONSTRUCT else
                [o for o in np.array_split(rng.permutation(n), max(1, n // config.batch_size))] for _ in range(epochs)]
        steps = sum(len(p) for p in plan)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps))
        for epoch, epoch_batches in enumerate(plan):
            t = time.perf_counter()
            values = []
            for batch in epoch_batches:
                values.append(step(batch, kind))
                schedule.step()
            record.append(float(np.mean(values)) if values else float("nan"))
            if progress is not None:
                progress(f"{label} epoch {epoch + 1}/{epochs}: loss {record[-1]:.4f} "
                         f"({len(epoch_batches)} batches, {time.perf_counter() - t:.1f} s)")

    try:
        if config.pretrain_epochs:
            run_epochs(config.pretrain_epochs, f"{config.model}/reconstruct (pretraining)", pretrain_history,
                       loss_kind=Loss.RECONSTRUCT)
            for group in optimiser.param_groups:  # the main run's cosine schedule starts again from the full rate
                group["lr"] = group["initial_lr"] = config.learning_rate()
        run_epochs(config.epochs, f"{config.model}/{config.loss}", history)
        if config.loss == Loss.TRIPLET and config.hard_rounds and data.labels is not None:
            clean = data.resampled(config.frames)
            for r in range(config.hard_rounds):
                wrong = nearest_label_errors(embed(model, clean), data.labels)
                hard.setdefault("wrong_before", int(len(wrong)))
                if not len(wrong):
                    break
                for group in optimiser.param_groups:  # each round: a cosine schedule from half the rate
                    group["lr"] = group["initial_lr"] = config.learning_rate() / 2
                run_epochs(max(1, config.epochs // 3), f"hard round {r + 1} ({len(wrong)} clips)", hard_history, wrong)
            hard["wrong_after"] = int(len(nearest_label_errors(embed(model, clean), data.labels)))
    finally:  # the process's torch settings as they were
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)
    model.eval()
    return TrainResult(model, config, history, time.perf_counter() - t0, f"{data.source}, {n} clips", hard,
                       hard_history, pretrain_history)


def export_onnx(result: TrainResult, target: str | os.PathLike[str], sample: NDArray[np.float32] | None = None,
                atol: float = 1e-4, extra: dict[str, Any] | None = None, streams: str = "") -> Path:
    """Write the trained model as ONNX with its description (``vidsearch.temporal`` metadata: kind, dim, frames,
    weights SHA-256, training record), after checking ONNX Runtime reproduces torch within ``atol``; atomic.

    Args:
        result: from :func:`train_temporal`.
        target: the .onnx file to write.
        sample: (N, frames, D) windows to compare torch and ONNX Runtime on (default: random unit vectors).
        extra: more JSON fields for the description (e.g. the data set's name).
        streams: the streams the training frame vectors were fused with (``flow``, ``depth``, ``flow+depth``:
            :func:`vidsearch.encode.streams.describe`), recorded so that ``vidsearch index --temporal`` computes
            the same (written only when set).

    Raises:
        EncoderError: ONNX Runtime's output differs from torch's by more than ``atol``.
    """
    require_torch()
    import torch

    from vidsearch.encode.temporal import METADATA_KEY, MODEL_FORMAT, MODEL_FORMAT_VERSION, l2_normalize

    model = result.model.eval()
    path = Path(target)
    if sample is None:
        sample = l2_normalize(np.random.default_rng(0).normal(size=(8, model.frames, model.dim)).astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(sample, np.float32))
    digest = weights_hash(model)
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "kind": str(model.kind), "dim": model.dim,
            "frames": model.frames, "hidden": model.hidden, "weights_sha256": digest, "input": "frames",
            "output": "segment", "train": {"config": result.config.to_dict(), "data": result.source,
                                           "history": [round(v, 6) for v in result.history],
                                           "seconds": round(result.seconds, 2), "hard": result.hard,
                                           "hard_history": [round(v, 6) for v in result.hard_history],
                                           "pretrain_history": [round(v, 6) for v in result.pretrain_history],
                                           "torch": torch.__version__}, **(extra or {})}
    if streams:
        meta["streams"] = streams
    with torch.no_grad():
        expected = model(x).numpy()

    def check(session: Any) -> float:
        return float(np.abs(session.run(None, {"frames": x.numpy()})[0] - expected).max())

    path, err = export_checked(model, (x,), path, input_names=["frames"], output_names=["segment"],
                               dynamic_axes={"frames": {0: "batch"}, "segment": {0: "batch"}},
                               metadata_key=METADATA_KEY, meta=meta, check=check, atol=atol,
                               what=f"{model.kind} model")
    log.info("wrote %s (%s, weights %s, max |onnx - torch| %.1e)", path, model.kind, digest[:12], err)
    return path
