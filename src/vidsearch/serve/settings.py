"""``ServeSettings``: everything ``vidsearch serve`` is told on its command line, in one frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vidsearch.encode import registry
from vidsearch.errors import ConfigError

MAX_K = 1000
"""Largest ``k`` a search may ask for; a larger one is refused with 400 (not clamped: the client learns
the limit instead of silently getting fewer results than it asked for)."""


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs.

    Attributes:
        host, port: where uvicorn listens (loopback by default).
        token: when set, every route but ``/health`` and the page shell needs ``Authorization: Bearer <token>``.
        allow_roots: folders under which ``POST /videos`` may index files by path (none: indexing by path is
            refused; uploads still work).
        max_upload_mb: largest request body (an upload) accepted, in MiB; enforced while it streams in.
        latency_target_ms: the batch schedulers' latency target per request.
        memory_budget_mb: memory the encoder's batches may use.
        max_batch: largest batch (frames for the encoder, queries for the index); 1 turns batching off.
        max_query_seconds: longest query video accepted (longer: 400), so one query cannot fill memory.
        decode_workers: threads decoding query files.
        max_pending_decodes: queries waiting for a decode thread at most; more are refused at once with 503.
        upload_dir: where files uploaded for indexing are kept (default: ``uploads/`` in the collection).
        refresh_seconds: how often the server looks for commits made by other writers (the CLI).
        warm_up: measure the encoder's service times before serving (the schedulers need them to size
            batches; tests turn it off for speed).
        ref_latency_target_ms: the search scheduler's latency target (stored-range queries are only a
            search: the issue's 50 ms); the search stage of a file query is held to it too.
        encode_workers: encode batches run at once, each on its own ONNX Runtime session with
            ``cores / encode_workers`` threads (see ``QueryService``).
        workers: server processes sharing the listening socket (``serve/workers.py``): each searches
            with its own engine over the same files; worker 0 alone runs index jobs and removals.
        light_encoder: a cheaper encoder in the collection encoder's space (``EncoderSpec.queries_for``, e.g.
            ``sscd-distilled`` for ``sscd``): a file query that the collection's encoder cannot serve within the
            latency target is encoded by it instead, when that fits, and its answer names it
            (``query_encoder``); None: such queries get a 503.
        admission_headroom: fraction of ``latency_target_ms`` kept back when admitting file queries (images,
            clips): they are admitted when predicted within ``(1 - admission_headroom) * latency_target_ms``
            (:attr:`file_target_ms`). The server's clock starts when its handler runs; a client also waits for
            the connection, the request's parsing on a busy event loop and the answer's last bytes, which the
            server cannot see. At twice the sustainable image load, for a 200 ms target, the admitted p99 was
            202 and 208 ms with no headroom (bench/results/serve-image-300.json, serve-image-baseline.json), and
            200.7, 164.7, 178.7 and 202.3 ms with 0.1 (serve-headroom, serve-image-early, serve-pooled, the
            sweep at 65cb0d3): hence 0.2.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    allow_roots: tuple[Path, ...] = ()
    max_upload_mb: float = 512.0
    latency_target_ms: float = 500.0
    memory_budget_mb: float = 1024.0
    max_batch: int = 32
    max_query_seconds: float = 120.0
    decode_workers: int = 2
    max_pending_decodes: int = 16
    upload_dir: Path | None = None
    refresh_seconds: float = 1.0
    warm_up: bool = True
    batch_shapes: tuple[int, ...] = field(default=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    ref_latency_target_ms: float = 50.0
    encode_workers: int = 1
    workers: int = 1
    light_encoder: str | None = None
    admission_headroom: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the token is empty; give a non-empty --token (or unset VIDSEARCH_TOKEN)")
        for name in ("max_upload_mb", "latency_target_ms", "ref_latency_target_ms", "memory_budget_mb", "max_query_seconds", "refresh_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("max_batch", "decode_workers", "max_pending_decodes", "encode_workers", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        headroom = self.admission_headroom
        if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 0 <= headroom < 1:
            raise ConfigError(f"admission_headroom must be a fraction of the latency target in [0, 1), got "
                              f"{headroom!r}; e.g. 0.2 (admit file queries predicted within 80 % of the target)")
        if self.light_encoder is not None and self.light_encoder not in registry.ENCODERS:
            raise ConfigError(f"light_encoder must be one of {', '.join(registry.ENCODERS)}, got {self.light_encoder!r}")
        object.__setattr__(self, "allow_roots", tuple(Path(r) for r in self.allow_roots))
        for root in self.allow_roots:
            if not root.is_dir():
                raise ConfigError(f"--allow-root {root}: expected an existing folder, found "
                                  f"{'a file' if root.exists() else 'nothing'}")

    @property
    def file_target_ms(self) -> float:
        """The target file queries are admitted against: ``latency_target_ms`` less the headroom."""
        return self.latency_target_ms * (1.0 - self.admission_headroom)

    @property
    def search_target_ms(self) -> float:
        """The search scheduler's target: the stored-range target, within the overall one."""
        return min(self.latency_target_ms, self.ref_latency_target_ms)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def shapes(self) -> tuple[int, ...]:
        """Batch sizes the encoder runs with (ONNX Runtime's arena keeps one set of buffers per shape):
        ``batch_shapes`` up to ``max_batch``, and ``max_batch`` itself."""
        return tuple(sorted({s for s in self.batch_shapes if s <= self.max_batch} | {self.max_batch}))
