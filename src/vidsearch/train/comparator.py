"""Training the learned sequence comparator (``search/comparator.py``, ViSiL-style) and its export to ONNX.

Data: the engine's own candidates. Each training query is searched as a user's query is (default
parameters, no re-rank), and each of its top ``rerank_candidates`` videos becomes one pair: the (n, m)
similarity matrix of the query's segments (best over the whole frame and the insets) with the video's
segments, labelled with the ground truth: a true copy (pair label 1, and the cells on the copy's
time mapping, :func:`cell_targets`) or a look-alike the vote ranked high (label 0, every cell 0): the
hard negatives that the vote's score cannot tell from copies. A query's candidates stay together
(:class:`QueryGroup`): the background channel of :func:`~vidsearch.search.comparator.pair_features` is
taken over all of them, as at search time.

Model (:class:`ComparatorNet`): four convolutions over the 3-channel matrix (3x3, 3x3, 3x3 dilated 2, 1x1;
no pooling: a row is a second, and the matched ranges need that resolution), a logit per cell; about
7K weights at the default width.

Loss per query group: per-cell binary cross-entropy against the copy band (positives up-weighted), plus
on the pairs' scores (:func:`~vidsearch.search.comparator.top_rows_score`, differentiable here) a
binary cross-entropy against the pair labels (scores comparable across queries: the benchmark ranks
every query's predictions together) and a triplet-style margin between each true pair and the query's
best-scoring look-alike (ViSiL's triplet loss, on the refined score). ViSiL's similarity regulariser
is not needed: the map is a sigmoid.

Deterministic for a seed on one machine (``torch.manual_seed``, deterministic algorithms, fixed threads,
one seeded ``numpy`` generator for the order and the augmentations: independent flips of the query
and reference time axes, a crop of the query's rows, feature noise): the same data and configuration
give the same weights, hence the same :func:`~vidsearch.train.loop.weights_hash`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, EncoderError
from vidsearch.search.comparator import pair_features, similarity_matrix, top_rows_score
from vidsearch.train.onnx_export import export_checked

if TYPE_CHECKING:
    import torch

    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopySpan:
    """Query seconds [query_start, query_end] show reference seconds [ref_start, ref_end] (backwards when
    ``reversed``), at a constant speed."""

    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    reversed: bool = False


def cell_targets(q_starts: NDArray[np.float64], q_ends: NDArray[np.float64], r_starts: NDArray[np.float64],
                 r_ends: NDArray[np.float64], spans: Sequence[CopySpan], band: float = 1.0) -> NDArray[np.float32]:
    """(n, m) float32: 1 where the query segment's centre lies in a copy and the reference segment's centre
    is within ``band`` seconds of where the copy maps it, else 0.

    Args:
        q_starts, q_ends: (n,) query segment times (seconds); r_starts, r_ends: (m,) the reference's.
        spans: the copies of this reference in this query.
    """
    qc = (np.asarray(q_starts) + np.asarray(q_ends)) / 2
    rc = (np.asarray(r_starts) + np.asarray(r_ends)) / 2
    out = np.zeros((len(qc), len(rc)), np.float32)
    for s in spans:
        if s.query_end <= s.query_start:
            continue
        inside = (qc >= s.query_start) & (qc <= s.query_end)
        frac = (qc - s.query_start) / (s.query_end - s.query_start)
        where = s.ref_end - frac * (s.ref_end - s.ref_start) if s.reversed else s.ref_start + frac * (s.ref_end - s.ref_start)
        hit = (np.abs(rc[None, :] - where[:, None]) <= band) & (rc[None, :] >= s.ref_start - band / 2) \
            & (rc[None, :] <= s.ref_end + band / 2)
        out[inside[:, None] & hit] = 1.0
    return out


@dataclass(frozen=True)
class ComparatorPair:
    """One (query, candidate) pair: its (n, m) similarity matrix, cell targets and label, and the vote's score
    of the video (for comparison)."""

    ref_id: str
    sims: NDArray[np.float32]
    target: NDArray[np.float32]
    label: int
    vote_score: float = 0.0


@dataclass(frozen=True)
class QueryGroup:
    """A query's candidates, best first from voting (their background channel is taken together)."""

    query_id: str
    pairs: tuple[ComparatorPair, ...]

    @property
    def positives(self) -> int:
        return sum(p.label for p in self.pairs)


