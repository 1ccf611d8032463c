"""What the server lets a client do: the bearer token, the folders it may index by path, and uploads
(size limit enforced while the body streams in; content identified by decoding, not by its name).

Errors here are :class:`HTTPProblem` (an HTTP status, a type name and a message); ``app.py`` renders
them as ``{"error": {"type", "message"}}`` like every other error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from vidsearch.errors import DecodeError

log = logging.getLogger(__name__)


class HTTPProblem(HTTPException):
    """A request refused with ``status`` (4xx, or 503), named ``kind`` in the error body.

    An ``HTTPException``, so FastAPI passes it through unchanged even when it is raised while the
    request body is read (the upload limit), where it turns other errors into a generic 400.
    """

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers or {})
        self.status = status
        self.kind = kind
        self.message = message


# ------------------------------------------------------------------------------------------- the token
def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent or another scheme)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def check_token(expected: str | None, given: str | None) -> None:
    """Refuse (401) unless ``given`` equals the server's token (compared in constant time); no token set: allow.

    Raises:
        HTTPProblem: 401, with ``WWW-Authenticate: Bearer``.
    """
    if expected is None:
        return
    if given is None:
        raise HTTPProblem(401, "Unauthorized", "this server needs a token: send 'Authorization: Bearer <token>' "
                          "(the token given to vidsearch serve with --token or VIDSEARCH_TOKEN)",
                          {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")):
        raise HTTPProblem(401, "Unauthorized", "wrong token; send the token vidsearch serve was started with",
                          {"WWW-Authenticate": 'Bearer error="invalid_token"'})


# ------------------------------------------------------------------------------------ allowed folders
@dataclass(frozen=True)
class Refused:
    """A file found inside an allowed folder that is not indexed (a link leading out of the roots)."""

    path: str
    reason: str


def resolve_allowed(raw: str, roots: tuple[Path, ...]) -> Path:
    """The real path of a file or folder a client asked to index, if it lies under an allowed root.

    A relative path is taken relative to the first root. ``..`` components are refused outright (even
    when they would stay inside a root); symbolic links are resolved, and the target must lie under
    a root too.

    Raises:
        HTTPProblem: 403 outside the roots (or no roots configured), 400 a malformed path, 404 missing.
    """
    if not roots:
        raise HTTPProblem(403, "Forbidden", "indexing by path is off: start vidsearch serve with --allow-root DIR "
                          "(repeatable) to allow the folders it may read, or upload the files instead")
    if not isinstance(raw, str) or not raw or "\x00" in raw:
        raise HTTPProblem(400, "BadRequest", f"expected a non-empty file or folder path, got {raw!r}")
    given = Path(raw)
    if ".." in given.parts:
        raise HTTPProblem(403, "Forbidden", f"path {raw!r} contains '..'; give the path under an allowed root "
                          "without parent references")
    real_roots = [r.resolve() for r in roots]
    candidate = given if given.is_absolute() else real_roots[0] / given
    try:
        real = candidate.resolve(strict=False)  # follows every symlink that exists
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise HTTPProblem(400, "BadRequest", f"path {raw!r} cannot be resolved ({exc})") from exc
    if not any(real == r or real.is_relative_to(r) for r in real_roots):
        raise HTTPProblem(403, "Forbidden", f"path {raw!r} is outside the folders this server may index "
                          f"(its real path leaves the allowed roots); allowed: {', '.join(str(r) for r in roots)}")
    try:
        exists = real.exists()
    except OSError:
        exists = False
    if not exists:
        raise HTTPProblem(404, "NotFoundError", f"path {raw!r}: no such file or folder under the allowed roots")
    return real


def expand_allowed(paths: Iterable[Path], roots: tuple[Path, ...], media_suffixes: frozenset[str],
                   max_files: int = 100_000) -> tuple[list[Path], list[Refused]]:
    """Files to index from resolved files and folders: folders walked recursively (media endings only,
    like ``vidsearch index``), following links only while they stay under the roots.

    Returns:
        (files in order, entries refused because their real path leaves the roots)

    Raises:
        HTTPProblem: 400 when more than ``max_files`` files are found.
    """
    real_roots = [r.resolve() for r in roots]

    def inside(p: Path) -> bool:
        return any(p == r or p.is_relative_to(r) for r in real_roots)

    files: list[Path] = []
    refused: list[Refused] = []
    seen: set[Path] = set()
    for path in paths:
        for item in _walk(path, inside, media_suffixes, seen, refused):
            files.append(item)
            if len(files) > max_files:
                raise HTTPProblem(400, "BadRequest", f"more than {max_files} files in one request; index the folders "
                                  "in several requests")
    return files, refused


def _walk(path: Path, inside: Callable[[Path], bool], suffixes: frozenset[str], seen: set[Path],
          refused: list[Refused]) -> Iterator[Path]:
    if not path.is_dir():
        if path not in seen:
            seen.add(path)
            yield path
        return
    stack = [path]
    visited: set[Path] = set()
    while stack:
        folder = stack.pop()
        if folder in visited:
            continue  # a link loop, or a folder reached twice
        visited.add(folder)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            try:
                real = Path(entry.path).resolve()
                if not inside(real):
                    refused.append(Refused(entry.path, "refused: a link leading outside the allowed roots"))
                    continue
                if real.is_dir():
                    subdirs.append(real)
                elif real.is_file() and Path(entry.name).suffix.lower() in suffixes and real not in seen:
                    seen.add(real)
                    yield real
            except (OSError, RuntimeError):
                continue
        stack.extend(reversed(subdirs))


# -------------------------------------------------------------------------------------------- uploads
# Still-image formats Pillow identifies -> the ending vidsearch reads as an image. GIF is not here: an
# animated GIF is read as a video (through PyAV).
_IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "MPO": ".jpg",
                 "PSD": ".psd"}
_COPY_CHUNK = 1 << 20


def safe_name(name: str | None, default: str = "upload") -> str:
    """A client's file name reduced to one path component that is safe to create: no folders, no
    control characters, no leading dots, at most 200 bytes in UTF-8 (unicode letters are kept)."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = text.strip().lstrip(".").strip()
    while len(text.encode("utf-8")) > 200:
        text = text[:-1]
    return text or default


