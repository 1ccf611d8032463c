"""vidsearch: content-based video retrieval.

Find, from a clip, a frame or an image, every indexed video that contains it or looks like it,
with the matching time ranges.
"""

from __future__ import annotations

import os

# faiss-cpu's bundled OpenBLAS mistakes this class of CPU for "Prescott" (SSE3 kernels); SkylakeX
# kernels make batch exact search ~6x faster. It must be set before FAISS loads; a user's value wins.
os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")

__version__ = "0.1.0"

from vidsearch.config import CollectionConfig, DecodeConfig, EncodeConfig, IndexConfig, SegmentConfig  # noqa: E402
from vidsearch.errors import (  # noqa: E402
    CollectionError,
    CollectionLockedError,
    DecodeError,
    EncoderError,
    NotFoundError,
    QueryError,
    VidsearchError,
)

__all__ = [
    "Collection",
    "CollectionConfig",
    "CollectionError",
    "CollectionLockedError",
    "DecodeConfig",
    "DecodeError",
    "EncodeConfig",
    "EncoderError",
    "IndexConfig",
    "NotFoundError",
    "QueryError",
    "SearchParams",
    "SearchResult",
    "SegmentConfig",
    "VidsearchError",
    "__version__",
]


def __getattr__(name: str):  # lazy: `import vidsearch` stays fast for the CLI
    if name == "Collection":
        from vidsearch.store.collection import Collection

        return Collection
    if name in ("SearchParams", "SearchResult"):
        from vidsearch.search import results

        return getattr(results, name)
    raise AttributeError(f"module 'vidsearch' has no attribute {name!r}")