def pairs_from_engine(engine: Engine, queries: Mapping[str, Any], copies: Mapping[str, Sequence[CopySpan]],
                      params: SearchParams | None = None, ref_id: Callable[[str], str] | None = None,
                      band: float = 1.0, progress: Callable[[str], None] | None = None) -> list[QueryGroup]:
    """The training pairs of ``queries``: each query's top ``params.rerank_candidates`` videos from the vote.

    Args:
        engine: the collection of the training references.
        queries: query id -> its ``EncodedMedia`` (``Engine.encode_query(path, insets=True)``).
        copies: query id -> its copies (none for a query without a copy).
        params: search parameters of the vote (default ``SearchParams()``; its re-rank is ignored).
        ref_id: a video id -> the id the copies name (default: the stem of the video's file name).
        band: seconds around a copy's time mapping whose cells are positive (:func:`cell_targets`).
    """
    from vidsearch.search.results import SearchParams

    params = dataclasses.replace(params or SearchParams(), rerank="none")
    snap = engine.snapshot
    name = ref_id or (lambda v: Path(snap.paths[v]).stem)
    groups = []
    for i, (qid, media) in enumerate(queries.items()):
        result = engine.search_encoded([media], [qid], params.rerank_candidates, params, snap)[0]
        q_starts = np.array([s.start for s in media.segments], np.float64)
        q_ends = np.array([s.end for s in media.segments], np.float64)
        pairs = []
        for hit in result.results:
            ids = snap.video_segment_ids(snap.position[hit.video_id])
            vectors = np.asarray(snap.segments[ids], np.float32)
            sims = similarity_matrix(media.segment_vectors, vectors, media.region_segment_vectors,
                                     media.region_segment_blank)
            rid = name(hit.video_id)
            spans = [c for c in copies.get(qid, ()) if c.ref_id == rid]
            target = cell_targets(q_starts, q_ends, snap.table.start[ids], snap.table.end[ids], spans, band)
            pairs.append(ComparatorPair(rid, sims, target, int(bool(spans)), float(hit.score)))
        if pairs:
            groups.append(QueryGroup(qid, tuple(pairs)))
        if progress is not None:
            progress(f"query {i + 1}/{len(queries)}: {len(pairs)} candidates, {sum(p.label for p in pairs)} true")
    return groups


