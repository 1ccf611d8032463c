"""``vidsearch serve --workers N``: N server processes on one listening socket, one of them the writer.

Python runs one thread at a time per process, so one server process uses about one core for its HTTP
handling and searches however many cores the machine has (a stored-range query is ~1 ms of the
interpreter's time, most of it not in code that releases the GIL). Several processes share the socket
the parent bound (forked after binding: the kernel hands each new connection to one of the processes
waiting in ``accept``); each opens its own :class:`~vidsearch.search.engine.Engine` over the same
memory-mapped vector files (read-only; the page cache holds them once) and runs its own batch
schedulers.

One process writes. Worker 0 is the *writer*: it alone runs the index jobs and removals (the
collection's writer lock is taken by one process only, and ``GET /jobs/{id}`` finds every job in one
place). It also listens on a private Unix socket, and the other workers forward the routes that write
or read jobs (:data:`WRITER_ROUTES`) to it there, unchanged (headers, token, body streamed), relaying
its answer. The others see a commit at their next refresh (``--refresh-seconds``, 1 s), as they see one
made by ``vidsearch index`` from a shell.

The parent only supervises: it forks the workers (before any thread or engine exists in it), waits
until each serves, announces, forwards SIGTERM/SIGINT, forks a worker again when one dies (the writer
keeps its role), and exits when they have stopped. Prometheus metrics are kept in multiprocess mode
(``prometheus_client.multiprocess``: one file per process in a private folder), so ``/metrics``, from
whichever worker answers, counts the requests of all of them; the batch schedulers' live state
(queue, service-time model) is the answering worker's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

WRITER_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"^/videos/?$")),
    ("DELETE", re.compile(r"^/videos/[^/]+$")),
    ("GET", re.compile(r"^/jobs(/[^/]+)?/?$")),
)
"""(method, path) of the requests only the writer answers: index jobs, removals, the job list."""

# Hop-by-hop headers (RFC 9110 7.6.1): not passed on between the two connections.
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                  b"upgrade"})


@dataclass(frozen=True)
class WorkerRole:
    """Which worker of ``count`` this process is.

    Attributes:
        index: 0 for the writer.
        count: workers in all (1: a single process, which is its own writer).
        writer_socket: the Unix socket the writer also listens on (None with one worker).
    """

    index: int = 0
    count: int = 1
    writer_socket: str | None = None

    @property
    def writer(self) -> bool:
        """Whether this process runs the index jobs."""
        return self.index == 0


def for_writer(method: str, path: str) -> bool:
    """Whether ``method path`` is one of :data:`WRITER_ROUTES`."""
    return any(method == m and pattern.match(path) for m, pattern in WRITER_ROUTES)


class WriterForwarder:
    """The :class:`~vidsearch.serve.security.Forwarder` of a worker that does not write: the
    :data:`WRITER_ROUTES` go to the writer's Unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def wants(self, method: str, path: str) -> bool:
        return for_writer(method, path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await forward(scope, receive, send, self.socket_path)


async def forward(scope: dict[str, Any], receive: Any, send: Any, socket_path: str) -> None:
    """Send the request of ``scope`` (its body from ``receive``) to the writer over ``socket_path`` and relay
    its answer to ``send``, status, headers and body as they come (HTTP/1.1, one request per connection).

    Raises:
        OSError: the writer cannot be reached (the caller answers 503).
    """
    import asyncio

    import h11

    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        conn = h11.Connection(h11.CLIENT)
        target = scope.get("raw_path") or scope["path"].encode("utf-8")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in _HOP and k.lower() != b"host"]
        headers.insert(0, (b"host", b"writer"))
        headers.append((b"connection", b"close"))
        if scope["method"] not in ("GET", "HEAD", "DELETE") and not any(k.lower() == b"content-length"
                                                                          for k, _ in headers):
            headers.append((b"transfer-encoding", b"chunked"))
        writer.write(conn.send(h11.Request(method=scope["method"], target=target, headers=headers)) or b"")
        while True:  # the body, as the client sends it
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if chunk:
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
            if not message.get("more_body", False):
                break
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        started = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                kept = [(k, v) for k, v in event.headers.raw_items() if k.lower() not in _HOP]
                await send({"type": "http.response.start", "status": event.status_code, "headers": kept})
                started = True
            elif isinstance(event, h11.Data):
                await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                if started:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# ------------------------------------------------------------------------------------------ the parent
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir() -> str:
    """A fresh folder for the workers' Prometheus files, set in the environment before ``prometheus_client``
    is imported (it reads the variable once, at import). Returns its path."""
    path = tempfile.mkdtemp(prefix="vidsearch-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    return path


def run_workers(count: int, sock: socket.socket, serve_one: Callable[[WorkerRole, list[socket.socket], Callable[[], None]], int],
                announce: Callable[[], None], start_timeout: float = 600.0) -> int:
    """Fork ``count`` workers serving ``sock`` and supervise them until SIGTERM/SIGINT (or until they stop).

    Args:
        count: workers (>= 2).
        sock: the bound listening socket (inherited by every worker).
        serve_one: ``serve_one(role, sockets, ready)`` runs in a worker: serve ``sockets`` until told to stop,
            call ``ready()`` once serving; returns the exit code.
        announce: called once every worker serves.
        start_timeout: seconds a worker may take to start (engine, warm-up) before the start counts as failed.

    Returns:
        the exit code: 0 after a clean stop, 1 when the workers could not start.
    """
    run_dir = tempfile.mkdtemp(prefix="vidsearch-workers-")
    writer_path = os.path.join(run_dir, "writer.sock")
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(writer_path)
    private.listen(64)
    ready_r, ready_w = os.pipe()
    children: dict[int, WorkerRole] = {}
    stopping = threading.Event()

    def spawn(role: WorkerRole) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(ready_r)
                _die_with_parent()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                sockets = [sock, private] if role.writer else [sock]
                if not role.writer:
                    private.close()

                def ready() -> None:
                    os.write(ready_w, bytes([role.index]))

                code = serve_one(role, sockets, ready)
            except BaseException:  # never return into the parent's code
                log.exception("worker %d failed", role.index)
            finally:
                os._exit(code)
        children[pid] = role

    def stop(signum: int, frame: Any) -> None:
        stopping.set()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(count):
            spawn(WorkerRole(i, count, writer_path))
        if not _wait_ready(ready_r, count, children, start_timeout, stopping):
            stop(signal.SIGTERM, None)
            _reap_all(children, 20.0)
            return 1
        announce()
        while children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            role = children.pop(pid, None)
            if role is None:
                continue
            _mark_dead(pid)
            if not stopping.is_set():
                log.error("worker %d (pid %d) exited with status %d; starting it again", role.index, pid, status)
                time.sleep(0.5)
                spawn(role)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop(signal.SIGTERM, None)
        _reap_all(children, 20.0)
        for fd in (ready_r, ready_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        private.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        metrics_dir = os.environ.get(METRICS_DIR_ENV)
        if metrics_dir and os.path.basename(metrics_dir).startswith("vidsearch-metrics-"):
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait_ready(fd: int, count: int, children: dict[int, WorkerRole], timeout: float,
                stopping: threading.Event) -> bool:
    """Until ``count`` workers said they serve (False: one exited first, a stop was asked, or the timeout)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if stopping.is_set() or time.monotonic() > deadline:
            return False
        for pid in list(children):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                children.pop(pid)
                log.error("a worker exited while starting; stopping the others")
                return False
        readable, _, _ = select.select([fd], [], [], 0.1)
        if readable:
            seen.update(os.read(fd, 64))
    return True


def _reap_all(children: dict[int, WorkerRole], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while children and time.monotonic() < deadline:
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            children.pop(pid, None)
            _mark_dead(pid)
        time.sleep(0.05)
    for pid in list(children):  # past the graceful shutdown: SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        children.pop(pid, None)


def _mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get(METRICS_DIR_ENV):
        with contextlib.suppress(Exception):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the parent dies (a SIGKILL of the parent leaves no orphan serving)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)
