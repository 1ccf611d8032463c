"""The HTTP API of ``vidsearch serve`` (FastAPI): :func:`create_app` and its routes.

The engine is opened once in the app's lifespan; blocking work (decoding, the index, SQLite) runs off
the event loop: queries through :class:`~vidsearch.serve.query.QueryService` (thread pool and batch
schedulers), indexing and removal on the writer thread of :class:`~vidsearch.serve.jobs.IndexJobs`,
the rest in Starlette's thread pool.

Every error is JSON ``{"error": {"type", "message"}}``: each ``VidsearchError`` class has its status in
:data:`ERROR_STATUS` (the one place), a bad form field is 400, and :class:`~vidsearch.serve.security.Gate`
turns anything unexpected into a logged 500. The contract is in the issue's notes (``/work/notes/api.md``)
and in ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from vidsearch.encode import registry
from vidsearch.errors import (
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
from vidsearch.serve.metrics import CONTENT_TYPE, ServeMetrics
from vidsearch.serve.schemas import SearchResponse
from vidsearch.serve.security import (
    DIRECT_MAX_MULTIPART,
    DirectReply,
    Gate,
    HTTPProblem,
    expand_allowed,
    media_type,
    problem_body,
    remove_quietly,
    resolve_allowed,
    spool_query,
    store_upload,
)
from vidsearch.serve.settings import ServeSettings

if TYPE_CHECKING:
    from vidsearch.serve.workers import WorkerRole

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

ERROR_STATUS: dict[type[VidsearchError], int] = {
    QueryError: 400,  # a malformed query, ref or parameter
    ConfigError: 400,
    ShapeError: 400,
    AlignmentError: 400,
    NotFoundError: 404,  # unknown video, job or referenced video
    CollectionLockedError: 409,  # another process is writing the collection
    CollectionError: 409,
    NotFittedError: 409,
    DecodeError: 422,  # the upload is not a readable video or image
    EncoderError: 422,
    OverloadedError: 503,  # with Retry-After
}
"""HTTP status of each ``VidsearchError`` class (the nearest class in its MRO wins; unlisted: 400)."""

PLACEHOLDER_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>vidsearch</title></head>
<body><h1>vidsearch</h1><p>The web page is not installed in this build. The API is described at
<a href="/docs">/docs</a>.</p></body></html>"""

THUMBNAIL_CACHE = 256
_HEX = re.compile(r"[0-9a-f]{1,64}")


