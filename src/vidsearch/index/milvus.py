"""Segment vectors in Milvus (issue #17): Milvus Lite (a local ``.db`` file, one process at a time) or a Milvus
server or cluster, through pymilvus's ``MilvusClient``. It implements the same ``VectorIndex`` protocol as the
FAISS indexes (add, remove, search, save, load), so the collection's catalogue, voting and re-rank stay the same:
Milvus holds each segment's vector with its row id (the primary key), its video and its times, and answers the
nearest segments; the engine votes them into videos as it does FAISS's hits.

Where: ``uri`` is ``milvus:PATH.db`` (Milvus Lite; a relative path is taken from the collection folder) or
``milvus://HOST:PORT`` (a server; ``token`` for its authentication, or the ``MILVUS_TOKEN`` environment variable,
never written to the manifest). What: ``index_type`` per deployment (Milvus Lite has no PQ indexes: ``HNSW``,
``IVF_FLAT`` or ``IVF_SQ8`` there; ``IVF_PQ`` on a server), inner-product metric; search-time parameters are
passed on every search (``ef`` for HNSW from ``ef_search``, ``nprobe`` for IVF), and
tests/index/test_milvus.py checks that they take effect (recall moves with them).

The saved index file (``index-*.faiss``, the collection's usual name) holds only where the vectors are (the
container header: uri, collection, index type, dim, count), so ``load`` reconnects instead of reading vectors.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import MILVUS_INDEX_TYPES as INDEX_TYPES
from vidsearch.errors import CollectionError, ConfigError, ShapeError
from vidsearch.index.hits import IndexHits, empty_hits
from vidsearch.index.persist import field, write_index_file

__all__ = ["MilvusIndex", "INDEX_TYPES", "LITE_INDEX_TYPES", "parse_uri"]

LITE_INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT")
INSERT_BATCH = 5_000  # rows per insert call (pymilvus sends each batch as one gRPC message)


def parse_uri(uri: str, base: Path | None = None) -> tuple[str, bool]:
    """``milvus:PATH.db`` -> (the Lite file, True); ``milvus://HOST:PORT`` -> (``http://HOST:PORT``, False).

    Raises:
        ConfigError: anything else.
    """
    if uri.startswith("milvus://"):
        hostport = uri[len("milvus://"):]
        if not hostport or "/" in hostport.rstrip("/"):
            raise ConfigError(f"a Milvus server is given as milvus://HOST:PORT, got {uri!r}")
        return f"http://{hostport.rstrip('/')}", False
    if uri.startswith("milvus:"):
        path = Path(uri[len("milvus:"):])
        if path.suffix != ".db":
            raise ConfigError(f"a Milvus Lite store is a .db file (milvus:PATH.db), got {uri!r}")
        if not path.is_absolute() and base is not None:
            path = base / path
        return str(path), True
    raise ConfigError(f"expected milvus:PATH.db (Milvus Lite) or milvus://HOST:PORT (a server), got {uri!r}")


# Milvus Lite runs its server in this process, one per .db file, until released; indexes on one file share it.
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def _lite_release(path: str) -> None:
    """One user of a Lite file fewer; the last one stops its server, so another process can open the file."""
    with _LITE_LOCK:
        _LITE_USERS[path] = _LITE_USERS.get(path, 1) - 1
        if _LITE_USERS[path] > 0:
            return
        del _LITE_USERS[path]
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)


GRPC_OPTIONS = {"grpc.keepalive_time_ms": 330_000, "grpc.keepalive_permit_without_calls": False}
"""gRPC channel options of every Milvus connection (a server, or the loopback server of a Lite file). pymilvus 3
sends a keepalive ping every 10 s, even with no call running; a gRPC server with the library's defaults (``milvus-lite server`` is one) accepts one ping in 5 minutes
while no data flows and, after two early ones, closes the connection with GOAWAY "too_many_pings": calls on it then
fail (UNAVAILABLE, "Too many pings"), as one CI run's test did on the server the tests share. A client idle for
70 s did not reproduce it; a Milvus Lite file did, during a 1M-vector HNSW build (bench/ann.py, 2026-12-01: GOAWAY
"too_many_pings" at the 10 s keepalive): a long call during which no data flows. These options:
no pings without a call, and at most one in 5.5 minutes. Our server connections are dedicated: pymilvus would
otherwise reuse whichever client's connection to the address came first, options and all."""


