"""One way to open an ONNX Runtime session (frame encoders, PWA, temporal models, the comparator) and to read the
JSON description a trained model carries in its metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vidsearch.errors import EncoderError


def default_threads() -> int:
    """Intra-op threads of a frame encoder: ``$VIDSEARCH_THREADS``, else every core."""
    return int(os.environ.get("VIDSEARCH_THREADS", "0")) or (os.cpu_count() or 1)


def session_options(threads: int | None = None) -> Any:
    """The ``SessionOptions`` every vidsearch session uses: ``threads`` intra-op threads (None:
    :func:`default_threads`), one inter-op thread, no spinning, exact int8 products on every x86 CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle ORT threads spinning after a run stole the cores from the search that follows (bench/latency.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # x86 CPUs without VNNI multiply uint8 activations by int8 weights with vpmaddubsw, whose 16-bit sums saturate
    # (ONNX Runtime PR #12088); this option makes ORT use uint8 x uint8 products there for weights outside
    # [-64, 63], and changes nothing on VNNI CPUs. Measured on an AVX2-only AMD EPYC with the default int8
    # effnet-lite0, 80 held-out real frames: cosine to fp32 p1 0.896 (mean 0.959) without it, 0.9925 (0.9970,
    # as on a VNNI CPU) with it, at 1.18x / 1.21x fp32's images/s (1 / 2 threads) instead of 1.39x / 1.73x.
    # SSCD's shipped int8 model gives the same vectors at the same speed either way.
    options.add_session_config_entry("session.x64quantprecision", "1")
    return options


def open_session(path: str | os.PathLike[str], threads: int | None = None, *, fix: str) -> Any:
    """An ONNX Runtime CPU session of ``path`` with :func:`session_options`.

    Raises:
        EncoderError: ONNX Runtime cannot load the file (the message ends with ``fix``: what to do).
    """
    import onnxruntime as ort

    options = session_options(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise EncoderError(f"could not load ONNX model {path}: {exc}; {fix}") from exc


def read_description(path: Path, session: Any, *, key: str, model_format: str, max_version: int, what: str,
                     fix: str) -> dict[str, Any]:
    """The JSON object a trained model carries under metadata ``key``, checked for its ``format`` and a
    ``format_version`` this vidsearch reads (1 to ``max_version``); the caller checks its own fields.

    Raises:
        EncoderError: no such metadata, not JSON, another format, or a newer version (the message ends with
            ``fix``, or says to upgrade).
    """
    raw = session.get_modelmeta().custom_metadata_map.get(key)
    if raw is None:
        raise EncoderError(f"{path}: an ONNX model without the {key!r} metadata; {fix}")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise EncoderError(f"{path}: unreadable {key!r} metadata ({exc}); {fix}") from exc
    if not isinstance(meta, dict) or meta.get("format") != model_format:
        raise EncoderError(f"{path}: metadata format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                           f"expected {model_format!r}; {fix}")
    if type(meta.get("format_version")) is not int or meta["format_version"] > max_version:
        raise EncoderError(f"{path}: {what} format {meta.get('format_version')!r}, this vidsearch reads 1 to "
                           f"{max_version}; upgrade vidsearch or retrain the model")
    return meta