def status_of(exc: VidsearchError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 400


class Server:
    """What the routes share: the engine, the query path, the writer, metrics and a catalogue reader."""

    def __init__(self, collection: Path, settings: ServeSettings, metrics: ServeMetrics, writer: bool = True) -> None:
        from vidsearch.search.engine import Engine
        from vidsearch.serve.jobs import IndexJobs
        from vidsearch.serve.query import QueryService
        from vidsearch.store import catalog

        self.collection = collection
        self.settings = settings
        self.metrics = metrics
        self.upload_dir = settings.upload_dir or collection / "uploads"
        self.engine = Engine.open(collection, refresh_seconds=settings.refresh_seconds)
        try:
            self.queries = QueryService(self.engine, settings, metrics)
            # index jobs and removals: in one process only (the writer; the other workers forward them)
            self._jobs = IndexJobs(collection, self.refresh, metrics) if writer else None
            self._db = catalog.open_existing(collection / "catalog.sqlite")
        except BaseException:
            self.engine.close()
            raise
        self._db_lock = threading.Lock()
        self._videos: tuple[int, list[dict[str, Any]], dict[str, int]] | None = None
        self._counts: tuple[int, int, int] | None = None
        self._thumbs: OrderedDict[tuple[str, float, int], bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()

    @property
    def jobs(self) -> Any:
        """The :class:`~vidsearch.serve.jobs.IndexJobs` of the writer process.

        Raises:
            CollectionError: this worker does not write (its gate forwards the routes that do: not reached).
        """
        if self._jobs is None:
            raise CollectionError("this worker process does not write the collection; index jobs and removals are "
                                  "answered by worker 0")
        return self._jobs

    def start(self) -> None:
        self.queries.start()
        if self._jobs is not None:
            self._jobs.start()
        self.refresh()

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
        self.queries.close()
        with self._db_lock:
            self._db.close()
        self.engine.close()

    def refresh(self) -> None:
        """Adopt the newest committed generation and update the size gauges."""
        self.engine.refresh()
        self.health()

    # ------------------------------------------------------------------ reads
    def health(self) -> dict[str, Any]:
        snap = self.engine.snapshot
        if self._counts is None or self._counts[0] != snap.generation:
            import numpy as np

            self._counts = (snap.generation, len(snap.catalog.video_ids),
                            int(np.count_nonzero(snap.table.video >= 0)))
            self.metrics.videos.set(self._counts[1])
            self.metrics.segments.set(self._counts[2])
            self.metrics.generation.set(snap.generation)
        generation, videos, segments = self._counts
        return {"status": "ok", "videos": videos, "segments": segments, "generation": generation}

    def videos(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every video as the API shows it, oldest first, and id -> position; read once per generation."""
        from vidsearch.store import catalog

        with self._db_lock:
            generation = catalog.meta(self._db)["generation"]
            if self._videos is None or self._videos[0] != generation:
                rows = catalog.list_videos(self._db)
                listed = [{"video_id": r["id"], "path": r["path"], "name": Path(r["path"]).name,
                           "duration": r["duration"], "segments": r["segments"], "frames": r["n_frames"],
                           "width": r["width"], "height": r["height"], "is_image": r["is_image"]} for r in rows]
                self._videos = (generation, listed, {v["video_id"]: i for i, v in enumerate(listed)})
            return self._videos[1], self._videos[2]

    def video(self, video: str) -> dict[str, Any]:
        """One video by full id or unique id prefix.

        Raises:
            NotFoundError: none, or an ambiguous prefix.
        """
        listed, position = self.videos()
        if video in position:
            return listed[position[video]]
        found = [v for v in listed if v["video_id"].startswith(video)] if _HEX.fullmatch(video) else []
        if len(found) > 1:
            raise NotFoundError(f"video id prefix {video!r} is ambiguous ({len(found)} videos); give more characters")
        if not found:
            raise NotFoundError(f"no video {video!r} in this collection; GET /videos lists them")
        return found[0]

    def video_file(self, video: str) -> tuple[dict[str, Any], Path]:
        """A video and its file, which must still exist.

        Raises:
            NotFoundError: no such video, or its file is gone from disk.
        """
        row = self.video(video)
        path = Path(row["path"])
        if not path.is_file():
            raise NotFoundError(f"video {row['video_id']}: its file {row['path']} is no longer on disk; re-index "
                                "it from its new place or remove it")
        return row, path

    def thumbnail(self, video: str, t: float, width: int) -> bytes:
        from vidsearch.serve.media import thumbnail_jpeg

        row, path = self.video_file(video)
        t = min(max(0.0, t), max(0.0, float(row["duration"])))
        key = (row["video_id"], round(t, 2), width)
        with self._thumbs_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        jpeg = thumbnail_jpeg(path, t, width, bool(row["is_image"]))
        with self._thumbs_lock:
            self._thumbs[key] = jpeg
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return jpeg

    # ------------------------------------------------------------------ writes
    def index_paths(self, raw_paths: list[str]) -> Any:
        """Check ``raw_paths`` against the allowed roots, expand folders, start a job."""
        from vidsearch.store.files import MEDIA_EXTENSIONS

        resolved = [resolve_allowed(p, self.settings.allow_roots) for p in raw_paths]
        files, refused = expand_allowed(resolved, self.settings.allow_roots, MEDIA_EXTENSIONS)
        if not files and not refused:
            raise HTTPProblem(400, "BadRequest", "found no video or image file in the paths given (folders are "
                              "searched for known video and image endings)")
        from vidsearch.collection import FileReport

        return self.jobs.submit(files, [FileReport(r.path, "failed", error=r.reason).to_dict() for r in refused])


def create_app(collection: str | Path, settings: ServeSettings | None = None, role: WorkerRole | None = None) -> FastAPI:
    """The FastAPI app serving one collection.

    Args:
        collection: the collection directory (opened when the app starts, in its lifespan).
        settings: how it serves (defaults: loopback, no token, no folders to index by path).
        role: which worker process this app runs in (``serve/workers.py``; default: the only one, which writes).
    """
    from vidsearch.serve.workers import WorkerRole, WriterForwarder

    from fastapi_offline import FastAPIOffline

    from vidsearch import __version__

    collection = Path(collection)
    settings = settings or ServeSettings()
    role = role or WorkerRole()
    metrics = ServeMetrics()
    forwarder = None if role.writer or role.writer_socket is None else WriterForwarder(role.writer_socket)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = await run_in_threadpool(Server, collection, settings, metrics, role.writer)
        try:
            await run_in_threadpool(server.start)
        except BaseException:
            await run_in_threadpool(server.close)
            raise
        app.state.server = server
        refresher = asyncio.create_task(_refresh_loop(server))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await run_in_threadpool(server.close)

    class VidsearchAPI(FastAPI):
        """The app, with ``front`` answering form-encoded stored-range searches before FastAPI's own layers
        (its telemetry check and error, telemetry and body-limit middleware cost ~8 % of such a request's
        event-loop time); everything else goes through them as usual."""

        front: Gate | None = None

        async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            front = self.front
            if (front is not None and scope["type"] == "http" and scope.get("path") == "/search"
                    and scope.get("method") == "POST" and _form_encoded(scope)):
                scope["app"] = self
                await front(scope, receive, send)  # type: ignore[arg-type]  # an ASGI scope is a dict
                return
            await super().__call__(scope, receive, send)

    app = FastAPIOffline(title="vidsearch", version=__version__, lifespan=lifespan,
                         description="Content-based video retrieval: search a collection with a clip, an image "
                                     "or a stored range; index files; browse the videos.")
    app.__class__ = VidsearchAPI  # FastAPIOffline is a function that makes a FastAPI: this adds ``front``
    assert isinstance(app, VidsearchAPI)
    _add_error_handlers(app)
    _add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    counters: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # the labelled children, looked up once

    def observe(scope: dict[str, Any], status: int, seconds: float, error_type: str | None) -> None:
        route = scope.get("route")  # set by the router on the scope it was given (the same dict)
        endpoint = str(getattr(route, "path", "")) or _endpoint(app, scope)
        key = (endpoint, scope.get("method", ""), status)
        children = counters.get(key)
        if children is None:
            children = (metrics.requests.labels(endpoint, key[1], str(status)),
                        metrics.request_seconds.labels(endpoint))
            if len(counters) < 10_000:
                counters[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if status >= 400:
            metrics.errors.labels(endpoint, str(status), error_type or http.HTTPStatus(status).phrase.replace(" ", "")).inc()

    search_route = next(r for r in app.router.routes if getattr(r, "path", None) == "/search")
    direct = {("POST", "/search"): functools.partial(_direct_search, app, search_route)}
    app.add_middleware(Gate, token=settings.token, max_body=settings.max_upload_bytes, observe=observe,
                       direct=direct, forward=forwarder)
    # The same checks, route and metrics in front of FastAPI for x-www-form-urlencoded searches (the direct
    # route answers every such body, so nothing falls through to be counted twice).
    app.front = Gate(functools.partial(FastAPI.__call__, app), token=settings.token,
                     max_body=settings.max_upload_bytes, observe=observe, direct=direct)
    return app


def _form_encoded(scope: MutableMapping[str, Any]) -> bool:
    """Whether the request's body is ``application/x-www-form-urlencoded`` (its Content-Type header)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            return media_type(value.decode("latin-1")) == "application/x-www-form-urlencoded"
    return False


async def _refresh_loop(server: Server) -> None:
    """Look for commits of other writers (the CLI) every ``refresh_seconds``."""
    while True:
        await asyncio.sleep(server.settings.refresh_seconds)
        try:
            await run_in_threadpool(server.refresh)
        except Exception:  # a damaged or busy catalogue now: keep serving the last snapshot, retry later
            log.exception("refreshing the engine failed; serving the previous snapshot")


def _endpoint(app: FastAPI, scope: dict[str, Any]) -> str:
    """The route template a request matched (``/videos/{video_id}``), for metric labels of bounded cardinality."""
    partial = None
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
        if match == Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", "other"))
    return partial or "unmatched"


def _server(request: Request) -> Server:
    server: Server = request.app.state.server  # set in the lifespan
    return server


def _problem(request: Request, status: int, kind: str, message: str,
             headers: Mapping[str, str] | None = None) -> JSONResponse:
    request.state.error_type = kind
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status,
                        headers=dict(headers) if headers else None)


SEARCH_FORM = {"type": "object", "properties": {
    "file": {"type": "string", "format": "binary", "description": "a video or image (or give ref)"},
    "ref": {"type": "string", "description": "VIDEO_ID@START-END (seconds) of an indexed video (or give file)"},
    "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10, "description": "videos to return"},
    "rerank": {"type": "string", "enum": ["none", "exact", "par", "dtw", "bidtw", "tn"], "default": "none"},
    "crops": {"type": "boolean", "default": False,
              "description": "also search 5 crops of each frame (picture-in-picture; 6x the encoding)"},
    "insets": {"type": "boolean", "default": True,
               "description": "also search the insets found in each frame (picture-in-picture, split screens; "
                              "file queries)"},
    "min_similarity": {"type": "number", "minimum": -1, "maximum": 1, "default": 0.0,
                       "description": "segment hits below this cosine do not vote"},
    "query_encoder": {"type": "string", "enum": ["", *registry.encoder_names()], "default": "",
                      "description": "encode a file query with this encoder instead of the collection's, where its "
                                     "vectors live in that encoder's space (sscd-distilled for sscd collections: "
                                     "about 2x faster); the answer then names it"}}}
_INTEGER = re.compile(r"^\s*[+-]?\d{1,40}\s*$")
_TRUE, _FALSE = frozenset({"true", "1", "on", "yes"}), frozenset({"false", "0", "off", "no", ""})


def _text(form: Any, name: str, default: str) -> str:
    value = form.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise HTTPProblem(400, "BadRequest", f"{name} must be a form field, not a file")
    return value


def _whole_number(form: Any, name: str, default: int) -> int:
    text = _text(form, name, str(default))
    if not _INTEGER.match(text):
        raise HTTPProblem(400, "BadRequest", f"{name} must be a whole number, got {text[:40]!r}")
    return int(text)


def _number(form: Any, name: str, default: float) -> float:
    text = _text(form, name, repr(default))
    try:
        return float(text)
    except ValueError:
        raise HTTPProblem(400, "BadRequest", f"{name} must be a number, got {text[:40]!r}") from None


def _boolean(form: Any, name: str, default: bool) -> bool:
    text = _text(form, name, "true" if default else "false").strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise HTTPProblem(400, "BadRequest", f"{name} must be true or false, got {text[:40]!r}")


@functools.lru_cache(maxsize=256)
def _search_params(rerank: str, crops: bool, min_similarity: float, insets: bool, query_encoder: str = "") -> Any:
    """One ``SearchParams`` per distinct combination (frozen, so shared; making and checking one per
    request was ~3 % of a stored-range query's event-loop time). Raises QueryError as SearchParams does
    (an exception is not cached)."""
    from vidsearch.search.results import SearchParams

    return SearchParams(rerank=rerank, crops=crops, min_similarity=min_similarity, insets=insets,
                        query_encoder=query_encoder or None)


def _params(form: Any) -> Any:
    from vidsearch.search.results import SearchParams

    return _search_params(_text(form, "rerank", "none"), _boolean(form, "crops", False),
                          _number(form, "min_similarity", 0.0), _boolean(form, "insets", SearchParams.insets),
                          _text(form, "query_encoder", "").strip())


def _carries_a_file(request: Request) -> bool:
    """Whether a search request's body is a multipart upload, by its headers before the body is read: larger than
    any text fields (``security.DIRECT_MAX_MULTIPART``), or of unknown size (chunked)."""
    if media_type(request.headers.get("content-type")) != "multipart/form-data":
        return False
    length = request.headers.get("content-length", "")
    return not length.isdigit() or int(length) > DIRECT_MAX_MULTIPART


async def _search_ref(server: Server, form: Any, started: float) -> Any:
    """A stored-range search from the form's fields (``ref``, ``k``, ``rerank``, ``min_similarity``)."""
    ref = _text(form, "ref", "").strip()
    if not ref:
        raise HTTPProblem(400, "BadRequest", "give exactly one of: a file field 'file' (a video or image) or "
                          "a form field 'ref' (VIDEO_ID@START-END)")
    return await server.queries.search_ref(ref, _whole_number(form, "k", 10), _params(form), started)


def _urlencoded(body: bytes) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (the last value of a repeated name)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(400, "BadRequest", f"the form body is not UTF-8 ({exc}); send the fields URL-encoded "
                          "in UTF-8, as curl -d and browsers do") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=16)
    except ValueError as exc:
        raise HTTPProblem(400, "BadRequest", f"could not parse the form body ({exc}); expected at most 16 "
                          "fields name=value joined by &") from exc
    return dict(pairs)


_JSON = b"application/json"


def _error_reply(exc: Exception) -> DirectReply:
    """The JSON error of a refused direct request, as the app's exception handlers render it."""
    if isinstance(exc, HTTPProblem):
        headers = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items())
        return DirectReply(exc.status, problem_body(exc.kind, exc.message), headers, _JSON, exc.kind)
    assert isinstance(exc, VidsearchError)
    headers = ()
    if isinstance(exc, OverloadedError):
        headers = ((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()),)
    kind = type(exc).__name__
    return DirectReply(status_of(exc), problem_body(kind, str(exc)), headers, _JSON, kind)