def _client(uri: str, base: Path | None, token: str | None) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise ConfigError("a Milvus store needs pymilvus (and milvus-lite for a .db file): "
                          "pip install 'vidsearch[milvus]'") from exc
    target, lite = parse_uri(uri, base)
    try:
        if lite:
            client = MilvusClient(target, grpc_options=GRPC_OPTIONS)  # Lite serves it over loopback gRPC too
            with _LITE_LOCK:
                _LITE_USERS[os.path.abspath(target)] = _LITE_USERS.get(os.path.abspath(target), 0) + 1
            return client
        return MilvusClient(uri=target, token=token or os.environ.get("MILVUS_TOKEN", ""), grpc_options=GRPC_OPTIONS,
                            dedicated=True)  # pymilvus shares one connection per address and token, whoever made it
    except Exception as exc:  # pymilvus raises its own exceptions (and OSError) on a busy or missing store
        who = ("another process may have this Milvus Lite file open (Lite serves one process at a time: stop it, "
               "or use a Milvus server, milvus://HOST:PORT)" if lite else "check that the server runs and the token")
        raise CollectionError(f"cannot open the Milvus store {uri}: {type(exc).__name__}: {exc}; {who}") from exc


class MilvusIndex:
    """Segment vectors in a Milvus collection (module docstring).

    Args:
        dim: vector width.
        uri: ``milvus:PATH.db`` or ``milvus://HOST:PORT``.
        collection: the Milvus collection's name.
        index_type: one of :data:`INDEX_TYPES` (:data:`LITE_INDEX_TYPES` on Milvus Lite).
        base: the folder a relative Lite path is taken from (the collection's).
        token: a server's token (else ``MILVUS_TOKEN``).
        build_params: the index's build parameters (default: HNSW M 16, efConstruction 200; IVF nlist
            about 4 sqrt(N) for N = 1M, 4096; IVF_PQ m = dim / 16).
    """

    kind = "milvus"

    DEFAULT_COLLECTION = "vidsearch_segments"
    """The Milvus collection of a store whose manifest names none (made before collections named their own)."""

    def __init__(self, dim: int, uri: str, collection: str = DEFAULT_COLLECTION, index_type: str = "HNSW",
                 base: Path | None = None, token: str | None = None,
                 build_params: dict[str, Any] | None = None, _create: bool = True) -> None:
        index_type = index_type.upper()
        if index_type not in INDEX_TYPES:
            raise ConfigError(f"Milvus index type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
        _, lite = parse_uri(uri, base)
        if lite and index_type not in LITE_INDEX_TYPES:
            raise ConfigError(f"Milvus Lite has no {index_type} index (one of {', '.join(LITE_INDEX_TYPES)}); "
                              "use a Milvus server (milvus://HOST:PORT) for IVF_PQ")
        self.dim, self.uri, self.collection, self.index_type, self.base = dim, uri, collection, index_type, base
        self.info: dict[str, Any] = {}
        self._client = _client(uri, base, token)
        self._count = 0
        # Searches return ids below this bound only (None: all). A loaded index is a live view of Milvus, which may
        # already hold rows its writer added after the saved file: the engine scans those exactly (its "tail"),
        # so Milvus must not return them too.
        self._bound: int | None = None
        if _create:
            self._create(build_params)
        else:
            self._count = int(self._client.get_collection_stats(collection).get("row_count", 0))
        self._load(time.monotonic() + 60.0)

    def _create(self, build_params: dict[str, Any] | None) -> None:
        from pymilvus import DataType, MilvusClient

        c = self._client
        if c.has_collection(self.collection):
            c.drop_collection(self.collection)  # a rebuild replaces the collection's vectors
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)  # the segment's row in the collection
        schema.add_field("video", DataType.INT64)  # its video (the catalogue's number), for deletes and grouping
        schema.add_field("start", DataType.FLOAT)
        schema.add_field("end", DataType.FLOAT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        defaults = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024}, "IVF_SQ8": {"nlist": 1024},
                    "IVF_PQ": {"nlist": 1024, "m": max(1, self.dim // 16), "nbits": 8}, "FLAT": {}}
        params = c.prepare_index_params()
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP",
                         params=build_params if build_params is not None else defaults[self.index_type])
        c.create_collection(self.collection, schema=schema, index_params=params)

    def __len__(self) -> int:
        return self._count

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32], video: NDArray[np.int64] | None = None,
            start: NDArray[np.float64] | None = None, end: NDArray[np.float64] | None = None) -> None:
        """Insert rows (``video``, ``start``, ``end``: the segments' video number and times, -1/0 when not given)."""
        x = np.ascontiguousarray(vectors, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim or len(ids) != len(x):
            raise ShapeError(f"expected (N, {self.dim}) vectors and N ids, got {x.shape} and {len(ids)}")
        n = len(x)
        vid = np.full(n, -1, np.int64) if video is None else np.asarray(video, np.int64)
        t0 = np.zeros(n) if start is None else np.asarray(start, np.float64)
        t1 = np.zeros(n) if end is None else np.asarray(end, np.float64)
        for a in range(0, n, INSERT_BATCH):
            b = min(n, a + INSERT_BATCH)
            rows = [{"id": int(i), "video": int(v), "start": float(s), "end": float(e), "vector": row}
                    for i, v, s, e, row in zip(ids[a:b].tolist(), vid[a:b].tolist(), t0[a:b].tolist(),
                                               t1[a:b].tolist(), x[a:b].tolist())]
            # upsert: a row added again (a writer resuming after a crash) replaces itself instead of doubling
            self._client.upsert(self.collection, rows)
        self._count += n
        if self._bound is not None and n:
            self._bound = max(self._bound, int(np.max(ids)) + 1)

    def remove(self, ids: NDArray[np.int64]) -> int:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return 0
        return self._deleted(self._client.delete(self.collection, ids=ids.tolist()))

    def remove_video(self, video: int) -> int:
        """Delete a video's segments by its number (the ``video`` field)."""
        return self._deleted(self._client.delete(self.collection, filter=f"video == {int(video)}"))

    def _deleted(self, res: Any) -> int:
        # pymilvus answers a delete with {"delete_count": n} or with the list of deleted keys, by version
        removed = int(res.get("delete_count", 0)) if isinstance(res, dict) else len(res)
        self._count = max(0, self._count - removed)
        return removed

    def search_params(self, nprobe: int, ef_search: int) -> dict[str, Any]:
        """The search parameters Milvus gets for these knobs (HNSW: ``ef``; IVF: ``nprobe``)."""
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": int(ef_search)}}
        if self.index_type.startswith("IVF"):
            return {"metric_type": "IP", "params": {"nprobe": int(nprobe)}}
        return {"metric_type": "IP", "params": {}}

    def search(self, queries: NDArray[np.float32], k: int, params: Any = None) -> IndexHits:
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ShapeError(f"expected (Q, {self.dim}) queries, got {q.shape}")
        if len(q) == 0 or self._count == 0:
            return empty_hits(len(q), max(1, k))
        nprobe = int(getattr(params, "nprobe", 16))
        ef = max(int(getattr(params, "ef_search", 64)), k)  # HNSW needs ef >= k
        # output_fields=["id"]: without it Milvus Lite 3.2 sends every hit's vector back and pymilvus decodes
        # each on access (180 queries x 82 hits x 512-d: 3.6 s a search, against 1.4 s with the key only).
        # The hits' ``ids`` / ``distances`` lists are read whole, not hit by hit (that materializes them).
        res = self._client.search(self.collection, data=q.tolist(), limit=int(k), output_fields=["id"],
                                  search_params=self.search_params(nprobe, ef),
                                  filter="" if self._bound is None else f"id < {self._bound}")
        ids = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        for i, hits in enumerate(res):
            n = min(k, len(hits.ids))
            if n:
                ids[i, :n] = np.asarray(hits.ids[:n], np.int64)
                scores[i, :n] = np.asarray(hits.distances[:n], np.float32)
        return IndexHits(ids, scores)

    def memory_bytes(self) -> int:
        """Milvus holds the vectors in its own process: the Lite file's size, else unknown (0)."""
        target, lite = parse_uri(self.uri, self.base)
        return os.path.getsize(target) if lite and os.path.exists(target) else 0

    def wait_indexed(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Flush and wait until Milvus has indexed every row (it builds indexes in the background; rows not
        indexed yet are searched exhaustively, where no search parameter applies).

        Raises:
            CollectionError: not indexed within ``timeout_s``.
        """
        self._client.flush(self.collection)
        deadline = time.monotonic() + timeout_s
        while True:
            state = dict(self._client.describe_index(self.collection, "vector"))
            if int(state.get("pending_index_rows", 0)) == 0 and \
                    int(state.get("indexed_rows", 0)) >= int(state.get("total_rows", 0)):
                # the query node may still serve the rows from unindexed (growing) segments: load them again
                # (refresh_load hangs on Milvus Lite 3.2.2; a release and load takes ~0.1 s there)
                self._client.release_collection(self.collection)
                self._load(deadline)
                return state
            if time.monotonic() > deadline:
                raise CollectionError(f"Milvus has not indexed {self.collection} within {timeout_s:.0f} s: {state}")
            time.sleep(0.1)

    def _load(self, deadline: float) -> None:
        """Load the collection, retrying until ``deadline``: the milvus-lite 3.2.2 server reports an index built
        while its file is still being written, and a load then fails with a short read ("read error in
        ...hnsw.idx: 164014 != 167936 (Resource temporarily unavailable)", seen once in CI); a retry after the
        writer finishes succeeds.

        Raises:
            CollectionError: the load still fails at ``deadline``.
        """
        while True:
            try:
                self._client.load_collection(self.collection)
                return
            except Exception as exc:  # noqa: BLE001 - pymilvus raises its own MilvusException; re-raised below
                if time.monotonic() > deadline:
                    raise CollectionError(f"Milvus could not load {self.collection} ({exc}); check the Milvus "
                                          "server's log and retry") from exc
                time.sleep(0.5)

    def save(self, path: Path) -> None:
        """Milvus persists the vectors itself (flushed and indexed here); the file records where they are."""
        self.wait_indexed()
        write_index_file(path, self.kind, {"dim": self.dim, "uri": self.uri, "collection": self.collection,
                                           "index_type": self.index_type, "count": self._count, "info": self.info},
                         b"")

    @classmethod
    def from_container(cls, path: Path, meta: dict[str, Any], blob: Any, base: Path | None = None) -> "MilvusIndex":
        index = cls(field(path, meta, "dim", int), field(path, meta, "uri", str),
                    field(path, meta, "collection", str), field(path, meta, "index_type", str),
                    base=base if base is not None else path.parent, _create=False)
        index.info = field(path, meta, "info", dict, {})
        covered = index.info.get("segment_rows")
        index._bound = covered if isinstance(covered, int) and not isinstance(covered, bool) else None
        return index

    def close(self) -> None:
        """Close the connection (idempotent); the last index on a Lite file also stops its in-process server."""
        if self._client is None:
            return
        self._client.close()
        self._client = None
        target, lite = parse_uri(self.uri, self.base)
        if lite:
            _lite_release(os.path.abspath(target))
