"""Search parameters (per call) and typed results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vidsearch.encode import registry
from vidsearch.errors import QueryError


RERANK_MODES = ("none", "exact", "par", "dtw", "bidtw", "tn", "learned")


@dataclass(frozen=True)
class SearchParams:
    """Search-time parameters, passed per call (never stored in the collection).

    Attributes:
        segment_k: nearest reference segments fetched per query segment before voting.
        min_similarity: segment hits below this cosine similarity do not vote.
        max_matches: matched time ranges reported per video at most.
        nprobe: IVF lists scanned (compressed index only).
        rerank_depth: segment candidates re-scored exactly from the stored vectors (compressed
            index only); at least ``segment_k`` are re-scored, except that 0 turns exact re-scoring
            off: hits are then scored by the compressed codes alone (to measure the codes).
        ef_search: breadth of the HNSW search over the IVF centroids (compressed index only).
        rerank: how the top ``rerank_candidates`` videos from voting are re-ranked: ``none``
            (voting score), ``exact`` (every query segment against every segment of the video),
            ``par`` (exact, then keep only videos whose score exceeds ``par_threshold``),
            ``dtw`` (subsequence DTW of the segment sequences) or ``bidtw`` (the same, also trying
            the query reversed: finds reversed playback). dtw/bidtw also localise from the path.
            ``learned``: the learned sequence comparator (:mod:`vidsearch.search.comparator`, ViSiL-style:
            a small CNN over each candidate's segment similarity matrix) scores the video and each of its
            voted ranges; needs a trained model (``comparator``).
        rerank_candidates: videos from voting that the re-ranker looks at.
        par_threshold: cosine threshold of ``par`` (and of ``min_score`` filtering for dtw/bidtw);
            None uses the collection's calibrated value (see ``Collection.calibrate``).
        crops: also search with five crops of every query frame (four corners and the centre,
            55 % of each side; each query segment keeps its best hits over the whole frame and the
            crops): finds a video shown inside another (picture-in-picture). 6x the query's
            encoding time; file queries only.
        insets: also search the insets found in the query's frames (picture-in-picture, split
            screens: :mod:`vidsearch.encode.layout`); only frames with an inset cost more encoding
            (about a third more on the VSC-style benchmark's queries); file queries only.
        norm_beta: score normalisation (CSLS-style, as VSC 2022's baseline): every hit's similarity
            minus ``norm_beta`` times its query segment's background similarity, the similarity of
            that segment's ``norm_rank``-th nearest reference segment (what an unrelated segment
            scores against it), no lower than 0; 0 turns it off. The raw similarity still decides which
            hits vote (``min_similarity``) and which query segments a matched range spans.
        norm_rank: the rank (1-based) of the background neighbour (the last one fetched when
            ``segment_k`` is smaller).
        comparator: the ONNX file of the learned comparator ``rerank="learned"`` runs; None: the default
            model (``$VIDSEARCH_COMPARATOR``, else ``$VIDSEARCH_CACHE/models/comparator.onnx``; see
            :func:`vidsearch.search.comparator.default_path`).
        query_encoder: encode file queries with this encoder instead of the collection's; it must be one whose
            vectors live in the collection encoder's space (``EncoderSpec.queries_for``: ``sscd-distilled``
            for ``sscd`` collections, 2x faster at -0.1 point of segment micro-AP on the VSC-style benchmark).
            The result says so (``query_encoder`` in its JSON). Stored-range queries are not encoded.
        Insets and normalisation are on by default: together they measured best on the VSC-style
        benchmark (docs/RESULTS.md section 11). Normalised, a score is no longer ~1 for an exact copy (1
        minus ``norm_beta`` times its background) and a video with many look-alike segments in the
        collection (a long static shot, dozens of duplicates) scores lower than its raw similarity;
        ``norm_beta=0`` gives raw cosines.
    """

    segment_k: int = 100
    min_similarity: float = 0.0
    max_matches: int = 5
    nprobe: int = 16
    rerank_depth: int = 128
    ef_search: int = 64
    rerank: str = "none"
    rerank_candidates: int = 20
    par_threshold: float | None = None
    crops: bool = False
    insets: bool = True
    norm_beta: float = 0.5
    norm_rank: int = 30
    comparator: str | None = None
    query_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.segment_k < 1:
            raise QueryError(f"segment_k must be >= 1, got {self.segment_k}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise QueryError(f"min_similarity is a cosine in [-1, 1], got {self.min_similarity}")
        if self.nprobe < 1 or self.rerank_depth < 0 or self.ef_search < 1:
            raise QueryError(f"nprobe and ef_search must be >= 1 and rerank_depth >= 0, "
                             f"got {self.nprobe}, {self.ef_search}, {self.rerank_depth}")
        if self.rerank not in RERANK_MODES:
            raise QueryError(f"rerank must be one of {', '.join(RERANK_MODES)}, got {self.rerank!r}")
        if self.rerank_candidates < 1:
            raise QueryError(f"rerank_candidates must be >= 1, got {self.rerank_candidates}")
        if self.max_matches < 1:
            raise QueryError(f"max_matches must be >= 1, got {self.max_matches}")
        if self.query_encoder is not None and self.query_encoder not in registry.ENCODERS:
            raise QueryError(f"query_encoder must be one of {', '.join(registry.ENCODERS)}, got {self.query_encoder!r}")
        if not 0.0 <= self.norm_beta <= 2.0 or self.norm_rank < 1:
            raise QueryError(f"norm_beta must be in [0, 2] and norm_rank >= 1, got {self.norm_beta} and {self.norm_rank}")


# Match and VideoHit are NamedTuples, not frozen dataclasses: as immutable, and a third of the cost to
# make (0.37 against 1.0 us each; a 10-video answer makes ~20 of them, which was a tenth of a 1M-segment
# search's engine overhead over its index).
class Match(NamedTuple):
    """Query seconds [query_start, query_end) match reference seconds [ref_start, ref_end)."""

    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


_MATCH_KEYS = Match._fields  # a match's JSON keys, in its fields' order (``_asdict`` per match took 2x as long)


class VideoHit(NamedTuple):
    """One ranked video. ``score`` is the mean over the query's segments of their best similarity along
    the best temporal alignment: normalised by default (``SearchParams.norm_beta``), the raw cosine with
    ``norm_beta=0`` (1.0: every query segment matched exactly)."""

    rank: int
    video_id: str
    path: str
    score: float
    matches: list[Match]


@dataclass
class SearchResult:
    """The ranked videos for one query, and where the time went (milliseconds)."""

    query: str
    k: int
    results: list[VideoHit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank_ms: float = 0.0  # the re-ranker's share of timings_ms["search"]
    query_encoder: str | None = None  # set when a file query was encoded by another encoder than the collection's

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape of ``vidsearch search --json``."""
        return {
            "query": self.query,
            "k": self.k,
            "results": [
                {
                    "rank": r.rank,
                    "video_id": r.video_id,
                    "path": r.path,
                    "score": round(float(r.score), 6),
                    "matches": [dict(zip(_MATCH_KEYS, [round(float(v), 3) for v in m])) for m in r.matches],
                }
                for r in self.results
            ],
            "timings_ms": {k: round(float(self.timings_ms.get(k, 0.0)), 3) for k in ("decode", "encode", "search", "total")},
            **({"query_encoder": self.query_encoder} if self.query_encoder else {}),
        }
