"""One exception hierarchy. Every class also subclasses the matching built-in, so callers may
catch either ``VidsearchError`` or the ordinary Python exception (like PyAV's
``InvalidDataError(FFmpegError, ValueError)``)."""

from __future__ import annotations


class VidsearchError(Exception):
    """Base of every error vidsearch raises on purpose."""


class DecodeError(VidsearchError, ValueError):
    """A file could not be read as a video or an image."""


class EncoderError(VidsearchError, RuntimeError):
    """A frame encoder could not be loaded, exported or run."""


class CollectionError(VidsearchError, ValueError):
    """A directory is not a usable collection (missing, not a collection, newer format...)."""


class CollectionLockedError(CollectionError, BlockingIOError):
    """Another process holds the collection's writer lock."""


class NotFoundError(VidsearchError, KeyError):
    """A video id, path or query reference does not exist in the collection."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class QueryError(VidsearchError, ValueError):
    """A query could not be parsed or produced no searchable segment."""


class NotFittedError(VidsearchError, ValueError):
    """A model or compressor was used before ``fit``."""


class ConfigError(VidsearchError, ValueError):
    """A configuration value is out of range or inconsistent."""


class AlignmentError(VidsearchError, ValueError):
    """Sequences that cannot be aligned (wrong shape, dimension mismatch, not unit-norm) or a bad option."""


class ShapeError(VidsearchError, ValueError):
    """Arrays of the wrong shape or dimension for an index, a vector file or a model."""


class OverloadedError(VidsearchError, RuntimeError):
    """The server cannot answer within its latency target now; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
