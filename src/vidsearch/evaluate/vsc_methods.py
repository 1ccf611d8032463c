"""The methods of ``vidsearch eval vsc`` as VSC predictors: a query in, matched time ranges with scores out.

The retrieval methods of the near-duplicate benchmark (``methods.py``, ``peers.py``) are reused as
they are; this module only turns what each returns into VSC matches (``vsc_metrics.Match``):

- ``vidsearch`` (and any ``vidsearch-...`` name ``report.make_method`` knows): a collection of the
  references searched through the :class:`~vidsearch.search.engine.Engine`, as every entry point
  searches. Every matched time range the engine returns becomes one prediction (several per pair
  when it returns several), scored with that range's own score (the mean similarity of its
  segments, ``results.Match.score``); the video's score (``VideoHit.score``, the mean over *all*
  query segments, by which the engine ranks) is kept beside it for a pair figure of its own.
- ``vidsearch:<rerank>`` (``vidsearch:dtw``, ``vidsearch:bidtw``, ``vidsearch:learned``...): today's
  defaults with that re-rank mode. ``learned`` runs the learned comparator
  (``search/comparator.py``) at its default path (``$VIDSEARCH_COMPARATOR``, else the cache);
  :func:`train_vsc_comparator` trains one on another seed of this benchmark.
- ``exact-frame-scan``: ``FrameScanMethod`` (the mean over query frames of the best cosine with
  any reference frame; an exact scan of every frame vector). It names a reference range but no
  query range: its predictions span the whole query.
- peers (TMK via perception and tmkpy, videohash): one score per pair, no range at all: their
  predictions span the whole query and the whole reference.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vidsearch.config import CollectionConfig, DecodeConfig, SegmentConfig
from vidsearch.errors import ConfigError, NotFittedError
from vidsearch.evaluate.methods import FrameScanMethod, Reference, RetrievalMethod, VidsearchMethod
from vidsearch.evaluate.vsc_metrics import Match
from vidsearch.search.results import SearchParams

if TYPE_CHECKING:
    from vidsearch.evaluate.vsc_data import VSCDataset

DEFAULT_METHOD = "vidsearch"
"""Today's default configuration: the default collection and the default search parameters."""
FRAME_SCAN = "exact-frame-scan"
"""The exact scan over every frame vector with the default encoder."""
DEFAULT_METHODS = (DEFAULT_METHOD, FRAME_SCAN, "peers")
"""What ``vidsearch eval vsc`` runs when ``--methods`` is not given ('peers': every peer)."""


class Localization(str, Enum):
    """What time ranges a method's predictions carry."""

    BOTH = "query and reference ranges"
    REFERENCE = "reference range; the whole query"
    NONE = "none: the whole query and the whole reference (pair scores only)"


@dataclass(frozen=True)
class QueryPrediction:
    """What a method predicted for one query.

    Attributes:
        matches: VSC matches (query and reference seconds, score), any number per reference.
        video_scores: reference id -> the score the method ranks the reference by, where it differs
            from its matches' scores (vidsearch: the video score); empty otherwise.
    """

    matches: list[Match]
    video_scores: dict[str, float] = field(default_factory=dict)


class VSCPredictor(Protocol):
    """Index the references once, then predict matches for each query."""

    name: str
    localization: Localization

    def index(self, references: list[Reference]) -> None: ...

    def predict(self, query_id: str, path: Path, k: int) -> QueryPrediction: ...

    def close(self) -> None: ...


@functools.lru_cache(maxsize=4096)
def duration(path: str) -> float:
    """Seconds of the video at ``path`` (as probed; cached per path)."""
    from vidsearch.decode import probe

    return float(probe(path).duration)


class VidsearchRanges(VidsearchMethod):
    """A :class:`VidsearchMethod` whose predictions are every matched range the engine returns."""

    localization = Localization.BOTH

    def __init__(self, name: str, config: CollectionConfig | None = None, params: SearchParams | None = None) -> None:
        super().__init__(name, config, params)
        self.timings_ms: list[dict[str, float]] = []  # the engine's decode / encode / search / total, per query

    def predict(self, query_id: str, path: Path, k: int) -> QueryPrediction:
        """Search ``path`` through the engine; one match per (video, matched range) of the top ``k`` videos."""
        if self._engine is None:
            raise NotFittedError(f"{self.name}: call index() before predict()")
        result = self._engine.search(path, k=k, params=self.params)
        self.rerank_ms.append(result.rerank_ms)
        self.timings_ms.append(dict(result.timings_ms))
        return ranges_prediction(result, query_id, self._ref_of_video)