def copy_limited(source: BinaryIO, target: BinaryIO, limit: int) -> tuple[int, str]:
    """Copy ``source`` to ``target`` in chunks, refusing (413) past ``limit`` bytes.

    Returns:
        (bytes copied, SHA-256 hex digest)
    """
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = source.read(_COPY_CHUNK)
        if not chunk:
            return size, digest.hexdigest()
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        digest.update(chunk)
        target.write(chunk)


def too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(413, "PayloadTooLarge", f"the upload is larger than the {limit / 1048576:g} MiB this server "
                       "accepts; send a shorter clip, or start vidsearch serve with a larger --max-upload-mb")


def media_suffix(path: Path, name: str) -> str:
    """The file ending under which vidsearch will read ``path``, chosen from its content: a still image
    Pillow identifies gets its format's ending (read as an image), anything else a video ending (read by
    FFmpeg, which identifies containers by content). The client's name only breaks ties for videos."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            fmt = img.format or ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        fmt = ""
    if fmt in _IMAGE_SUFFIX:
        return _IMAGE_SUFFIX[fmt]
    if fmt == "GIF":
        return ".gif"
    from vidsearch.store.files import VIDEO_EXTENSIONS

    suffix = Path(name).suffix.lower()
    return suffix if suffix in VIDEO_EXTENSIONS and suffix != ".gif" else ".video"


def check_decodable(path: Path, shown: str) -> None:
    """Refuse (422) a file that is neither a readable image nor a container with a video stream (probe
    only: quick; a file damaged further in is reported by the index job)."""
    from vidsearch.decode import probe

    try:
        probe(path)
    except DecodeError as exc:
        raise HTTPProblem(422, "DecodeError", f"{shown}: not a readable video or image "
                          f"({str(exc).split(': ', 1)[-1]})") from exc


def store_upload(source: BinaryIO, name: str | None, folder: Path, limit: int) -> Path:
    """Keep an upload for indexing as ``folder/<first 12 hex of its SHA-256>/<safe name>`` (the same content
    uploaded twice lands in the same folder), after checking it decodes. When the name's ending does not
    say what the content is, the ending found from the content is appended (``clip.mp4`` holding a PNG
    is kept as ``clip.mp4.png``).

    Raises:
        HTTPProblem: 413 past ``limit``; 422 not a readable video or image.
    """
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(prefix=".incoming-", dir=folder)
    tmp = Path(raw)
    try:
        with os.fdopen(fd, "wb") as out:
            _, digest = copy_limited(source, out, limit)
        shown = safe_name(name)
        suffix = media_suffix(tmp, shown)
        typed = tmp.with_name(tmp.name + suffix)
        os.replace(tmp, typed)
        tmp = typed
        check_decodable(tmp, shown)
        final_name = shown if Path(shown).suffix.lower() == suffix else shown + suffix
        target_dir = folder / digest[:12]
        target_dir.mkdir(exist_ok=True)
        target = target_dir / final_name
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def spool_query(source: BinaryIO, name: str | None, folder: Path | None, limit: int) -> Path:
    """Write a query upload to a temporary file whose ending comes from its content; the caller deletes it.

    Raises:
        HTTPProblem: 413 past ``limit``.
    """
    import tempfile

    fd, raw = tempfile.mkstemp(prefix="vidsearch-query-", dir=folder)
    path = Path(raw)
    try:
        with os.fdopen(fd, "wb") as out:
            copy_limited(source, out, limit)
        final = path.with_name(path.name + media_suffix(path, safe_name(name)))
        os.replace(path, final)
        return final
    except BaseException:
        path.unlink(missing_ok=True)
        raise


_CONTENT_TYPE = re.compile(r"^\s*([a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)", re.I)


def media_type(header: str | None) -> str:
    """``multipart/form-data`` of ``multipart/form-data; boundary=...`` (lower case; '' when absent or malformed)."""
    m = _CONTENT_TYPE.match(header or "")
    return m.group(1).lower() if m else ""


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass


# ------------------------------------------------------------------------------ the gate (ASGI middleware)
# Paths anyone may read: the health check, the web page shell and the API docs (none holds collection data).
PUBLIC_PATHS = frozenset({"/health", "/", "/index.html", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/openapi.json"})
PUBLIC_PREFIXES = ("/static/", "/static-offline-docs/")
# GETs whose URL goes into <img src> / <video src>, which cannot send headers: ?token= is accepted there.
QUERY_TOKEN_PATHS = re.compile(r"^/videos/[^/]+/(thumbnail|media)$")
# Request bodies each POST route accepts (anything else: 415 before the body is read).
BODY_TYPES = {"/search": ("multipart/form-data", "application/x-www-form-urlencoded"),
              "/videos": ("application/json", "multipart/form-data")}


def problem_body(kind: str, message: str) -> bytes:
    import json

    return json.dumps({"error": {"type": kind, "message": message}}, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class DirectReply:
    """The whole answer of a direct route (see :class:`Gate`): status, body and extra headers.

    Attributes:
        error_type: the error's type name for the metrics (None for a 2xx).
    """

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    content_type: bytes = b"application/json"
    error_type: str | None = None


DirectRoute = Callable[[dict[str, Any], str | None, bytes], Awaitable[DirectReply | None]]
"""``route(scope, content_type, body)``: the answer, or None to hand the request to the app unchanged."""

class Forwarder(Protocol):
    """Requests another process answers (the writer worker, ``serve/workers.py``)."""

    def wants(self, method: str, path: str) -> bool:
        """Whether ``method path`` is answered by the other process."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on and relay the answer (OSError: the other process cannot be reached)."""


