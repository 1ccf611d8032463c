"""search: query encoding, segment-hit voting into videos, matched time ranges."""

from vidsearch.search.results import Match, SearchParams, SearchResult, VideoHit

__all__ = ["Match", "SearchParams", "SearchResult", "VideoHit"]
