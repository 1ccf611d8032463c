"""A differentiable product quantizer (PyTorch) trained to keep nearest neighbours, exported to FAISS.

Model: ``y = x @ R.T`` with R a trainable d x d orthogonal projection
(``torch.nn.utils.parametrizations.orthogonal``), then a product quantizer with M codebooks of
2**nbits centroids. R and the codebooks start from :class:`~vidsearch.compress.OPQ`, so training
starts at OPQ's quality. Assignment is soft-to-hard: ``p = softmax(-||y_m - c||^2 / T)`` over the
``n_soft`` nearest centroids of each sub-vector, T annealed geometrically; with
``assignment="straight_through"`` (the default) the forward pass uses the nearest centroid,
exactly what FAISS encodes, and the gradient is the soft assignment's.

Loss = ``lambda_rec`` * reconstruction + ``lambda_nbr`` * neighbour preservation.

- Reconstruction: ``||y - q(y)||^2`` on uniformly drawn training vectors, relative to OPQ's error.
- Neighbour preservation: training vectors act as queries ("anchors", optionally jittered with
  noise, like an edited copy, when ``noise > 0``). Positives are an anchor's exact top
  ``n_neighbors`` in the training set (precomputed); negatives are the other exact candidates
  (ranks ``n_neighbors+1 .. n_candidates``) and, first, the mined hard negatives: the items an
  ADC search with the current codes (FAISS, redone every ``mine_every`` epochs) puts in the
  anchor's top ``n_mined`` although they are not among its exact candidates. The asymmetric
  distance FAISS computes, ``||R a - q(R x)||^2``, must be smaller for every positive than for
  every negative: ``nbr_loss="ranking"`` is a pairwise logistic (soft-margin triplet) loss
  ``tau * softplus((d_pos - d_neg) / tau)``; ``"distortion"`` asks instead that ADC minus exact
  distance be the same for all of an anchor's candidates.

Search runs in FAISS: ``to_faiss()`` gives ``IndexPreTransform(LinearTransform(R), IndexPQ)``
with the learned codebooks loaded into ``IndexPQ.pq`` (:func:`load_codebooks_into_faiss_pq`).
Results are approximate; how much better than OPQ depends on the data (bench/compress.py).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

from vidsearch.compress.pq import (
    OPQ,
    _FaissCodes,
    as_matrix,
    check_enough,
    check_pq_shape,
    load_codebooks_into_faiss_pq,
    make_adc_index,
)
from vidsearch.errors import ConfigError

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=enum.StrEnum)

class Assignment(enum.StrEnum):
    """How a sub-vector is assigned to centroids while training."""

    STRAIGHT_THROUGH = "straight_through"  # hard (nearest centroid) forward, soft gradient
    SOFT = "soft"  # soft forward while training; FAISS encodes hard, which the annealing approaches


class NeighbourLoss(enum.StrEnum):
    """The neighbour-preservation loss (see the module docstring)."""

    RANKING = "ranking"  # pairwise logistic: every positive closer than every negative
    DISTORTION = "distortion"  # ADC minus exact distance the same for all of an anchor's candidates


# a field takes the member or its value, and holds the member once the config is built
AssignmentLike = Union[Assignment, str]
NeighbourLossLike = Union[NeighbourLoss, str]


@dataclass(frozen=True)
class LearnedPQConfig:
    """Training settings of :class:`LearnedPQ` (the code layout, M and nbits, is the quantizer's).

    The defaults are those of bench/compress.py (about a minute per epoch on 20K anchors, 2 threads);
    :meth:`quick` trains in about a second, for tests and smoke runs.

    Attributes:
        epochs: passes over the anchors.
        batch_size: anchors per step.
        lr: Adam learning rate (cosine-decayed to 0); the projection uses ``lr * lr_rotation_scale``.
        lr_rotation_scale: learning-rate multiplier of the projection.
        temperature: (start, end) of the geometric annealing of the soft-assignment temperature,
            relative to OPQ's mean squared quantization error per sub-space.
        assignment: :class:`Assignment` (or its value).
        lambda_rec: weight of the reconstruction loss.
        lambda_nbr: weight of the neighbour-preservation loss (0: reconstruction only).
        rec_batch_size: vectors drawn per step for the reconstruction loss.
        n_soft: nearest centroids per sub-vector in the soft assignment.
        n_neighbors: positives per anchor, its exact top-k (the k of recall@k).
        n_candidates: exact neighbours kept per anchor (positives + ordinary negatives).
        n_negatives: negatives per anchor and step: mined ones first, then random candidates.
        nbr_loss: :class:`NeighbourLoss` (or its value).
        tau: softness of the ranking loss, relative to the mean distance to the k-th neighbour.
        noise: standard deviation (relative to the vector norm) of the jitter applied to anchors
            (an augmented copy as query; the anchor's own vector then becomes a candidate); 0 = none.
        n_anchors: training vectors used as anchors (all when None).
        mine_every: mine ADC hard negatives every this many epochs (from the first); 0 = never.
        n_mined: ADC results per anchor examined when mining.
        orthogonal: keep the projection exactly orthogonal; when False it is a free linear map
            with penalty ``lambda_orth * ||R R^T - I||^2``.
        lambda_orth: weight of that penalty.
        init_niter: OPQ iterations of the initialisation (when ``fit`` gets no ``init``).
        seed: seed of every random choice (torch and numpy); results are deterministic for a
            fixed seed, data and ``n_threads``.
        n_threads: torch threads while fitting (restored afterwards).
        verbose: log one line per epoch (``logging``, logger ``vidsearch.compress.learned_pq``).
    """

    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    lr_rotation_scale: float = 1.0
    temperature: tuple[float, float] = (1.0, 0.05)
    assignment: AssignmentLike = Assignment.STRAIGHT_THROUGH
    lambda_rec: float = 1.0
    lambda_nbr: float = 10.0
    rec_batch_size: int = 1024
    n_soft: int = 8
    n_neighbors: int = 10
    n_candidates: int = 100
    n_negatives: int = 20
    nbr_loss: NeighbourLossLike = NeighbourLoss.RANKING
    tau: float = 0.05
    noise: float = 0.0
    n_anchors: int | None = 20000
    mine_every: int = 1
    n_mined: int = 20
    orthogonal: bool = True
    lambda_orth: float = 1.0
    init_niter: int = 50
    seed: int = 0
    n_threads: int = 2
    verbose: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "assignment", _choice(Assignment, self.assignment, "assignment"))
        object.__setattr__(self, "nbr_loss", _choice(NeighbourLoss, self.nbr_loss, "nbr_loss"))
        try:
            t0, t1 = (float(t) for t in self.temperature)
        except (TypeError, ValueError):
            t0 = t1 = float("nan")
        if not (t0 > 0 and t1 > 0):
            raise ConfigError(f"temperature must be a (start, end) pair of positive numbers, got {self.temperature!r}")
        object.__setattr__(self, "temperature", (t0, t1))  # a JSON list comes back as a tuple
        for name in ("epochs", "batch_size", "n_neighbors", "n_candidates", "n_negatives", "n_threads",
                     "rec_batch_size", "n_soft", "n_mined", "init_niter"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "tau"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lambda_rec", "lambda_nbr", "noise", "lambda_orth", "lr_rotation_scale", "mine_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.n_anchors is not None and self.n_anchors < 1:
            raise ConfigError(f"n_anchors must be >= 1 or None (every training vector), got {self.n_anchors!r}")
        if self.lambda_rec == 0 and self.lambda_nbr == 0:
            raise ConfigError("lambda_rec and lambda_nbr are both 0: nothing to train; set one of them > 0")
        if self.lambda_nbr > 0:
            if not self.n_neighbors < self.n_candidates:
                raise ConfigError(f"need n_neighbors < n_candidates, got {self.n_neighbors} and {self.n_candidates}")
            if not self.n_negatives <= self.n_candidates - self.n_neighbors:
                raise ConfigError(f"n_negatives must be in [1, n_candidates - n_neighbors] = "
                                  f"[1, {self.n_candidates - self.n_neighbors}], got {self.n_negatives}")

    @classmethod
    def quick(cls, **changes: Any) -> LearnedPQConfig:
        """A setting that trains in about a second on 10K vectors (tests, smoke runs): one epoch over
        256 anchors, a 10-iteration OPQ start, one thread; ``changes`` override any field."""
        return cls(**{"epochs": 1, "n_anchors": 256, "init_niter": 10, "n_threads": 1, **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (choices as their values), for result files and reports."""
        return {k: (v.value if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def _choice(enum_type: type[_E], value: Any, what: str) -> _E:
    try:
        return enum_type(value)
    except ValueError:
        raise ConfigError(f"{what} must be one of {', '.join(repr(m.value) for m in enum_type)}, got {value!r}") from None


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError("LearnedPQ (quantizer 'learned') trains with PyTorch, which is not installed; run "
                          "pip install 'vidsearch[train]' or choose the 'pq' or 'opq' quantizer") from exc
    return torch


class LearnedPQ(_FaissCodes):
    """Product quantizer with a learned orthogonal projection, trained for neighbour preservation.

    Args:
        M: number of sub-quantizers; must divide the vector dimension.
        nbits: bits per sub-quantizer code (8: one byte each).
        config: training settings (:class:`LearnedPQConfig`; default: its defaults).
        seed: overrides ``config.seed`` when given (the index passes its training seed this way).

    Attributes:
        config: the settings used, ``seed`` applied.
        rotation_: (d, d) float32, ``y = x @ rotation_.T``.
        codebooks_: (M, 2**nbits, d / M) float32.
        n_features_in_: d.
        history_: one dict per epoch (losses, temperature, seconds).
        init_: the fitted OPQ the training started from.
        fit_seconds_: training time, without and with the initialisation.
    """

    def __init__(self, M: int, nbits: int = 8, config: LearnedPQConfig | None = None, *,
                 seed: int | None = None) -> None:
        if config is not None and not isinstance(config, LearnedPQConfig):
            raise ConfigError(f"config must be a LearnedPQConfig, got {type(config).__name__}; "
                              f"e.g. LearnedPQ(M, config=LearnedPQConfig(epochs=4))")
        config = config or LearnedPQConfig()
        self.M = M
        self.nbits = nbits
        self.config = config if seed is None else dataclasses.replace(config, seed=seed)
        self.rotation_ = None
        self.codebooks_ = None

    # ------------------------------------------------------------------ checks

    def _check_params(self, n: int, d: int) -> None:
        """The checks that depend on the data (the settings alone were checked by LearnedPQConfig)."""
        check_pq_shape(d, self.M, self.nbits)
        check_enough(n, 2**self.nbits)
        c = self.config
        if c.lambda_nbr > 0 and not c.n_candidates < n:
            raise ConfigError(f"need n_neighbors < n_candidates < n_vectors, got {c.n_neighbors}, "
                              f"{c.n_candidates}, {n}; lower n_candidates or pass more vectors")

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any = None, init: Any = None) -> LearnedPQ:
        """Train on (N, d) float32 vectors (L2-normalised or not; distances are squared L2).

        Args:
            X: (N, d) float32 training vectors; also the set whose neighbours are preserved.
            y: ignored (scikit-learn signature).
            init: a fitted quantizer with ``rotation_``/``codebooks_`` of the same M and nbits
                (normally an :class:`OPQ` fitted on X) to start from; when None an OPQ with
                ``init_niter`` iterations is fitted first.
        """
        torch = _import_torch()
        x = as_matrix(X)
        n, d = x.shape
        self._check_params(n, d)
        t_start = time.perf_counter()
        if init is None:
            init = OPQ(self.M, self.nbits, niter=self.config.init_niter).fit(x)
        self._check_init(init, d)
        t_init = time.perf_counter() - t_start
        rotation0 = np.eye(d, dtype=np.float32) if init.rotation_ is None else init.rotation_

        old_threads = torch.get_num_threads()
        torch.set_num_threads(int(self.config.n_threads))
        try:
            rotation, codebooks = self._train(x, rotation0, init.codebooks_)
        finally:
            torch.set_num_threads(old_threads)
        self.init_ = init
        self.n_features_in_ = d
        sample = x[np.random.default_rng(self.config.seed).choice(n, min(n, 512), replace=False)] @ rotation.T
        self._set_fitted(rotation, codebooks)
        load_codebooks_into_faiss_pq(self._pq, codebooks, sample=sample)  # FAISS == argmin on real data too
        total = time.perf_counter() - t_start
        self.fit_seconds_ = {"init": t_init, "train": total - t_init, "total": total}
        return self

    def _check_init(self, init: Any, d: int) -> None:
        cb = getattr(init, "codebooks_", None)
        if cb is None:
            raise ConfigError("init must be a fitted quantizer (OPQ or ProductQuantizer); call init.fit(X) first")
        expected = (self.M, 2**self.nbits, d // self.M)
        if tuple(cb.shape) != expected:
            raise ConfigError(f"init has codebooks of shape {tuple(cb.shape)}, expected {expected}; fit it with "
                              f"M={self.M}, nbits={self.nbits} on vectors of dimension {d}")

    def _train(self, x: NDArray[np.float32], rotation0: NDArray[np.float32],
               codebooks0: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        import torch
        from torch.nn.utils import parametrize

        torch.manual_seed(self.config.seed)
        gen = torch.Generator().manual_seed(self.config.seed)
        rng = np.random.default_rng(self.config.seed)
        n, d = x.shape
        X = torch.from_numpy(x)
        model = _DifferentiablePQ(rotation0, codebooks0, self.config.orthogonal)

        with torch.no_grad():  # scale of the problem, from the initial (OPQ) quantizer
            probe = X[torch.from_numpy(rng.choice(n, min(n, 8192), replace=False))]
            _, _, dmin = model.quantize(model.project(probe), 1.0)
            sub_mse = max(float(dmin.mean()), 1e-12)  # mean squared error per sub-space
        n_anchors = n if self.config.n_anchors is None else min(n, int(self.config.n_anchors))
        anchors = np.sort(rng.choice(n, n_anchors, replace=False)) if n_anchors < n else np.arange(n)
        batch = _Batch(X, sub_mse * self.M, None, None, 1.0)
        if self.config.lambda_nbr > 0:
            batch.candidates, batch.scale = self._exact_candidates(x, anchors)

        proj_params = [p for name, p in model.named_parameters() if not name.startswith("codebooks")]
        opt = torch.optim.Adam([{"params": [model.codebooks], "lr": self.config.lr},
                                {"params": proj_params, "lr": self.config.lr * self.config.lr_rotation_scale}])
        steps_per_epoch = math.ceil(n_anchors / self.config.batch_size)
        total_steps = steps_per_epoch * int(self.config.epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        t_start, t_end = self.config.temperature
        eye = torch.eye(d)
        self.history_: list[dict[str, float]] = []
        step = 0
        for epoch in range(int(self.config.epochs)):
            t0 = time.perf_counter()
            if batch.candidates is not None and self.config.mine_every and epoch % self.config.mine_every == 0:
                batch.mined = self._mine(model, x, anchors, batch.candidates)
            sums = {"rec": 0.0, "nbr": 0.0, "orth": 0.0}
            order = torch.randperm(n_anchors, generator=gen).numpy()
            for b in range(steps_per_epoch):
                T = t_start * (t_end / t_start) ** (step / max(total_steps - 1, 1)) * sub_mse
                rows = order[b * self.config.batch_size : (b + 1) * self.config.batch_size]
                with parametrize.cached():  # one matrix_exp per step for the orthogonal projection
                    loss, rec, nbr = self._step_loss(model, batch, anchors, rows, T, gen)
                    sums["rec"] += float(rec)
                    sums["nbr"] += float(nbr)
                    if not self.config.orthogonal and self.config.lambda_orth > 0:
                        W = model.proj.weight
                        orth = ((W @ W.T - eye) ** 2).sum()
                        loss = loss + self.config.lambda_orth * orth
                        sums["orth"] += float(orth.detach())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                sched.step()
                step += 1
            entry = {"epoch": epoch, "temperature": T / sub_mse, "seconds": time.perf_counter() - t0,
                     **{f"loss_{k}": v / steps_per_epoch for k, v in sums.items()}}
            self.history_.append(entry)
            if self.config.verbose:
                log.info("LearnedPQ epoch %d: %s", epoch, entry)
        return model.export()

    def _exact_candidates(self, x: NDArray[np.float32], anchors: NDArray[np.int64]) -> tuple[NDArray[np.int64], float]:
        """Exact top ``n_candidates`` of each anchor in ``x`` (the anchor itself first when jittering).

        Returns (n_anchors, n_candidates) int64 ids and the mean squared distance to the k-th neighbour.
        """
        import torch

        X = torch.from_numpy(x)
        norms = (X**2).sum(1)
        k = int(self.config.n_candidates) + 1
        out = np.empty((len(anchors), k), np.int64)
        kth = 0.0
        with torch.no_grad():
            for s in range(0, len(anchors), 1024):
                ids = torch.from_numpy(anchors[s : s + 1024])
                a = X[ids]
                dist = norms[None, :] - 2 * a @ X.T
                dist[torch.arange(len(a)), ids] = -np.inf  # the anchor itself first, whatever ties
                vals, idx = torch.topk(dist, k, dim=1, largest=False, sorted=True)
                out[s : s + len(a)] = idx.numpy()
                kth += float((vals[:, self.config.n_neighbors] + (a**2).sum(1)).clamp_min(0).sum())
        kth /= len(anchors)
        return (out[:, :-1] if self.config.noise > 0 else out[:, 1:]), max(kth, 1e-12)

    def _mine(self, model: Any, x: NDArray[np.float32], anchors: NDArray[np.int64],
              candidates: NDArray[np.int64]) -> NDArray[np.int64]:
        """ADC false positives: each anchor's FAISS ADC top ``n_mined`` over the training codes, minus
        its exact candidates and itself; (n_anchors, n_mined) int64, -1 where fewer."""
        rotation, codebooks = model.export()
        index = make_adc_index(rotation, codebooks, self.nbits)
        index.add(x)
        _, found = index.search(x[anchors], int(self.config.n_mined))
        out = np.full((len(anchors), int(self.config.n_mined)), -1, np.int64)
        for i in range(len(anchors)):
            known = set(candidates[i].tolist())
            known.add(int(anchors[i]))
            new = [j for j in found[i].tolist() if j >= 0 and j not in known]
            out[i, : len(new)] = new
        return out

    def _step_loss(self, model: Any, batch: _Batch, anchors: NDArray[np.int64], rows: NDArray[np.int64],
                   T: float, gen: Any) -> tuple[Any, Any, Any]:
        """Loss of one step: (total, reconstruction per vector, ranking loss)."""
        import torch
        import torch.nn.functional as F

        X = batch.X
        straight = self.config.assignment == Assignment.STRAIGHT_THROUGH
        # reconstruction on uniformly drawn vectors (drawing them among neighbours would favour dense regions)
        rec_items = torch.randint(0, len(X), (int(self.config.rec_batch_size),), generator=gen)
        zr = model.project(X[rec_items])
        if batch.candidates is None:  # reconstruction only
            qr, _, _ = model.quantize(zr, T, straight, self.config.n_soft)
            rec = ((zr - qr) ** 2).sum(1).mean()
            return self.config.lambda_rec * rec / batch.rec0, rec.detach(), torch.zeros(())

        k = int(self.config.n_neighbors)
        B = len(rows)
        a = X[torch.from_numpy(anchors[rows])]
        if self.config.noise > 0:  # jittered copy of the anchor: a query that is not in the training set
            norm = a.norm(dim=1, keepdim=True)
            a = a + self.config.noise * norm / math.sqrt(a.shape[1]) * torch.randn(a.shape, generator=gen)
            a = a * (norm / a.norm(dim=1, keepdim=True).clamp_min(1e-12))
        pool = torch.from_numpy(batch.candidates[rows])
        n_exact = pool.shape[1]
        if batch.mined is not None:
            pool = torch.cat([pool, torch.from_numpy(batch.mined[rows])], 1)
        with torch.no_grad():
            valid = pool >= 0
            true_d = ((a[:, None, :] - X[pool.clamp_min(0)]) ** 2).sum(2)
            true_d = torch.where(valid, true_d, torch.full_like(true_d, float("inf")))
            rank = torch.argsort(true_d, dim=1, stable=True)
            pos = rank[:, :k]  # positives: exact top-k (re-ranked for a jittered anchor)
            # negatives: mined ADC false positives first, then random other candidates
            priority = torch.rand(pool.shape, generator=gen)
            priority[:, n_exact:] -= 1.0
            priority = torch.where(valid, priority, torch.full_like(priority, float("inf")))
            priority.scatter_(1, pos, float("inf"))
            neg = torch.topk(priority, int(self.config.n_negatives), dim=1, largest=False).indices
            items = torch.gather(pool, 1, torch.cat([pos, neg], 1))  # (B, k + n_negatives)
        za = model.project(a)
        z_all = torch.cat([zr, model.project(X[items.reshape(-1)])])
        q_all, _, _ = model.quantize(z_all, T, straight, self.config.n_soft)
        n_rec = len(rec_items)
        rec = ((zr - q_all[:n_rec]) ** 2).sum(1).mean()
        qc = q_all[n_rec:].view(B, -1, za.shape[1])
        adc = ((za[:, None, :] - qc) ** 2).sum(2) / batch.scale  # (B, k + n_negatives), positives first
        if self.config.nbr_loss == NeighbourLoss.RANKING:
            gap = adc[:, :k, None] - adc[:, None, k:]  # positive minus negative: should be < 0
            nbr = F.softplus(gap / self.config.tau).mean() * self.config.tau
        else:  # distortion: ADC minus exact distance should be the same for every candidate of an anchor
            with torch.no_grad():
                exact = ((a[:, None, :] - X[items]) ** 2).sum(2) / batch.scale
            err = adc - exact
            nbr = ((err - err.mean(1, keepdim=True)) ** 2).mean()
        loss = self.config.lambda_rec * rec / batch.rec0 + self.config.lambda_nbr * nbr
        return loss, rec.detach(), nbr.detach()


class _Batch:
    """What every step reads: the data, the exact candidates, mined negatives, loss scales."""

    def __init__(self, X: Any, rec0: float, candidates: NDArray[np.int64] | None,
                 mined: NDArray[np.int64] | None, scale: float) -> None:
        self.X = X
        self.rec0 = rec0  # initial reconstruction error per vector (the reconstruction loss is relative to it)
        self.candidates = candidates
        self.mined = mined
        self.scale = scale  # mean squared distance to the k-th exact neighbour


def _module_class() -> Any:
    import torch

    class DifferentiablePQ(torch.nn.Module):
        """Orthogonal (or free) linear projection + M codebooks with soft/hard assignment."""

        def __init__(self, rotation: NDArray[np.float32], codebooks: NDArray[np.float32], orthogonal: bool) -> None:
            super().__init__()
            d = rotation.shape[1]
            self.M, self.ksub, self.dsub = codebooks.shape
            self.proj = torch.nn.Linear(d, rotation.shape[0], bias=False)
            weight = torch.from_numpy(np.array(rotation, dtype=np.float32))
            if orthogonal:
                torch.nn.utils.parametrizations.orthogonal(self.proj)
                with torch.no_grad():
                    self.proj.weight = weight  # right-inverse of the parametrization: starts exactly at R
            else:
                with torch.no_grad():
                    self.proj.weight.copy_(weight)
            self.codebooks = torch.nn.Parameter(torch.from_numpy(np.array(codebooks, dtype=np.float32)))

        def project(self, x: Any) -> Any:
            return self.proj(x)

        def export(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
            """(rotation (d, d), codebooks (M, ksub, dsub)) as float32 numpy copies."""
            with torch.no_grad():
                return (self.proj.weight.detach().numpy().astype(np.float32).copy(),
                        self.codebooks.detach().numpy().astype(np.float32).copy())

        def quantize(self, z: Any, T: float, straight_through: bool = True, top: int = 8) -> tuple[Any, Any, Any]:
            """(n, d) -> quantized (n, d), codes (n, M) int64, squared distances to them (n, M).

            The soft assignment is a softmax over the ``top`` nearest centroids of each sub-vector
            (the others have negligible weight once T is small, and skipping them makes a step
            several times cheaper); the hard one is the nearest centroid, as FAISS encodes.
            """
            n = z.shape[0]
            zs = z.reshape(n, self.M, self.dsub).transpose(0, 1)  # (M, n, dsub)
            C = self.codebooks  # (M, ksub, dsub)
            with torch.no_grad():
                d2_all = (C**2).sum(-1)[:, None, :] - 2 * torch.bmm(zs, C.transpose(1, 2))  # + ||z||^2, constant
                t = min(int(top), self.ksub)
                nearest = torch.topk(d2_all, t, dim=-1, largest=False, sorted=True).indices  # (M, n, t)
            Cg = torch.gather(C, 1, nearest.reshape(self.M, -1, 1).expand(-1, -1, self.dsub)).view(self.M, n, t, self.dsub)
            d2 = ((zs[:, :, None, :] - Cg) ** 2).sum(-1)  # (M, n, t), with gradient
            hard = Cg[:, :, 0]
            p = torch.softmax(-d2 / T, dim=-1)
            soft = (p[..., None] * Cg).sum(2)
            q = soft + (hard - soft).detach() if straight_through else soft
            return q.transpose(0, 1).reshape(n, -1), nearest[:, :, 0].T, d2[:, :, 0].detach().T

    return DifferentiablePQ


def _DifferentiablePQ(rotation: NDArray[np.float32], codebooks: NDArray[np.float32], orthogonal: bool) -> Any:
    return _module_class()(rotation, codebooks, orthogonal)