DIRECT_MAX_BODY = 64 * 1024
"""Largest body (Content-Length) a direct route reads; anything larger (an upload) goes through the app."""

DIRECT_MAX_MULTIPART = 4096
"""Largest multipart body a direct route reads: text fields take a few hundred bytes, so a larger one carries a
file, which no direct route answers. The app gets it unread and may refuse it before reading it (the search
route's 503 under load); read here, a 60 KB image was read and parsed twice and its 503 waited for both."""


class Gate:
    """ASGI middleware in front of the app: checks the token, the body's content type and size before the
    app reads a byte of the body, counts the body while it streams in (413 past the limit), turns anything
    unexpected into a logged JSON 500, and records every request in the metrics.

    Direct routes: for a ``(method, path)`` in ``direct`` with a small body (a Content-Length of at most
    :data:`DIRECT_MAX_BODY`), the gate reads the body and calls the route itself, without the framework's
    request objects, routing and response classes (a stored-range search costs about 0.2 ms of the event
    loop's time this way against 0.5-0.8 ms through FastAPI). A direct route returns None for what it does
    not handle (a file upload); the app then gets the request with the body replayed.

    Forwarded routes (several worker processes, see ``serve/workers.py``): a request for which
    ``forward.wants(method, path)`` holds is passed, after the same checks, to ``forward(scope, receive,
    send)`` (the writer process answers it and counts it in the metrics; this process does not).

    Args:
        app: the inner ASGI app.
        token: the bearer token (None: no auth).
        max_body: largest request body in bytes.
        observe: ``observe(scope, status, seconds, error_type)`` after each response (metrics).
        direct: ``{(method, path): route}`` answered by the gate (after the token and body checks).
        forward: requests answered by another process (None: this process answers everything).
    """

    def __init__(self, app: Any, token: str | None, max_body: int,
                 observe: Callable[[dict[str, Any], int, float, str | None], None],
                 direct: Mapping[tuple[str, str], DirectRoute] | None = None,
                 forward: Forwarder | None = None) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.observe = observe
        self.direct = dict(direct or {})
        self.forward = forward

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 0
        error_type: str | None = None
        forwarded = False

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            try:
                content_type, length = self._check(scope)
            except HTTPProblem as problem:
                error_type = problem.kind
                await _send_problem(send_tracked, problem.status, problem.kind, problem.message, dict(problem.headers or {}))
                return
            if self.forward is not None and self.forward.wants(scope.get("method", "GET"), scope.get("path", "")):
                forwarded = True
                try:
                    await self.forward(scope, self._limited(receive), send_tracked)
                except OSError as exc:  # the writer is restarting: the client may retry
                    if status != 0:
                        raise
                    forwarded = False
                    error_type = "OverloadedError"
                    await _send_problem(send_tracked, 503, "OverloadedError", "the worker that writes the collection "
                                        f"cannot be reached now ({exc.strerror or exc}); retry in a few seconds",
                                        {"Retry-After": "2"})
                return
            route = self.direct.get((scope.get("method", "GET"), scope.get("path", ""))) if self.direct else None
            limit = DIRECT_MAX_MULTIPART if media_type(content_type) == "multipart/form-data" else DIRECT_MAX_BODY
            if route is not None and length is not None and int(length) <= limit:
                body = await _read_body(receive, self.max_body)
                reply = await route(scope, content_type, body)
                if reply is not None:
                    status, error_type = reply.status, reply.error_type
                    headers = [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()),
                               *reply.headers]
                    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
                    await send({"type": "http.response.body", "body": reply.body})
                    return
                receive = _replay(body, receive)
            await self.app(scope, self._limited(receive), send_tracked)
        except ClientDisconnect:
            status = status or 499  # the client left before the answer (nginx's "client closed request")
        except HTTPProblem as problem:  # from reading a direct route's body (over the limit)
            error_type = problem.kind
            if status == 0:
                await _send_problem(send_tracked, problem.status, problem.kind, problem.message,
                                    dict(problem.headers or {}))
        except Exception as exc:  # a bug: one logged 500, never a traceback to the client
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            error_type = "InternalError"
            if status == 0:
                await _send_problem(send_tracked, 500, "InternalError",
                                    f"internal error ({type(exc).__name__}); the server log has the details")
        finally:
            state = scope.get("state") or {}
            if not forwarded:  # the writer counted it
                self.observe(scope, status or 500, time.perf_counter() - t0,
                             error_type or (state.get("error_type") if isinstance(state, dict) else None))

    def _check(self, scope: dict[str, Any]) -> tuple[str | None, str | None]:
        """Token, body type and declared size; returns (Content-Type, Content-Length) as sent."""
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        authorization = content_type = length = None
        for name, value in scope.get("headers", ()):  # only the three headers the gate reads are decoded
            name = name.lower()
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        if self.token is not None and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            given = bearer_token(authorization)
            if given is None and method == "GET" and QUERY_TOKEN_PATHS.match(path):
                from urllib.parse import parse_qs

                values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
                given = values[-1] if values else None
            check_token(self.token, given)
        if method == "POST" and path in BODY_TYPES:
            kind = media_type(content_type)
            if kind not in BODY_TYPES[path]:
                raise HTTPProblem(415, "UnsupportedMediaType", f"POST {path} takes a body of type "
                                  f"{' or '.join(BODY_TYPES[path])}, got {kind or 'none'!r}")
        if length is not None:
            if not length.strip().isdigit():
                raise HTTPProblem(400, "BadRequest", f"malformed Content-Length {length[:40]!r}")
            if int(length) > self.max_body:
                raise too_large(self.max_body)
        return content_type, length

    def _limited(self, receive: Any) -> Any:
        received = 0
        limit = self.max_body

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message
        return counted


async def _read_body(receive: Any, limit: int) -> bytes:
    """The whole request body (a direct route's; small by its Content-Length).

    Raises:
        ClientDisconnect: the client left.
        HTTPProblem: 413, more than ``limit`` bytes.
    """
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` (read already) first, then whatever ``receive`` gives."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def _send_problem(send: Any, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = problem_body(kind, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