@dataclass(frozen=True)
class ComparatorConfig:
    """How the comparator is trained.

    Attributes:
        width: channels of the first convolution (the next two have twice as many).
        epochs: passes over the query groups; batch_queries: query groups per optimiser step.
        lr, weight_decay: AdamW's (cosine decay of the rate to 0).
        pos_weight: weight of a positive cell in the cell loss (they are rare: a copy's band in a few pairs).
        pair_weight: weight of the pair losses (cross-entropy of the scores, and the margin) against the cell loss.
        margin: the triplet-style margin between a true pair's score and its query's best look-alike's.
        top_rows: rows a pair's score averages (:func:`~vidsearch.search.comparator.top_rows_score`).
        background_rank: the background cosine's rank (:func:`~vidsearch.search.comparator.pair_features`).
        flip, crop, noise: augmentation: probability of reversing each time axis, of cropping the query's
            rows (to at least half), and the standard deviation of the noise added to the cosines.
        seed: seeds torch and every random choice; threads: torch intra-op threads (fixed, for determinism).
    """

    width: int = 8
    epochs: int = 30
    batch_queries: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pos_weight: float = 4.0
    pair_weight: float = 1.0
    margin: float = 0.3
    top_rows: int = 3
    background_rank: int = 30
    flip: float = 0.5
    crop: float = 0.3
    noise: float = 0.01
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("width", "epochs", "batch_queries", "top_rows", "background_rank", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ComparatorConfig.{name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.pos_weight > 0 and self.pair_weight >= 0
                and self.margin >= 0 and 0 <= self.flip <= 1 and 0 <= self.crop <= 1 and self.noise >= 0):
            raise ConfigError(f"expected lr > 0, weight_decay >= 0, pos_weight > 0, pair_weight >= 0, margin >= 0, "
                              f"flip and crop in [0, 1], noise >= 0; got {self.lr}, {self.weight_decay}, "
                              f"{self.pos_weight}, {self.pair_weight}, {self.margin}, {self.flip}, {self.crop}, {self.noise}")


def _modules() -> tuple[Any, Any]:
    """The torch module classes (defined on first use: torch is an optional dependency)."""
    global _MODULES
    if _MODULES is not None:
        return _MODULES
    import torch
    from torch import nn

    class ComparatorNet(nn.Module):
        """(B, 3, n, m) features -> (B, n, m) logits, one per cell."""

        def __init__(self, width: int) -> None:
            super().__init__()
            self.width = width
            self.body = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2), nn.ReLU(),
                nn.Conv2d(2 * width, 1, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)[:, 0]

    class Probabilities(nn.Module):
        """What the ONNX file computes: the sigmoid of a :class:`ComparatorNet`'s logits."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.inner(x))

    _MODULES = (ComparatorNet, Probabilities)
    return _MODULES


_MODULES: tuple[Any, Any] | None = None


def build_comparator_net(width: int = 8) -> Any:
    """A fresh ``ComparatorNet`` (torch module: (B, 3, n, m) features -> (B, n, m) logits) of the given width."""
    return _modules()[0](width)


@dataclass
class ComparatorTrainResult:
    """A trained comparator and its record.

    Attributes:
        model: the torch module (eval mode; logits out).
        config: how it was trained.
        history: mean loss of each epoch, in order.
        seconds: wall-clock training time.
        source: what the pairs were, and how many.
    """

    model: Any
    config: ComparatorConfig
    history: list[float]
    seconds: float
    source: str
    counts: dict[str, int] = field(default_factory=dict)

    def weights_hash(self) -> str:
        from vidsearch.train.loop import weights_hash

        return weights_hash(self.model)


def _augment(group: QueryGroup, rng: np.random.Generator, config: ComparatorConfig
             ) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
    sims = [p.sims for p in group.pairs]
    targets = [p.target for p in group.pairs]
    n = sims[0].shape[0]
    if config.crop and n >= 4 and rng.random() < config.crop:
        size = int(rng.integers((n + 1) // 2, n + 1))
        lo = int(rng.integers(0, n - size + 1))
        sims = [s[lo : lo + size] for s in sims]
        targets = [t[lo : lo + size] for t in targets]
    if rng.random() < config.flip:
        sims, targets = [s[::-1] for s in sims], [t[::-1] for t in targets]
    if rng.random() < config.flip:
        sims, targets = [s[:, ::-1] for s in sims], [t[:, ::-1] for t in targets]
    if config.noise:
        sims = [s + rng.normal(0.0, config.noise, s.shape).astype(np.float32) for s in sims]
    # copies, not ascontiguousarray: a reversed axis of length 1 counts as contiguous to numpy and keeps its
    # negative stride, which torch.from_numpy refuses (a one-segment query, flipped)
    return [np.array(s, np.float32) for s in sims], [np.array(t) for t in targets]


def group_loss(model: Any, sims: Sequence[NDArray[np.float32]], targets: Sequence[NDArray[np.float32]],
               labels: Sequence[int], config: ComparatorConfig) -> torch.Tensor:
    """The loss of one query's candidates (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    features = pair_features(sims, config.background_rank)
    pos_weight = torch.tensor(config.pos_weight)
    cell_terms, scores = [], []
    for x, t in zip(features, targets):
        logits = model(torch.from_numpy(x[None]))[0]
        target = torch.from_numpy(t)
        cell_terms.append(F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight))
        rows = torch.sigmoid(logits).amax(dim=1)
        scores.append(torch.topk(rows, min(config.top_rows, len(rows))).values.mean())
    loss = torch.stack(cell_terms).mean()
    if config.pair_weight:
        s = torch.stack(scores).clamp(1e-6, 1 - 1e-6)
        y = torch.tensor([float(v) for v in labels])
        pair = F.binary_cross_entropy(s, y)
        if 0 < y.sum() < len(y):
            hardest = s[y == 0].max()
            pair = pair + F.relu(config.margin - s[y == 1] + hardest).mean()
        loss = loss + config.pair_weight * pair
    return loss