async def _direct_search(app: FastAPI, route: Any, scope: dict[str, Any], content_type: str | None,
                         body: bytes) -> DirectReply | None:
    """``POST /search`` with a stored range (``ref``), answered by :class:`Gate` without FastAPI's request,
    routing and response objects: the same fields, checks, errors and JSON as the route. None (the route
    answers) for anything else: a file part, or a form the multipart parser refuses (the route says why)."""
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartException, MultiPartParser

    started = time.perf_counter()
    scope["route"] = route  # the metrics' endpoint label, as the router would set it
    try:
        if media_type(content_type) == "application/x-www-form-urlencoded":
            fields: Mapping[str, Any] = _urlencoded(body)
            if "file" in fields:
                raise HTTPProblem(400, "BadRequest", "file must be a file upload (multipart/form-data), not text")
        else:  # multipart/form-data (the gate lets no other type through)
            async def stream() -> AsyncGenerator[bytes, None]:
                yield body

            try:  # no file allowed: a file part is the route's to handle
                fields = await MultiPartParser(Headers({"content-type": content_type or ""}), stream(),
                                               max_files=0, max_fields=16).parse()
            except MultiPartException:
                return None
            if "file" in fields:
                raise HTTPProblem(400, "BadRequest", "file must be a file upload (multipart/form-data), not text")
        answer = await _search_ref(app.state.server, fields, started)
    except (HTTPProblem, VidsearchError) as exc:
        return _error_reply(exc)
    return DirectReply(200, answer.body)


