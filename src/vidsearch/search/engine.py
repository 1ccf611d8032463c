"""``Engine``: the one query path. The CLI, ``vidsearch eval``, the demo, the benchmarks (and later the
server) search through it.

An engine holds one immutable :class:`Snapshot` per catalogue generation: the segment table as
arrays, memory maps of the committed vector rows, the index the writer last saved, and the list
of videos. Searches read whichever snapshot is current (a reference taken once per call), so any
number of threads can search while :meth:`Engine.refresh` builds the next snapshot and swaps it in.

Readers never train and never write. The writer saves an index at (almost) every commit
(``vidsearch.collection``); a reader whose newest index file is older than the catalogue searches
it *and* scans the rows committed since exactly (:class:`~vidsearch.index.exact.ExactScan`); a
reader with no usable index file (missing, damaged) scans every row exactly. Results are then
those of exact search on what the index does not cover; ``index_info()["state"]`` says which.
"""

from __future__ import annotations

import functools
import math
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import CollectionConfig
from vidsearch.decode import MediaInfo
from vidsearch.errors import CollectionError, NotFoundError, QueryError, VidsearchError
from vidsearch.index import ExactScan, IndexHits, IVFPQConfig, IVFPQIndex, IVFSearchParams, MemmapStore, load_index
from vidsearch.index.hits import merge_hits
from vidsearch.encode import registry
from vidsearch.search.rerank import rerank
from vidsearch.search.results import SearchParams, SearchResult, VideoHit
from vidsearch.search.vote import SegmentTable, vote
from vidsearch.store import catalog
from vidsearch.store.catalog import CatalogSnapshot
from vidsearch.store.files import path_text
from vidsearch.store.manifest import index_files, read_manifest, read_search_defaults
from vidsearch.store.vectors import open_checked

if TYPE_CHECKING:  # imported when a query is encoded (it loads the frame model's runtime)
    from vidsearch.encode.pipeline import EncodedMedia, MediaEncoder

log = logging.getLogger(__name__)