def ranges_prediction(result: Any, query_id: str, ref_of_video: Mapping[str, str]) -> QueryPrediction:
    """A ``SearchResult`` as VSC matches: one per (video, matched range), scored with the range's own score;
    the video scores beside them (``ref_of_video``: the engine's video id -> the data set's reference id)."""
    matches, video_scores = [], {}
    for hit in result.results:
        ref_id = ref_of_video[hit.video_id]
        video_scores[ref_id] = float(hit.score)
        for m in hit.matches:
            matches.append(Match(query_id, ref_id, float(m.query_start), float(m.query_end),
                                 float(m.ref_start), float(m.ref_end), float(m.score)))
    return QueryPrediction(matches, video_scores)


class WholeSpan:
    """A method that scores pairs (and at most names a reference range) as a VSC predictor: a missing
    range is the whole query, or the whole reference."""

    def __init__(self, method: RetrievalMethod) -> None:
        self.method = method
        self.name = method.name
        self.localization = Localization.REFERENCE if isinstance(method, FrameScanMethod) else Localization.NONE
        self._ref_paths: dict[str, Path] = {}

    def index(self, references: list[Reference]) -> None:
        self._ref_paths = {r.ref_id: r.path for r in references}
        self.method.index(references)

    def predict(self, query_id: str, path: Path, k: int) -> QueryPrediction:
        """The method's top ``k`` references, each one match (missing ranges: the whole video)."""
        q_seconds = duration(str(path))
        out = []
        for p in self.method.query(path, k):
            r_seconds = duration(str(self._ref_paths[p.ref_id]))
            q0, q1 = p.query_range or (0.0, q_seconds)
            r0, r1 = p.ref_range or (0.0, r_seconds)
            # a frame scan's range ends one frame interval after its last frame: clip to the video
            out.append(Match(query_id, p.ref_id, max(0.0, q0), min(q1, q_seconds), max(0.0, r0), min(r1, r_seconds),
                             float(p.score)))
        return QueryPrediction(out)

    def close(self) -> None:
        self.method.close()


def is_peer(name: str) -> bool:
    """Whether ``name`` is a peer (a library other than vidsearch) rather than one of ours."""
    from vidsearch.evaluate import peers

    return name in peers.PEERS


def make_predictor(name: str, collection: dict[str, Any] | None = None) -> VSCPredictor:
    """A predictor by name: ``vidsearch`` (today's defaults), ``vidsearch:<rerank>`` (the defaults with a
    re-rank mode of ``SearchParams.rerank``), ``exact-frame-scan``, any name
    ``report.make_method`` accepts (``vidsearch-sscd:dtw``, ``exact-frame-scan-effnet-lite0``, a peer).

    ``collection``: ``fps`` / ``window`` / ``stride`` overriding every vidsearch collection's defaults.

    Raises:
        ConfigError: an unknown name.
        PeerError: a peer whose library is not installed.
    """
    from vidsearch.evaluate.report import make_method

    over = {k: v for k, v in (collection or {}).items() if v}
    head, colon, mode = name.partition(":")
    if head == DEFAULT_METHOD:
        from vidsearch.search.results import RERANK_MODES

        if colon and mode not in RERANK_MODES:
            raise ConfigError(f"{name}: unknown re-rank mode {mode!r}; expected vidsearch:<{'|'.join(RERANK_MODES)}>")
        config = CollectionConfig(decode=DecodeConfig(**({"fps": over["fps"]} if "fps" in over else {})),
                                  segment=SegmentConfig(**{k: over[k] for k in ("window", "stride") if k in over}))
        return VidsearchRanges(name, config, SearchParams(rerank=mode or "none"))
    if name == FRAME_SCAN:
        return WholeSpan(FrameScanMethod(name, encoder=CollectionConfig().encode.encoder))
    if name == "peers":
        raise ConfigError("'peers' stands for every peer; expand it first (vsc_run.expand)")
    method = make_method(name, over)
    if isinstance(method, VidsearchMethod):
        return VidsearchRanges(method.name, method.config, method.params)
    return WholeSpan(method)


TRAIN_SEED = 1
"""The seed of the data set the learned comparator trains on (the benchmark evaluates seed 0)."""
QUERY_CACHE_FORMAT = "vidsearch-vsc-encoded-queries"


