"""Search parameters (per call) and typed results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vidsearch.errors import QueryError


@dataclass(frozen=True)
class SearchParams:
    """Search-time parameters, passed per call (never stored in the collection).

    Attributes:
        segment_k: nearest reference segments fetched per query segment before voting.
        min_similarity: segment hits below this cosine similarity do not vote.
        max_matches: matched time ranges reported per video at most.
        nprobe: IVF lists scanned (compressed index only).
        rerank: candidates re-scored exactly from the stored vectors (compressed index only);
            at least ``segment_k`` are always re-ranked.
        ef_search: breadth of the HNSW search over the IVF centroids (compressed index only).
    """

    segment_k: int = 100
    min_similarity: float = 0.0
    max_matches: int = 5
    nprobe: int = 16
    rerank: int = 128
    ef_search: int = 64

    def __post_init__(self) -> None:
        if self.segment_k < 1:
            raise QueryError(f"segment_k must be >= 1, got {self.segment_k}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise QueryError(f"min_similarity is a cosine in [-1, 1], got {self.min_similarity}")
        if self.nprobe < 1 or self.rerank < 0 or self.ef_search < 1:
            raise QueryError(f"nprobe and ef_search must be >= 1 and rerank >= 0, got {self.nprobe}, {self.ef_search}, {self.rerank}")
        if self.max_matches < 1:
            raise QueryError(f"max_matches must be >= 1, got {self.max_matches}")


@dataclass(frozen=True)
class Match:
    """Query seconds [query_start, query_end) match reference seconds [ref_start, ref_end)."""

    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


@dataclass(frozen=True)
class VideoHit:
    """One ranked video. ``score`` is the mean best-segment cosine over the query's segments
    along the best temporal alignment (1.0: every query segment matched exactly)."""

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
                    "matches": [{k: round(float(v), 3) for k, v in asdict(m).items()} for m in r.matches],
                }
                for r in self.results
            ],
            "timings_ms": {k: round(float(self.timings_ms.get(k, 0.0)), 3) for k in ("decode", "encode", "search", "total")},
        }