def train_comparator(groups: Sequence[QueryGroup], config: ComparatorConfig | None = None,
                     progress: Callable[[str], None] | None = None, source: str = "") -> ComparatorTrainResult:
    """Train a comparator on the candidates of ``groups`` (see the module docstring).

    Args:
        groups: from :func:`pairs_from_engine` (or built by hand).
        config: the training settings (default :class:`ComparatorConfig`).
        progress: called with one line per epoch (loss, seconds).
        source: what the data is, for the model's record.

    Raises:
        ConfigError: PyTorch missing, no group, or no true pair.
    """
    from vidsearch.train.loop import require_torch

    require_torch()
    import torch

    config = config or ComparatorConfig()
    groups = [g for g in groups if g.pairs]
    if not groups or not any(g.positives for g in groups):
        raise ConfigError(f"training the comparator needs query groups with at least one true pair; got "
                          f"{len(groups)} groups and {sum(g.positives for g in groups)} true pairs")
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    try:
        model = build_comparator_net(config.width)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = (len(groups) + config.batch_queries - 1) // config.batch_queries
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps_per_epoch * config.epochs))
        history: list[float] = []
        for epoch in range(config.epochs):
            t = time.perf_counter()
            order = rng.permutation(len(groups))
            values = []
            model.train()
            for b in range(0, len(order), config.batch_queries):
                batch = [groups[int(i)] for i in order[b : b + config.batch_queries]]
                terms = []
                for g in batch:
                    sims, targets = _augment(g, rng, config)
                    terms.append(group_loss(model, sims, targets, [p.label for p in g.pairs], config))
                loss = torch.stack(terms).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                values.append(float(loss.detach()))
            history.append(float(np.mean(values)))
            if progress is not None:
                progress(f"comparator epoch {epoch + 1}/{config.epochs}: loss {history[-1]:.4f} "
                         f"({len(values)} steps, {time.perf_counter() - t:.1f} s)")
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)
    model.eval()
    counts = {"queries": len(groups), "pairs": sum(len(g.pairs) for g in groups),
              "true_pairs": sum(g.positives for g in groups)}
    return ComparatorTrainResult(model, config, history, time.perf_counter() - t0,
                                 source or f"{counts['queries']} queries", counts)


def refine_torch(model: Any, features: NDArray[np.float32]) -> NDArray[np.float32]:
    """(3, n, m) features -> (n, m) probabilities with the torch model (no gradient): what the ONNX file computes."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(features[None], np.float32))))[0].numpy()


def group_scores(model: Any, groups: Sequence[QueryGroup], config: ComparatorConfig) -> list[tuple[str, str, int, float]]:
    """(query id, ref id, label, pair score) of every pair, scored by the torch model as the re-ranker scores them."""
    out = []
    for g in groups:
        for p, x in zip(g.pairs, pair_features([p.sims for p in g.pairs], config.background_rank)):
            out.append((g.query_id, p.ref_id, p.label, top_rows_score(refine_torch(model, x), config.top_rows)))
    return out


def export_comparator(result: ComparatorTrainResult, target: str | os.PathLike[str],
                      sample: NDArray[np.float32] | None = None, atol: float = 1e-4,
                      extra: dict[str, Any] | None = None) -> Path:
    """Write the trained comparator as ONNX (input ``features`` (1, 3, n, m), output ``map`` (1, n, m)
    probabilities, n and m free) with its description (``vidsearch.comparator`` metadata), after checking that
    ONNX Runtime reproduces torch within ``atol`` on ``sample`` (default: a random (3, 17, 23) input) and on
    a second shape; atomic.

    Raises:
        EncoderError: ONNX Runtime's output differs from torch's by more than ``atol``.
    """
    from vidsearch.train.loop import require_torch

    require_torch()
    import torch

    from vidsearch.search.comparator import CHANNELS, INPUT_NAME, METADATA_KEY, MODEL_FORMAT, MODEL_FORMAT_VERSION, OUTPUT_NAME

    net = result.model.eval()
    wrapped = _modules()[1](net).eval()
    rng = np.random.default_rng(0)
    checks = [sample if sample is not None else rng.uniform(-0.5, 1.0, (CHANNELS, 17, 23)).astype(np.float32),
              rng.uniform(-0.5, 1.0, (CHANNELS, 5, 40)).astype(np.float32)]
    digest = result.weights_hash()
    cfg = result.config
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "channels": CHANNELS,
            "background_rank": cfg.background_rank, "top_rows": cfg.top_rows, "width": cfg.width,
            "weights_sha256": digest,
            "train": {"config": dataclasses.asdict(cfg), "data": result.source, "counts": result.counts,
                      "history": [round(v, 6) for v in result.history], "seconds": round(result.seconds, 2),
                      "torch": torch.__version__}, **(extra or {})}
    x = torch.from_numpy(np.ascontiguousarray(checks[0][None], np.float32))

    def check(session: Any) -> float:
        return max(float(np.abs(session.run(None, {INPUT_NAME: np.ascontiguousarray(c[None], np.float32)})[0][0]
                                - refine_torch(net, c)).max()) for c in checks)

    path, err = export_checked(wrapped, (x,), target, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                               dynamic_axes={INPUT_NAME: {2: "n", 3: "m"}, OUTPUT_NAME: {1: "n", 2: "m"}},
                               metadata_key=METADATA_KEY, meta=meta, check=check, atol=atol, what="comparator")
    log.info("wrote %s (comparator, weights %s, max |onnx - torch| %.1e)", path, digest[:12], err)
    return path