REF_QUERY = re.compile(r"^(?P<video>[0-9a-f]{4,64})@(?P<start>\d+(?:\.\d+)?)-(?P<end>\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class RefQuery:
    """``VIDEO_ID@START-END``: seconds START to END of an indexed video."""

    video: str
    start: float
    end: float


def parse_ref(query: str) -> RefQuery | None:
    """The parts of a ``VIDEO_ID@START-END`` query (None when ``query`` has another form).

    Raises:
        QueryError: END is not after START.
    """
    m = REF_QUERY.match(query)
    if m is None:
        return None
    ref = RefQuery(m.group("video"), float(m.group("start")), float(m.group("end")))
    if ref.end <= ref.start:
        raise QueryError(f"query {query!r}: END must be after START (seconds), got {ref.start}-{ref.end}")
    return ref


def stored_segmenter(config: CollectionConfig, frame_dim: int) -> MediaEncoder:
    """A ``MediaEncoder`` that only cuts and aggregates frames already encoded (stored frame vectors,
    imported vectors): it loads no frame model."""
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.encode.streams import stream_dim

    class _NoFrameModel:
        name = config.encode.encoder
        dim = frame_dim - stream_dim(config.encode)  # the stored vectors hold the streams already
        input_size = (0, 0)

        def encode(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
            raise NotImplementedError("stored_segmenter has no frame model: it cuts and aggregates stored frame vectors")

    return MediaEncoder(config, encoder=_NoFrameModel())


@dataclass
class Snapshot:
    """What one catalogue generation looks like to a reader. Never changed after it is built
    (``_by_video`` is filled once, on first use, under a lock)."""

    catalog: CatalogSnapshot
    table: SegmentTable
    segments: NDArray[np.float32]  # (segment_rows, d) memory map
    frames: NDArray[np.float16]  # (frame_rows, d) memory map
    index: Any  # VectorIndex or ExactScan (rows [0, covered))
    covered: int  # rows the index covers; rows past it are scanned exactly (``tail``)
    tail: ExactScan | None
    state: str  # "current" | "stale" | "exact"
    reason: str
    index_generation: int | None
    paths: dict[str, str]
    defaults: dict[str, Any]
    _by_video: tuple[NDArray[np.int64], NDArray[np.int64]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def generation(self) -> int:
        return self.catalog.generation

    @functools.cached_property
    def position(self) -> dict[str, int]:
        """Video id -> its position in ``catalog.video_ids`` (built once per snapshot, on first use)."""
        return {v: i for i, v in enumerate(self.catalog.video_ids)}

    def video_segment_ids(self, video: int) -> NDArray[np.int64]:
        """Live segment ids of the video at ``video`` (position in ``catalog.video_ids``), in time order."""
        with self._lock:
            if self._by_video is None:
                live = np.flatnonzero(self.table.video >= 0)
                order = live[np.lexsort((self.table.start[live], self.table.video[live]))]
                bounds = np.searchsorted(self.table.video[order], np.arange(len(self.table.video_ids) + 1))
                self._by_video = (order, bounds)
        order, bounds = self._by_video
        return order[bounds[video] : bounds[video + 1]]


def row_background(scores: NDArray[np.float32], rank: int) -> NDArray[np.float32]:
    """(Q, K) hit similarities, sorted best first per row -> (Q,) each row's background: its ``rank``-th
    similarity, the last real one when a row has fewer hits (padding is -inf, at the end), 0 with none."""
    if scores.shape[1] == 0:
        return np.zeros(scores.shape[0], np.float32)
    background = scores[:, min(rank, scores.shape[1]) - 1].astype(np.float32)
    short = ~np.isfinite(background)  # rows with fewer real hits than the rank (padding is at the end)
    for i in np.flatnonzero(short):
        real = scores[i][np.isfinite(scores[i])]
        background[i] = real[-1] if len(real) else 0.0
    return background


def normalized_scores(scores: NDArray[np.float32], rank: int, beta: float) -> NDArray[np.float32]:
    """(Q, K) hit similarities, sorted best first per row, minus ``beta`` times each row's background: its
    ``rank``-th similarity (the last real one when a row has fewer hits; padding is -inf and stays so);
    no lower than 0 (a hit no better than the background adds nothing to a score).

    The query side of CSLS (as VSC 2022's SSCD baseline, which takes the background from a separate
    set of unrelated videos): a query segment that resembles everything (dark, blurred, a plain
    colour) loses what it resembles everything by; the rank-th neighbour stands for "unrelated"
    because a copy matches only a few segments of its source.
    """
    if scores.shape[1] == 0:
        return scores
    col = min(rank, scores.shape[1]) - 1
    if scores.shape[0] == 1 and math.isfinite(float(scores[0, -1])):  # one segment, no padding: two array operations
        return np.maximum(scores - np.float32(beta * float(scores[0, col])), np.float32(0.0))
    background = row_background(scores, rank)
    out = np.maximum(scores - np.float32(beta) * background[:, None], np.float32(0.0))
    if not np.isfinite(scores[:, -1]).all():
        out = np.where(np.isfinite(scores), out, scores)
    return out.astype(np.float32, copy=False)


class Engine:
    """Searches one collection directory; thread-safe; never writes to it.

    Args:
        path: the collection directory.
        refresh_seconds: ``search`` looks for a newer committed generation at most this often
            (0: before every search; ``refresh()`` adopts one at once).
    """

    def __init__(self, path: str | os.PathLike[str], refresh_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.config = CollectionConfig.from_dict(self.manifest["config"])
        self.refresh_seconds = refresh_seconds
        self._db = catalog.open_existing(self.path / "catalog.sqlite")
        self._db_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._media_encoder: MediaEncoder | None = None
        self._query_encoders: dict[str, MediaEncoder] = {}  # other encoders that may query this collection
        self._segmenter: MediaEncoder | None = None
        try:
            self._segment_file = open_checked(self.path / "segments.f32", self.manifest["dims"]["segment"], "float32")
            self._frame_file = open_checked(self.path / "frames.f16", self.manifest["dims"]["frame"], "float16")
            self._snap = self._build_snapshot()
        except BaseException:
            self._db.close()
            raise
        self._checked_at = time.monotonic()

    @classmethod
    def open(cls, path: str | os.PathLike[str], refresh_seconds: float = 1.0) -> "Engine":
        """Open the collection at ``path`` for searching (no lock: any number of engines may read)."""
        return cls(path, refresh_seconds)

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
        close = getattr(self._snap.index, "close", None) if self._snap is not None else None
        if close is not None:  # a Milvus store: Milvus Lite serves one process at a time
            close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ snapshots
    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (a reference: keep it for a consistent view across several calls)."""
        return self._snap

    @property
    def generation(self) -> int:
        return self._snap.generation

    def refresh(self) -> bool:
        """Adopt the newest committed generation (or a newer index file of this one); never blocks on the writer.

        Returns:
            True when a new snapshot was swapped in.
        """
        self._checked_at = time.monotonic()
        with self._db_lock:
            generation = catalog.meta(self._db)["generation"]
        current = self._snap
        if generation == current.generation and (
                current.state == "current" or not self._newer_index_exists(current)):
            return False
        with self._build_lock:  # one builder at a time; searches go on with the old snapshot meanwhile
            if self._snap is not current:
                return True
            snap = self._build_snapshot()
            with self._swap_lock:
                self._snap = snap
        return True

    def _newer_index_exists(self, snap: Snapshot) -> bool:
        return any(g <= snap.generation and (snap.index_generation is None or g > snap.index_generation)
                   for g, _ in index_files(self.path))

    def _maybe_refresh(self) -> Snapshot:
        if time.monotonic() - self._checked_at >= self.refresh_seconds:
            self.refresh()
        return self._snap

    def _build_snapshot(self) -> Snapshot:
        for attempt in range(3):
            snap = self._try_snapshot()
            if snap is not None:
                return snap
        # the writer kept replacing the index under us: search exactly this time, the next refresh retries
        return cast(Snapshot, self._try_snapshot(use_index=False))  # not None: only a vanished index file gives None

    def _try_snapshot(self, use_index: bool = True) -> Snapshot | None:
        with self._db_lock:
            cat = catalog.read_snapshot(self._db)  # also checks the vector files hold the rows it counts
        segments = self._segment_file.view(cat.segment_rows)
        frames = self._frame_file.view(cat.frame_rows)
        table = SegmentTable(cat.segment_video, cat.segment_start, cat.segment_end, cat.video_ids)
        index, covered, gen, reason = self._load_index(cat, segments) if use_index else (None, 0, None, "busy writer")
        if reason == "vanished":
            return None  # the writer published a newer index meanwhile: read the catalogue again
        live = cat.segment_video >= 0
        tail = None
        if covered < cat.segment_rows:
            tail = ExactScan(segments[covered:], first=covered, keep=live[covered:])
        state = "current" if covered == cat.segment_rows and gen == cat.generation else (
            "exact" if index is None else "stale")
        if index is None:
            covered = 0
        return Snapshot(cat, table, segments, frames, index, covered, tail, state, reason, gen,
                        dict(zip(cat.video_ids, cat.video_paths)), read_search_defaults(self.path))

    def _load_index(self, cat: CatalogSnapshot, segments: NDArray[np.float32]) -> tuple[Any, int, int | None, str]:
        """(index, rows it covers, its generation, why not current) of the newest usable index file."""
        store = MemmapStore(segments)
        reason = "no index file"
        for generation, path in index_files(self.path):
            if generation > cat.generation:
                continue  # saved after this snapshot's catalogue read: the next refresh takes it
            try:
                index = load_index(path, store)
            except VidsearchError as exc:
                if not path.exists():  # replaced by the writer between listing and reading
                    return None, 0, None, "vanished"
                log.warning("%s; searching the stored vectors exactly instead", exc)
                reason = f"{path.name} unusable: {exc}"
                continue
            covered = index.info.get("segment_rows")
            if covered is None and generation == cat.generation:
                covered = cat.segment_rows  # a file from before indexes recorded what they cover
            live_covered = None if not isinstance(covered, int) else int(np.count_nonzero(cat.segment_video[:covered] >= 0))
            if not isinstance(covered, int) or not 0 <= covered <= cat.segment_rows or index.dim != segments.shape[1] or (
                    generation == cat.generation and len(index) != live_covered):
                log.warning("%s does not match the catalogue; searching the stored vectors exactly instead", path)
                reason = f"{path.name} does not match the catalogue"
                continue
            return index, covered, generation, "" if covered == cat.segment_rows else f"{path.name} + exact scan of new rows"
        return None, 0, None, reason

    def index_info(self) -> dict[str, Any]:
        """Which index answers searches: ``state`` is ``current`` (the index covers every committed row),
        ``stale`` (the last saved index, plus an exact scan of the rows committed since) or ``exact``
        (no usable index file: every row is scanned exactly); with the index's size and layout."""
        snap = self._snap
        index = snap.index
        n = snap.catalog.segment_rows
        info: dict[str, Any] = {"state": snap.state, "reason": snap.reason or None, "generation": snap.generation,
                                "index_generation": snap.index_generation, "covered_rows": snap.covered,
                                "exact_rows": n - snap.covered}
        if index is None:
            return {**info, "kind": "exact-scan", "vectors": int(np.count_nonzero(snap.table.video >= 0)), "memory_bytes": 0}
        kind = "ivfpq" if isinstance(index, IVFPQIndex) else str(getattr(index, "kind", "flat"))
        info.update(kind=kind, vectors=len(index), memory_bytes=int(index.memory_bytes()))
        if isinstance(index, IVFPQIndex) and index._ivf is not None:
            wanted = IVFPQConfig(pq_m=index.config.pq_m, nbits=index.config.nbits,
                                 reduce=self.config.index.reduce).code_dim(index.dim)
            info.update(lists=int(index._ivf.nlist), dim=index.dim, code_dim=index.code_dim,
                        quantizer=index.config.quantizer, pq_bytes=index.config.pq_m * index.config.nbits // 8,
                        memory_bytes_per_vector=round(info["memory_bytes"] / max(len(index), 1), 1), advice=None)
            if index.code_dim != wanted:
                # e.g. a file from before the PCA projection: codes of the full vectors, slower (issue #4)
                info["advice"] = (f"the index codes {index.code_dim}-d vectors where this configuration asks for "
                                  f"{wanted}-d; run `vidsearch index --collection {self.path} --rebuild-index` to rebuild it")
        return info

    def search_defaults(self) -> dict[str, Any]:
        """Search-time defaults stored with the collection (``calibrate``), else the encoder's built-in ones."""
        stored = self._snap.defaults
        return {"par_threshold": stored.get("par_threshold", registry.get(self.config.encode.encoder).par_threshold),
                "calibrated": "par_threshold" in stored, **{k: v for k, v in stored.items() if k != "par_threshold"}}

    # ------------------------------------------------------------------ queries
    def _encoder(self) -> MediaEncoder:
        if self._media_encoder is None:
            from vidsearch.encode.pipeline import MediaEncoder

            self._media_encoder = MediaEncoder(self.config)
        return self._media_encoder

    def query_media_encoder(self, name: str | None) -> MediaEncoder:
        """The encoder of file queries: the collection's, or ``name`` when its vectors live in the collection
        encoder's space (``EncoderSpec.queries_for``).

        Raises:
            QueryError: ``name`` cannot query this collection.
        """
        own = self.config.encode.encoder
        if name is None or name == own:
            return self._encoder()
        if name not in self._query_encoders:
            import dataclasses

            from vidsearch.encode.pipeline import MediaEncoder

            spec = registry.get(name)
            if own not in spec.queries_for:
                raise QueryError(f"query_encoder {name!r} cannot query a collection built with {own!r}: its vectors "
                                 f"are not in {own!r}'s space (it can query collections of: "
                                 f"{', '.join(spec.queries_for) or 'its own encoder only'}); leave query_encoder unset")
            if self.config.encode.temporal_model:
                raise QueryError(f"query_encoder {name!r}: this collection's segments come from a learned temporal "
                                 "model, which was not measured on another encoder's frame vectors; leave "
                                 "query_encoder unset")
            encode = dataclasses.replace(self.config.encode, encoder=name, variant="")
            self._query_encoders[name] = MediaEncoder(dataclasses.replace(self.config, encode=encode))
        return self._query_encoders[name]

    def _stored_segmenter(self) -> MediaEncoder:
        if self._segmenter is None:
            self._segmenter = stored_segmenter(self.config, self.manifest["dims"]["frame"])
        return self._segmenter

    def resolve_video(self, video: str, snap: Snapshot | None = None) -> int:
        """Position in ``snapshot.catalog.video_ids`` of a video given by id, unique id prefix, or path.

        Raises:
            NotFoundError: no such video, or an ambiguous prefix.
        """
        snap = snap or self._snap
        ids = snap.catalog.video_ids
        if video in snap.paths:
            return snap.position[video]
        if catalog._ID_PREFIX.fullmatch(video):
            found = [i for i, v in enumerate(ids) if v.startswith(video)]
            if len(found) > 1:
                raise NotFoundError(f"video id prefix {video!r} is ambiguous ({len(found)} videos); give more characters")
            if found:
                return found[0]
        resolved = path_text(video) if video else video
        for i, p in enumerate(snap.catalog.video_paths):
            if p == resolved:
                return i
        raise NotFoundError(f"no video {video!r} in {self.path}; `vidsearch info --collection {self.path}` lists them")

    def frame_vectors(self, video: str, snap: Snapshot | None = None) -> tuple[NDArray[np.float64], NDArray[np.float16]]:
        """The stored (F,) frame times and (F, D) float16 frame vectors of a video (id, prefix or path)."""
        snap = snap or self._snap
        v = self.resolve_video(video, snap)
        row, n = int(snap.catalog.video_frame_row[v]), int(snap.catalog.video_n_frames[v])
        return snap.catalog.frame_times(v).copy(), np.array(snap.frames[row : row + n])

    def encode_query(self, query: str | os.PathLike[str], crops: bool = False,
                     snap: Snapshot | None = None, insets: bool = False,
                     query_encoder: str | None = None) -> EncodedMedia:
        """Decode and encode a query (file, image, or ``VIDEO_ID@START-END`` from the stored frames); a file
        with ``query_encoder`` when given (see ``SearchParams.query_encoder``).

        Raises:
            QueryError: neither an existing file nor a valid reference.
            NotFoundError: the referenced video is not in the collection.
            DecodeError: the file cannot be decoded.
        """
        text = str(query)
        try:
            exists = Path(text).exists()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise QueryError(f"query {text[:200]!r}: cannot be a file here ({exc.strerror}); give a shorter path "
                             "or VIDEO_ID@START-END") from exc
        ref = None if exists else parse_ref(text)
        if ref is not None:
            return self._encode_ref(text, ref, snap or self._snap)
        if not exists:
            raise QueryError(f"query {text!r} is neither an existing file nor VIDEO_ID@START-END of an indexed video "
                             "(e.g. 3fa9c2d41b07@10-20)")
        if Path(text).is_dir():
            raise QueryError(f"query {text!r} is a folder; give a video or image file")
        media = self.query_media_encoder(query_encoder).encode_file(text, crops=crops, insets=insets)
        if query_encoder is not None and query_encoder != self.config.encode.encoder:
            media.query_encoder = query_encoder  # the result says so
        return media

    def encode_ref(self, query: str, snap: Snapshot | None = None) -> EncodedMedia:
        """Cut ``VIDEO_ID@START-END`` from the stored frames (what the server's ``ref`` field asks for:
        never a file, so no file-system lookup).

        Raises:
            QueryError: not ``VIDEO_ID@START-END``, or no stored frame in the range.
            NotFoundError: the video is not in the collection.
        """
        ref = parse_ref(query)
        if ref is None:
            raise QueryError(f"ref {query[:200]!r} is not VIDEO_ID@START-END of an indexed video (e.g. 3fa9c2d41b07@10-20)")
        return self._encode_ref(query, ref, snap or self._snap)

    def _encode_ref(self, text: str, ref: RefQuery, snap: Snapshot) -> EncodedMedia:
        t0 = time.perf_counter()
        v = self.resolve_video(ref.video, snap)
        times = snap.catalog.frame_times(v)  # sorted; only the range's frames are read (a video may be hours long)
        lo = int(np.searchsorted(times, ref.start - 1e-6, side="left"))
        hi = int(np.searchsorted(times, ref.end - 1e-6, side="left"))
        if hi <= lo:
            raise QueryError(f"query {text!r}: video {ref.video} has no frame between {ref.start}s and {ref.end}s")
        row = int(snap.catalog.video_frame_row[v])
        vectors = np.asarray(snap.frames[row + lo : row + hi], np.float32)
        info = MediaInfo(text, ref.end - ref.start, 0.0, 0, 0, "stored", "stored", False)
        media = self._stored_segmenter().encode_frames(info, times[lo:hi] - ref.start, vectors)
        media.timings["decode"] = media.timings.get("decode", 0.0) + time.perf_counter() - t0 - media.timings["encode"]
        return media

    def search_segments(self, vectors: NDArray[np.float32], k: int, params: SearchParams | None = None,
                        snap: Snapshot | None = None) -> IndexHits:
        """Top-``k`` reference segments of each (Q, d) query segment vector: the index, plus an exact scan
        of the rows it does not cover."""
        params = params or SearchParams()
        snap = snap or self._snap
        # never more neighbours than rows (a huge segment_k must not become a huge FAISS allocation)
        rows = max(1, snap.catalog.segment_rows)
        k = min(int(k), rows)
        depth = 0 if params.rerank_depth == 0 else min(max(params.rerank_depth, k), rows)
        ivf_params = IVFSearchParams(min(params.nprobe, 1 << 20), min(params.ef_search, 1 << 20), depth)
        parts = []
        if snap.index is not None:
            parts.append(snap.index.search(vectors, k, ivf_params))
        if snap.tail is not None and len(snap.tail):
            parts.append(snap.tail.search(vectors, k))
        if not parts:
            from vidsearch.index.hits import empty_hits

            return empty_hits(len(vectors), max(1, k))
        return parts[0] if len(parts) == 1 else merge_hits(parts, k)

    def search(self, query: str | os.PathLike[str], k: int = 10, params: SearchParams | None = None) -> SearchResult:
        """Find the videos that contain (or look like) the query, best first.

        Args:
            query: a video file, an image file, or ``VIDEO_ID@START-END`` (seconds) of an indexed video.
            k: number of videos to return.
            params: search-time parameters.

        Returns:
            SearchResult with up to ``k`` videos, each with matched time ranges.

        Raises:
            QueryError: the query is neither a readable file nor a valid ``VIDEO_ID@START-END``.
            DecodeError: the query file cannot be decoded.
        """
        return self.search_batch([query], k, params)[0]

    def search_batch(self, queries: list[str | os.PathLike[str]], k: int = 10,
                     params: SearchParams | None = None) -> list[SearchResult]:
        """Search several queries; their segment vectors go to the index in one call.

        Raises:
            QueryError, NotFoundError, DecodeError: for the first query that cannot be searched.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise QueryError(f"k must be an integer >= 1, got {k!r}")
        params = params or SearchParams()
        snap = self._maybe_refresh()
        t0 = time.perf_counter()
        media = [self.encode_query(q, crops=params.crops, snap=snap, insets=params.insets,
                                   query_encoder=params.query_encoder) for q in queries]
        return self.search_encoded(media, [str(q) for q in queries], k, params, snap, started=t0)

    def search_encoded(self, media: list[Any], names: list[str], k: int, params: SearchParams,
                       snap: Snapshot | None = None, started: float | None = None) -> list[SearchResult]:
        """Search already-encoded queries (``EncodedMedia``) in one index call; the batch's entry point."""
        snap = snap or self._snap
        t1 = time.perf_counter()
        parts = [b for m in media for b in (m.segment_vectors, *m.region_segment_vectors)]
        rows = [len(m.segment_vectors) * (1 + len(m.region_segment_vectors)) for m in media]
        stacked = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(
            (0, snap.segments.shape[1]), np.float32)
        hits = self.search_segments(stacked, params.segment_k, params, snap)
        index_s = time.perf_counter() - t1
        out = []
        offset = 0
        for m, name, n in zip(media, names, rows):
            t = time.perf_counter()
            part = hits if len(media) == 1 else IndexHits(hits.ids[offset : offset + n], hits.scores[offset : offset + n])
            offset += n
            result = self._finish(m, name, part, k, params, snap)
            result.query_encoder = m.query_encoder
            search_ms = (index_s + time.perf_counter() - t) * 1000
            result.timings_ms = {
                "decode": m.timings.get("decode", 0.0) * 1000, "encode": m.timings.get("encode", 0.0) * 1000,
                "search": search_ms,
                "total": m.timings.get("decode", 0.0) * 1000 + m.timings.get("encode", 0.0) * 1000 + search_ms,
            }
            if started is not None and len(media) == 1:
                result.timings_ms["total"] = (time.perf_counter() - started) * 1000
            out.append(result)
        return out

    def _finish(self, media: Any, name: str, hits: IndexHits, k: int, params: SearchParams, snap: Snapshot) -> SearchResult:
        """Hits of one query's segments (and crop regions) -> voted, re-ranked, ranked videos."""
        starts = np.array([s.start for s in media.segments], np.float64)
        ends = np.array([s.end for s in media.segments], np.float64)
        n_seg = len(starts)
        raw = hits.scores
        scores = raw
        if params.norm_beta > 0:  # each row (query segment, or one crop of it) against its own background
            scores = normalized_scores(raw, params.norm_rank, params.norm_beta)
        ids = hits.ids
        if media.region_segment_vectors:  # crops and insets: each region's hits vote for its query segment
            parts = range(1 + len(media.region_segment_vectors))
            raw_parts = [raw[i * n_seg : (i + 1) * n_seg].copy() for i in parts]
            score_parts = [scores[i * n_seg : (i + 1) * n_seg].copy() for i in parts]
            for i, blank in enumerate(media.region_segment_blank, start=1):
                raw_parts[i][blank] = -np.inf  # a blank crop (black corner) matches every fade to black
                score_parts[i][blank] = -np.inf
            ids = np.concatenate([hits.ids[i * n_seg : (i + 1) * n_seg] for i in parts], axis=1)
            raw, scores = np.concatenate(raw_parts, axis=1), np.concatenate(score_parts, axis=1)
        keep = k if params.rerank == "none" else max(k, params.rerank_candidates)
        votes = vote(starts, ends, ids, scores, snap.table, self.config.segment.stride,
                     params.min_similarity, params.max_matches, limit=keep,
                     raw_scores=raw if params.norm_beta > 0 else None)
        rerank_ms = 0.0
        if params.rerank != "none":
            threshold = params.par_threshold
            if threshold is None and params.rerank == "par":
                threshold = self.search_defaults()["par_threshold"]
            t = time.perf_counter()
            def fetch(video_id: str) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float32]]:
                ids = snap.video_segment_ids(snap.position[video_id])
                return snap.table.start[ids], snap.table.end[ids], np.asarray(snap.segments[ids], np.float32)

            background = None
            if params.norm_beta > 0 and params.rerank == "tn":  # what the votes' normalisation took off each row
                # (the query, each region): only the temporal network reads it
                bg = np.float32(params.norm_beta) * row_background(hits.scores, params.norm_rank)
                background = [bg[i * n_seg : (i + 1) * n_seg] for i in range(1 + len(media.region_segment_vectors))]
            votes = rerank(params.rerank, media.segment_vectors, starts, ends, votes[: params.rerank_candidates],
                           fetch, threshold, regions=media.region_segment_vectors,
                           region_blank=media.region_segment_blank, comparator=params.comparator,
                           background=background)
            rerank_ms = (time.perf_counter() - t) * 1000
        votes = votes[:k]
        results = [VideoHit(i + 1, v.video_id, snap.paths.get(v.video_id, ""), v.score, v.matches)
                   for i, v in enumerate(votes)]
        result = SearchResult(name, k, results)
        result.rerank_ms = rerank_ms  # part of "search"; not in the JSON shape
        return result
