"""vidsearch: content-based video retrieval.

Find, from a clip, a frame or an image, every indexed video that contains it or looks like it,
with the matching time ranges.
"""

from __future__ import annotations

import os


def _openblas_coretype() -> str | None:
    """The OpenBLAS kernels this CPU can run: SkylakeX with AVX-512 (F, BW, DQ, VL), Haswell with
    AVX2 and FMA, else None (OpenBLAS's own choice). Forcing SkylakeX on a CPU without AVX-512
    (e.g. AMD EPYC Zen 3) kills the process with an illegal instruction at the first FAISS call."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return None
    flags = set(line.partition(":")[2].split())
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


# faiss-cpu's bundled OpenBLAS mistakes this class of CPU for "Prescott" (SSE3 kernels); SkylakeX
# kernels make batch exact search ~6x faster. It must be set before FAISS loads; a user's value wins.
if "OPENBLAS_CORETYPE" not in os.environ and (_coretype := _openblas_coretype()):
    os.environ["OPENBLAS_CORETYPE"] = _coretype

# gRPC (pymilvus's client, milvus-lite) 1.80 and newer re-runs its poller in a forked child when fork support
# is on, and the child can die before exec() (grpc/grpc#43055): a Spark session (PySpark starts Java by
# Popen with preexec_fn) or any subprocess started while a Milvus channel is busy then fails now and then
# ("Java gateway process exited"). vidsearch never uses gRPC in a forked child, so fork support is off
# unless the user says otherwise. Read by gRPC at its import: set before it loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"

from vidsearch.config import (  # noqa: E402
    Aggregator,
    CollectionConfig,
    DecodeConfig,
    EncodeConfig,
    IndexConfig,
    IndexKind,
    Quantizer,
    SegmentConfig,
)
from vidsearch.errors import (  # noqa: E402
    AlignmentError,
    CollectionError,
    CollectionLockedError,
    ConfigError,
    DecodeError,
    EncoderError,
    NotFittedError,
    NotFoundError,
    OverloadedError,
    QueryError,
    ShapeError,
    VidsearchError,
)

__all__ = [
    "Aggregator",
    "AlignmentError",
    "Collection",
    "CollectionConfig",
    "CollectionError",
    "CollectionLockedError",
    "ConfigError",
    "DecodeConfig",
    "DecodeError",
    "EncodeConfig",
    "EncoderError",
    "IndexConfig",
    "IndexKind",
    "NotFittedError",
    "NotFoundError",
    "OverloadedError",
    "QueryError",
    "Quantizer",
    "SearchParams",
    "SearchResult",
    "SegmentConfig",
    "ShapeError",
    "VidsearchError",
    "__version__",
]


def __getattr__(name: str):  # lazy: `import vidsearch` stays fast for the CLI
    if name == "Collection":
        from vidsearch.collection import Collection

        return Collection
    if name in ("SearchParams", "SearchResult"):
        from vidsearch.search import results

        return getattr(results, name)
    raise AttributeError(f"module 'vidsearch' has no attribute {name!r}")