@dataclass(frozen=True)
class PreparedVSC:
    """A VSC-style data set indexed with the default collection, its queries encoded as searches encode them.

    Attributes:
        dataset: the data set.
        collection: the collection of its references (default :class:`CollectionConfig`).
        media: query id -> its ``EncodedMedia`` (``Engine.encode_query``; decode and encode timings inside).
        ref_of_video: the collection's video id -> the data set's reference id.
    """

    dataset: VSCDataset
    collection: Path
    media: dict[str, Any] = field(repr=False)
    ref_of_video: dict[str, str] = field(repr=False)


def prepare_vsc(work: str | Path, size: str = "small", seed: int = 0, params: SearchParams | None = None,
                progress: Callable[[str], None] | None = None, data_root: str | Path | None = None,
                sources: str = "all") -> PreparedVSC:
    """Build (or find) the VSC-style data set of ``size`` and ``seed``, index its references into
    ``work/coll-<data set>`` and encode its queries into ``work/queries-<data set>.pkl``, both
    reused when present (the queries only when encoded for the same data set, encoder and ``crops`` /
    ``insets``). ``data_root``: where the data set is built or found (default: the cache,
    ``vsc_data.default_root``). ``sources``: the whole source imagery or one side of its split
    (``vsc_data.dataset_config``).

    Searching the encoded queries (``Engine.search_encoded``) is what ``Engine.search`` does after
    encoding: methods that differ only in their search parameters can then be compared on one encoding.

    Raises:
        MissingDataError: the footage or photographs of the data set are not installed.
        DecodeError: a reference failed to index.
    """
    import pickle

    from vidsearch.atomic import atomic_write
    from vidsearch.collection import Collection
    from vidsearch.errors import DecodeError
    from vidsearch.evaluate.vsc_data import build_dataset, dataset_config
    from vidsearch.search.engine import Engine

    say = progress or (lambda _line: None)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    params = params or SearchParams()
    dataset = build_dataset(dataset_config(size, seed, sources), data_root, progress=say)
    coll_path = work / f"coll-{dataset.root.name}"  # the root's name holds size, seed and the config's hash
    if not (coll_path / "manifest.json").is_file():
        tmp_path = coll_path.with_name(coll_path.name + f".tmp-{os.getpid()}")
        with Collection.create(tmp_path, CollectionConfig()) as coll:
            reports = coll.add([dataset.reference_path(r) for r in dataset.reference_ids])
        failed = [r for r, rep in zip(dataset.reference_ids, reports) if rep.video_id is None]
        if failed:
            raise DecodeError(f"references {failed} of {dataset.root} failed to index; rebuild the data set")
        os.replace(tmp_path, coll_path)
        say(f"indexed {len(dataset.reference_ids)} references into {coll_path}")
    with Collection.open(coll_path) as coll:
        ref_of_video = {v["id"]: Path(v["path"]).stem for v in coll.videos()}
    key = {"format": QUERY_CACHE_FORMAT, "dataset": str(dataset.root), "collection": CollectionConfig().to_dict(),
           "crops": params.crops, "insets": params.insets}
    cached = work / f"queries-{dataset.root.name}.pkl"
    media: dict[str, Any] = {}
    if cached.is_file():
        doc = pickle.loads(cached.read_bytes())  # our own cache, written below
        if isinstance(doc, dict) and doc.get("key") == key:
            media = doc["media"]
    if set(media) != set(dataset.query_ids):
        media = {}
        with Engine.open(coll_path) as engine:
            for i, q in enumerate(dataset.query_ids):
                media[q] = engine.encode_query(dataset.query_path(q), crops=params.crops, insets=params.insets)
                say(f"encoded query {i + 1}/{len(dataset.query_ids)}")
        atomic_write(cached, pickle.dumps({"key": key, "media": media}))  # a temp file of its own: runs at once
    return PreparedVSC(dataset, coll_path, media, ref_of_video)


def dataset_subset(dataset: VSCDataset, query_ids: Sequence[str]) -> VSCDataset:
    """``dataset`` with only ``query_ids`` (their copies and ground truth; the same references).

    Raises:
        ConfigError: an id that is not a query of the data set, or none at all.
    """
    import dataclasses

    keep = set(query_ids)
    unknown = sorted(keep - set(dataset.query_ids))
    if unknown or not keep:
        raise ConfigError(f"expected a non-empty subset of the data set's {len(dataset.query_ids)} query ids, got "
                          f"{len(keep)} with unknown ids {unknown[:5]}")
    return dataclasses.replace(
        dataset, query_ids=tuple(q for q in dataset.query_ids if q in keep),
        ground_truth=tuple(g for g in dataset.ground_truth if g.query_id in keep),
        copies={q: c for q, c in dataset.copies.items() if q in keep})