def _spool_and_probe(queries: Any, source: Any, name: str | None, limit: int) -> tuple[Path, tuple[int, bool] | None]:
    """Store a query upload (its ending from its content) and count the frames it will sample, in one trip
    to a thread. An upload the probe cannot read gets None: decoding it reports the error (422)."""
    from vidsearch.errors import DecodeError

    from vidsearch.errors import QueryError

    path = spool_query(source, name, None, limit)
    try:
        return path, queries.frames_of(path)
    except DecodeError:
        return path, None
    except QueryError as exc:  # name the client's file, not the server's temporary copy
        remove_quietly(path)
        raise QueryError(str(exc).replace(str(path), name or path.name)) from None
    except BaseException:
        remove_quietly(path)
        raise


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VidsearchError)
    async def vidsearch_error(request: Request, exc: VidsearchError) -> JSONResponse:
        status = status_of(exc)
        headers = None
        if isinstance(exc, OverloadedError):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return _problem(request, status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(HTTPProblem)
    async def http_problem(request: Request, exc: HTTPProblem) -> JSONResponse:
        return _problem(request, exc.status, exc.kind, exc.message, dict(exc.headers or {}))

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = http.HTTPStatus(exc.status_code).phrase.replace(" ", "")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; /docs lists the API"
        elif exc.status_code == 400 and "parsing the body" in message:
            message = "could not parse the request body (a truncated or malformed multipart form?); send " \
                      "multipart/form-data as a browser or `curl -F` does"
        return _problem(request, exc.status_code, kind, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            given = err.get("input")
            shown = "" if given is None or isinstance(given, (dict, bytes)) else f" (got {str(given)[:80]!r})"
            parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}{shown}")
        return _problem(request, 400, "BadRequest", "; ".join(parts) or "invalid request")


def _add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC_DIR / "index.html"
        if index.is_file():
            return FileResponse(index, media_type="text/html")
        return HTMLResponse(PLACEHOLDER_PAGE)

    @app.get("/health", tags=["server"], summary="Liveness and collection size (no token needed)")
    async def health(request: Request) -> dict[str, Any]:
        return _server(request).health()

    @app.get("/metrics", tags=["server"], summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        server = _server(request)
        server.health()  # the size gauges follow the snapshot
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/search", tags=["search"], summary="Find the videos containing a clip, an image or a stored range",
              response_class=Response,
              responses={200: {"model": SearchResponse, "content": {"application/json": {}},
                               "description": "exactly the JSON of `vidsearch search --json`"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": SEARCH_FORM},
                  "application/x-www-form-urlencoded": {"schema": SEARCH_FORM}}}})
    async def search(request: Request) -> Response:
        # The form is read and checked here rather than by FastAPI's per-field validation, which cost about
        # a third of a stored-range query's time on the event loop (the fields are in SEARCH_FORM for /docs),
        # and the answer is the JSON the search worker serialised (no jsonable_encoder on the loop).
        started = time.perf_counter()
        server = _server(request)
        if media_type(request.headers.get("content-type")) == "application/x-www-form-urlencoded":
            fields = _urlencoded(await request.body())
            if "file" in fields:
                raise HTTPProblem(400, "BadRequest", "file must be a file upload (multipart/form-data), not text")
            answer = await _search_ref(server, fields, started)
            return Response(answer.body, media_type="application/json")
        if _carries_a_file(request):
            # refuse before the body is read and parsed: at twice the sustainable image load, half the requests
            # are refused, and parsing their uploads on the event loop delayed the others and the 503s themselves
            server.queries.precheck()
        form = await request.form(max_files=1, max_fields=16)
        try:
            file, ref = form.get("file"), form.get("ref")
            if ref is not None and not isinstance(ref, str):
                raise HTTPProblem(400, "BadRequest", "ref must be a form field (VIDEO_ID@START-END), not a file")
            if isinstance(file, str):
                raise HTTPProblem(400, "BadRequest", "file must be a file upload (multipart/form-data), not text")
            has_file = file is not None and bool(file.filename or file.size)
            if has_file and ref:
                raise HTTPProblem(400, "BadRequest", "give exactly one of: a file field 'file' (a video or image) or "
                                  "a form field 'ref' (VIDEO_ID@START-END)")
            if not has_file:
                answer = await _search_ref(server, form, started)
            else:
                assert file is not None  # has_file
                from vidsearch.serve.query import check_k

                k = check_k(_whole_number(form, "k", 10))
                params = _params(form)
                queries = server.queries
                stored = time.perf_counter()
                # a 503 now when an image with these settings could not make it, before the upload is stored
                hold = queries.hold(params, stored - started)
                try:
                    path, frames = await run_in_threadpool(_spool_and_probe, queries, file.file, file.filename,
                                                           server.settings.max_upload_bytes)
                except BaseException:
                    hold.release()
                    raise
                queries.learn_store(time.perf_counter() - stored)
                try:
                    answer = await queries.search_file(path, file.filename or path.name, k, params, started,
                                                       frames, hold)
                finally:
                    await run_in_threadpool(remove_quietly, path)
        finally:
            await form.close()
        return Response(answer.body, media_type="application/json")

    @app.get("/videos", tags=["videos"], summary="The collection's videos, oldest first")
    async def list_videos(request: Request, offset: Annotated[int, Query(ge=0)] = 0,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        listed, _ = await run_in_threadpool(_server(request).videos)
        return {"videos": listed[offset : offset + limit], "total": len(listed)}

    @app.get("/videos/{video_id}", tags=["videos"], summary="One video (full id or unique id prefix)")
    async def get_video(request: Request, video_id: str) -> dict[str, Any]:
        return await run_in_threadpool(_server(request).video, video_id)

    @app.delete("/videos/{video_id}", tags=["videos"], summary="Remove a video from the collection")
    async def delete_video(request: Request, video_id: str) -> dict[str, Any]:
        server = _server(request)
        row = await run_in_threadpool(server.video, video_id)  # 404 before queueing behind a job
        removed = await asyncio.wrap_future(server.jobs.remove(row["video_id"]))
        return {"removed": removed["video_id"]}

    @app.post("/videos", tags=["videos"], status_code=202,
              summary="Index files: JSON {\"paths\": [...]} under the allowed roots, or multipart uploads",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"type": "object", "required": ["paths"], "properties": {
                      "paths": {"type": "array", "items": {"type": "string"}}}}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
    async def add_videos(request: Request) -> JSONResponse:
        server = _server(request)
        if (request.headers.get("content-type") or "").lower().startswith("application/json"):
            paths = await _json_paths(request)
            job = await run_in_threadpool(server.index_paths, paths)
        else:
            job = await _upload_job(request, server)
        return JSONResponse({"job_id": job.job_id}, status_code=202, headers={"Location": f"/jobs/{job.job_id}"})

    @app.get("/jobs", tags=["jobs"], summary="Index jobs, newest first")
    async def list_jobs(request: Request) -> dict[str, Any]:
        return {"jobs": _server(request).jobs.list_jobs()}

    @app.get("/jobs/{job_id}", tags=["jobs"], summary="An index job: status, progress, per-file reports")
    async def get_job(request: Request, job_id: str) -> dict[str, Any]:
        return _server(request).jobs.get(job_id)

    @app.get("/videos/{video_id}/thumbnail", tags=["videos"], response_class=Response,
             summary="JPEG of the frame nearest t seconds", responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(request: Request, video_id: str,
                        t: Annotated[float, Query(ge=0, description="seconds from the start")] = 0.0,
                        width: Annotated[int, Query(ge=16, le=1920, description="pixels")] = 320,
                        token: Annotated[str | None, Query(description="the token, for <img src>")] = None) -> Response:
        if not math.isfinite(t):
            raise HTTPProblem(400, "BadRequest", f"t must be a finite number of seconds, got {t}")
        server = _server(request)
        jpeg = await server.queries.in_pool(server.thumbnail, video_id, t, width)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/videos/{video_id}/media", tags=["videos"], response_class=FileResponse,
             summary="The video file (HTTP Range requests answered with 206)")
    async def media(request: Request, video_id: str,
                    token: Annotated[str | None, Query(description="the token, for <video src>")] = None) -> Response:
        from vidsearch.serve.media import check_range, content_type

        row, path = await run_in_threadpool(_server(request).video_file, video_id)
        size = (await run_in_threadpool(path.stat)).st_size
        check_range(request.headers.get("range"), size)
        return FileResponse(path, media_type=content_type(path), content_disposition_type="inline",
                            filename=path.name)


async def _json_paths(request: Request) -> list[str]:
    import json

    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, "BadRequest", f"the body is not valid JSON ({exc}); expected {{\"paths\": [...]}}") from exc
    paths = body.get("paths") if isinstance(body, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise HTTPProblem(400, "BadRequest", 'expected {"paths": ["file or folder", ...]}: a non-empty list of strings')
    if len(paths) > 10_000:
        raise HTTPProblem(400, "BadRequest", f"{len(paths)} paths in one request; give at most 10000 (folders count as one)")
    return paths


async def _upload_job(request: Request, server: Server) -> Any:
    form = await request.form(max_files=1000)
    try:
        uploads = [u for u in form.getlist("file") if not isinstance(u, str)]
        if not uploads or len(uploads) != len(form.getlist("file")):
            raise HTTPProblem(400, "BadRequest", "expected one or more file fields named 'file' (multipart uploads)")
        store = functools.partial(store_upload, folder=server.upload_dir, limit=server.settings.max_upload_bytes)
        saved = [await run_in_threadpool(store, u.file, u.filename) for u in uploads]
    finally:
        await form.close()
    return server.jobs.submit(saved)


__all__ = ["ERROR_STATUS", "Server", "create_app", "status_of"]
