"""Pydantic models of the answers the OpenAPI schema documents (``/openapi.json``, ``/docs``).

They describe; they do not serialise: ``POST /search`` answers with the bytes the search worker made from
``SearchResult.to_dict()`` (FastAPI's ``jsonable_encoder`` walking the result was a large share of a
stored-range query's time on the event loop).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class MatchModel(BaseModel):
    """Query seconds [query_start, query_end) match reference seconds [ref_start, ref_end)."""

    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


class VideoHitModel(BaseModel):
    """One ranked video."""

    rank: int = Field(description="1 for the best")
    video_id: str
    path: str
    score: float = Field(description="mean best-segment cosine along the best temporal alignment (1: exact)")
    matches: list[MatchModel]


class TimingsModel(BaseModel):
    """Milliseconds per stage; ``total`` includes the server's queue waits."""

    decode: float
    encode: float
    search: float
    total: float


class SearchResponse(BaseModel):
    """The answer of ``POST /search``: exactly the JSON of ``vidsearch search --json``."""

    query: str = Field(description="the uploaded file's name, or the ref")
    k: int
    results: list[VideoHitModel]
    timings_ms: TimingsModel
    query_encoder: str | None = Field(default=None, description="present when the query was encoded by another "
                                      "encoder than the collection's (the query_encoder field)")


__all__ = ["MatchModel", "SearchResponse", "TimingsModel", "VideoHitModel"]
