"""A differentiable product quantizer trained jointly with a temporal model, against the two trained apart.

Both arms start from the same temporal model (trained alone by InfoNCE) and run the same number of further
epochs over the same views, batches and look-alike negatives (one seeded generator each, drawn in the same
order); they differ only in where the product quantizer is:

- **apart**: the model keeps training alone (InfoNCE between two unquantized views); then
  :class:`~vidsearch.compress.LearnedPQ` is fitted on its vectors of the training clips (its own objective:
  reconstruction and exact-neighbour preservation), as a collection built with ``quantizer="learned"`` does.
- **joint**: every step passes the database side through the differentiable PQ of
  :mod:`vidsearch.compress.learned_pq` (orthogonal projection, M codebooks, straight-through soft assignment,
  started from OPQ on the model's vectors) and scores the query view against it by the asymmetric distance
  FAISS's ADC search computes, ``||R a - q(R x)||^2``; the InfoNCE gradient reaches the model, the projection
  and the codebooks, plus a reconstruction term so the codes stay faithful (DPQ, Klein & Wolf 2019; the
  hierarchical-attention paper trains its DPQ this way).

:func:`copy_recall` scores either at equal bytes: the evaluation clips' clean vectors encoded by FAISS
(``IndexPQ`` behind the projection), their augmented views as queries, recall@k of each view's own clip.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError
from vidsearch.train.datasets import Augmentation, ClipSet, augment
from vidsearch.train.loop import STRONG, embed, require_torch

if TYPE_CHECKING:
    from vidsearch.train.models import TemporalNet


@dataclass(frozen=True)
class JointConfig:
    """How the two arms continue from the shared model.

    Attributes:
        M, nbits: the code (M bytes per segment at nbits 8).
        epochs: further epochs of each arm.
        batch_size: clips per step (their views are each other's in-batch negatives).
        lr: AdamW rate of the model (cosine decay to 0); codebook_lr: Adam rate of the codebooks and projection.
        tau: InfoNCE temperature (on cosine; the distance logits are ``-d / (2 tau)``, equal to it up to a
            constant for unit vectors).
        temperature: (start, end) of the soft assignment's annealing, relative to OPQ's mean squared error per
            sub-space (as :class:`~vidsearch.compress.LearnedPQConfig`).
        lambda_rec: weight of the reconstruction term (relative to OPQ's error) in the joint loss.
        opq_niter: OPQ iterations of the joint arm's start.
        seed, threads: for determinism (torch intra-op threads fixed).
        augmentation: the views (default :data:`~vidsearch.train.loop.STRONG`, as InfoNCE trains).
    """

    M: int = 16
    nbits: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    codebook_lr: float = 1e-3
    tau: float = 0.1
    temperature: tuple[float, float] = (1.0, 0.05)
    lambda_rec: float = 0.1
    opq_niter: int = 25
    seed: int = 0
    threads: int = 1
    augmentation: Augmentation = field(default_factory=lambda: STRONG)

    def __post_init__(self) -> None:
        for name in ("M", "nbits", "epochs", "batch_size", "opq_niter", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"JointConfig.{name} must be a positive integer, got {value!r}")
        if self.batch_size < 4 or not (self.lr > 0 and self.codebook_lr > 0 and self.tau > 0) or self.lambda_rec < 0:
            raise ConfigError(f"expected batch_size >= 4, lr, codebook_lr, tau > 0 and lambda_rec >= 0; got "
                              f"{self.batch_size}, {self.lr}, {self.codebook_lr}, {self.tau}, {self.lambda_rec}")
        t0, t1 = self.temperature
        if not (t0 > 0 and t1 > 0):
            raise ConfigError(f"temperature must be a (start, end) pair of positive numbers, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["temperature"] = list(self.temperature)
        return out


@dataclass
class ArmResult:
    """One arm: its model, its quantizer (projection and codebooks, as FAISS loads them), its record."""

    name: str
    model: TemporalNet
    rotation: NDArray[np.float32]
    codebooks: NDArray[np.float32]
    history: list[float]
    seconds: float
    pq_seconds: float = 0.0


def continue_training(data: ClipSet, model: TemporalNet, config: JointConfig, joint: bool,
                      progress: Callable[[str], None] | None = None) -> ArmResult:
    """Train a copy of ``model`` ``config.epochs`` more epochs on ``data``: alone then LearnedPQ on its
    vectors (``joint=False``), or with the differentiable PQ in the loop (``joint=True``); see the module
    docstring.

    Raises:
        ConfigError: PyTorch missing, fewer clips than centroids per sub-space, or M not dividing the width.
    """
    require_torch()
    import torch
    from torch.nn import functional as F
    from torch.nn.utils import parametrize

    from vidsearch.compress import OPQ
    from vidsearch.compress.learned_pq import _DifferentiablePQ
    from vidsearch.compress.pq import check_enough, check_pq_shape

    n, frames = len(data), model.frames
    check_pq_shape(model.dim, config.M, config.nbits)
    check_enough(n, 2**config.nbits)
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    net = copy.deepcopy(model)
    clean = data.resampled(frames)
    params: list[dict[str, Any]] = [{"params": list(net.parameters()), "lr": config.lr}]
    dpq: Any = None
    sub_mse = 1.0
    if joint:
        vectors = embed(net, clean)
        start = OPQ(config.M, config.nbits, niter=config.opq_niter).fit(vectors)
        if start.rotation_ is None or start.codebooks_ is None:  # fit() sets both; this narrows the types
            raise ConfigError("OPQ fitted no rotation or codebooks")
        dpq = _DifferentiablePQ(start.rotation_, start.codebooks_, True)
        with torch.no_grad():
            _, _, dmin = dpq.quantize(dpq.project(torch.from_numpy(vectors)), 1.0)
            sub_mse = max(float(dmin.mean()), 1e-12)
        params.append({"params": list(dpq.parameters()), "lr": config.codebook_lr})
    optimiser = torch.optim.AdamW(params, weight_decay=1e-4)
    steps = config.epochs * math.ceil(n / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps))
    t_start, t_end = config.temperature
    history: list[float] = []
    step = 0
    try:
        for epoch in range(config.epochs):
            t = time.perf_counter()
            order = rng.permutation(n)
            values = []
            for b in range(0, n, config.batch_size):
                batch = order[b : b + config.batch_size]
                if len(batch) < 2:
                    continue
                # the same draws in both arms: the query view, then the database side's reversed look-alike
                views = np.stack([augment(data.clips[int(i)], frames, rng, config.augmentation,
                                          data.clips[int(rng.integers(0, n))]) for i in batch])
                net.train()
                with parametrize.cached():
                    a = net(torch.from_numpy(views))
                    keys = net(torch.from_numpy(np.concatenate([clean[batch], clean[batch][:, ::-1].copy()])))
                    if joint:
                        T = t_start * (t_end / t_start) ** (step / max(steps - 1, 1)) * sub_mse
                        za, zk = dpq.project(a), dpq.project(keys)
                        qk, _, _ = dpq.quantize(zk, T, True)
                        d = torch.cdist(za, qk) ** 2  # (B, 2B): ADC distances to the clips, then their reversals
                        rec = ((zk - qk) ** 2).sum(1).mean() / (sub_mse * config.M)
                    else:
                        d = torch.cdist(a, keys) ** 2
                        rec = torch.zeros(())
                    logits = -d / (2 * config.tau)
                    target = torch.arange(len(batch))
                    loss = F.cross_entropy(logits, target) + config.lambda_rec * rec
                    optimiser.zero_grad()
                    loss.backward()
                optimiser.step()
                schedule.step()
                step += 1
                values.append(float(loss.detach()))
            history.append(float(np.mean(values)))
            if progress is not None:
                progress(f"{'joint' if joint else 'apart'} epoch {epoch + 1}/{config.epochs}: loss {history[-1]:.4f} "
                         f"({time.perf_counter() - t:.1f} s)")
        net.eval()
        seconds = time.perf_counter() - t0
        if joint:
            rotation, codebooks = dpq.export()
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)
    if not joint:  # PQ trained apart, on the model's vectors of the training clips
        return learned_pq_arm("apart", net, embed(net, clean), config, history, seconds)
    return ArmResult("joint", net, np.asarray(rotation, np.float32), np.asarray(codebooks, np.float32), history,
                     seconds)


def learned_pq_arm(name: str, model: Any, vectors: NDArray[np.float32], config: JointConfig,
                   history: list[float] | None = None, seconds: float = 0.0) -> ArmResult:
    """``model`` with :class:`~vidsearch.compress.LearnedPQ` (default settings, ``config``'s M, nbits, seed and
    threads) fitted on its ``vectors``: the quantizer trained apart; ``pq_seconds`` its fitting time."""
    from vidsearch.compress import LearnedPQ
    from vidsearch.compress.learned_pq import LearnedPQConfig

    t = time.perf_counter()
    pq = LearnedPQ(config.M, config.nbits, LearnedPQConfig(seed=config.seed, n_threads=config.threads)).fit(vectors)
    return ArmResult(name, model, np.asarray(pq.rotation_, np.float32), np.asarray(pq.codebooks_, np.float32),
                     history or [], seconds, time.perf_counter() - t)


def copy_recall(arm: ArmResult, data: ClipSet, ks: tuple[int, ...] = (1, 10), views: int = 1, seed: int = 0,
                augmentation: Augmentation = STRONG, reversed_distractors: bool = False) -> dict[str, float]:
    """Recall@k of each clip's augmented views (queries) among the clean vectors of all of ``data``'s clips,
    with the arm's codes (FAISS ADC over ``IndexPQ``, ``M`` bytes a clip) and with its float vectors.

    Args:
        reversed_distractors: also put every clip played backwards in the database (a look-alike that only
            the order of the frames tells apart: mean pooling ties with it).

    Returns:
        ``{"recall_pq@K": ..., "recall_float@K": ... for each K, "queries": n, "database": size}``.
    """
    import faiss

    from vidsearch.compress.pq import make_adc_index

    rng = np.random.default_rng(seed)
    frames = arm.model.frames
    clean = data.resampled(frames)
    if reversed_distractors:
        clean = np.concatenate([clean, clean[:, ::-1]])
    base = embed(arm.model, np.ascontiguousarray(clean))
    n = len(data)
    owner = np.repeat(np.arange(n), views)
    queries = embed(arm.model, np.stack([augment(data.clips[int(i)], frames, rng, augmentation,
                                                 data.clips[int(rng.integers(0, n))]) for i in owner]))
    index = make_adc_index(arm.rotation, arm.codebooks, int(round(math.log2(arm.codebooks.shape[1]))))
    index.add(base)
    exact = faiss.IndexFlatL2(base.shape[1])
    exact.add(base)
    out: dict[str, float] = {"queries": int(len(owner)), "database": int(len(base))}
    top = max(ks)
    _, found = index.search(queries, top)
    _, found_float = exact.search(queries, top)
    for k in ks:
        out[f"recall_pq@{k}"] = float((found[:, :k] == owner[:, None]).any(1).mean())
        out[f"recall_float@{k}"] = float((found_float[:, :k] == owner[:, None]).any(1).mean())
    return out