def train_vsc_comparator(work: str | Path, out: str | Path | None = None, size: str = "small",
                         seed: int | Sequence[int] = TRAIN_SEED, config: Any = None, params: SearchParams | None = None,
                         progress: Callable[[str], None] | None = None,
                         query_ids: Sequence[str] | None = None, data_root: str | Path | None = None,
                         sources: str = "all") -> Path:
    """Train the learned comparator on the VSC-style data set of ``seed`` (or of several seeds) and write it to ``out``.

    Each data set is prepared by :func:`prepare_vsc` (its references indexed with the default collection
    configuration, its queries encoded as searches encode them, insets on; both cached in ``work``); the
    training pairs are each query's top candidates from the vote (``train.comparator.pairs_from_engine``),
    those of several data sets trained on together.

    Args:
        work: a folder for the collection and the encoded queries (created).
        out: the ONNX file to write (default: ``search.comparator.default_path()``, where
            ``rerank="learned"`` looks).
        size, seed: the data set (``vsc_data.dataset_config``), or a sequence of seeds for several; never an
            evaluated seed (0).
        config: ``train.comparator.ComparatorConfig`` (default: its defaults).
        params: the search parameters of the vote (default ``SearchParams()``); ``rerank_candidates`` is
            the number of candidates per query that become training pairs.
        progress: called with one line per step.
        query_ids: train on these queries only, of every data set (default: all; e.g. the rest held out to
            choose a configuration).
        data_root: where the data set is built or found (default: the cache; one seed only).
        sources: the data sets' side of the source split (``vsc_data.dataset_config``): ``train`` keeps
            every evaluated ``test`` data set's imagery out of training.

    Returns:
        The path written.

    Raises:
        ConfigError: no seed, a seed twice, or ``data_root`` with several seeds.
    """
    import dataclasses

    from vidsearch.search.comparator import default_path
    from vidsearch.search.engine import Engine
    from vidsearch.train.comparator import ComparatorConfig, CopySpan, export_comparator, pairs_from_engine, train_comparator

    seeds = [int(seed)] if isinstance(seed, int) else [int(s) for s in seed]
    if not seeds or len(set(seeds)) != len(seeds) or (data_root is not None and len(seeds) > 1):
        raise ConfigError(f"expected one or more distinct seeds (and data_root with one seed only), got seeds {seeds} "
                          f"and data_root {data_root}")
    say = progress or (lambda _line: None)
    params = params or SearchParams()
    groups = []
    chosen_of: dict[int, list[str]] = {}
    total = 0
    for one in seeds:
        prepared = prepare_vsc(work, size, one, params, say, data_root, sources)
        dataset = prepared.dataset
        chosen = list(dataset.query_ids) if query_ids is None else list(dataset_subset(dataset, query_ids).query_ids)
        chosen_of[one], total = chosen, total + len(dataset.query_ids)
        media = {q: prepared.media[q] for q in chosen}
        copies = {q: [CopySpan(c.ref_id, c.query_start, c.query_end, c.ref_start, c.ref_end,
                               any(e.startswith("reverse") for e in c.edits)) for c in dataset.copies.get(q, ())]
                  for q in chosen}
        with Engine.open(prepared.collection) as engine:
            found = pairs_from_engine(engine, media, copies, params, ref_id=prepared.ref_of_video.__getitem__)
        # the query (and reference) ids of two seeds name different videos
        groups += found if len(seeds) == 1 else [dataclasses.replace(g, query_id=f"s{one}:{g.query_id}") for g in found]
    cfg = config or ComparatorConfig()
    n_chosen = sum(len(c) for c in chosen_of.values())
    subset = "" if query_ids is None else f", {n_chosen} of {total} queries"
    side = "" if sources == "all" else f" sources {sources}"
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    result = train_comparator(groups, cfg, progress=say, source=f"vsc {size} {which}{side}{subset}: engine candidates "
                              f"(top {params.rerank_candidates}) of {len(groups)} queries")
    target = Path(out) if out is not None else default_path()
    queries = None if query_ids is None else (chosen_of[seeds[0]] if len(seeds) == 1 else
                                              {str(s): c for s, c in chosen_of.items()})
    return export_comparator(result, target, extra={"data": {
        "benchmark": "vsc", "size": size, "seed": seeds[0] if len(seeds) == 1 else seeds, "sources": sources,
        "params": dataclasses.asdict(params), "queries": queries}})
