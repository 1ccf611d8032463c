"""Where a result came from: the one record every benchmark JSON and every ``vidsearch eval``
results.json carries, so a figure can be traced to the code and the machine state that made it.

``start()`` at the beginning of a run, ``finish(record)`` at the end::

    {"git_commit": "1a6e...", "src_dirty": false, "vidsearch_version": "0.4.0",
     "started_utc": "2026-12-01T10:00:00+00:00", "finished_utc": "2026-12-01T10:20:31+00:00",
     "duration_s": 1231.2,
     "load_start": {"loadavg_1_5_15": [0.4, 0.6, 0.7], "cpu_pressure_some": {"avg10": 1.2, "avg60": 3.0}},
     "load_end": {...}}

``git_commit`` / ``src_dirty`` are None when the code does not run from a git checkout (an
installed wheel) or git is missing; ``src_dirty`` says whether ``src/`` had uncommitted changes
(untracked files included), i.e. whether the commit alone reproduces the figures.
``cpu_pressure_some`` (Linux PSI, % of time some task waited for a CPU) is left out where the
kernel does not provide it. On a shared machine, read absolute times with the load beside them.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import time
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/vidsearch


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load_average() -> dict[str, Any]:
    """Load average over 1/5/15 minutes and CPU pressure (PSI "some" avg10/avg60) where available."""
    out: dict[str, Any] = {
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    }
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        out["cpu_pressure_some"] = {k: float(v) for k, v in (f.split("=") for f in some[1:3])}
    except (OSError, IndexError, ValueError):
        pass
    return out


def _git(repo: Path, *args: str) -> str | None:
    try:  # an argument list, no shell
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """``{"commit", "src_dirty"}`` of the checkout holding ``repo`` (default: the one vidsearch runs from)."""
    top = _git(repo or _PACKAGE_DIR, "rev-parse", "--show-toplevel")
    if not top:
        return {"commit": None, "src_dirty": None}
    commit = _git(Path(top), "rev-parse", "HEAD")
    status = _git(Path(top), "status", "--porcelain", "--", "src")
    return {"commit": commit, "src_dirty": bool(status) if status is not None else None}


def _version() -> str | None:
    try:
        from vidsearch import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - vidsearch is importable wherever this module is
        return None


def start(repo: Path | None = None) -> dict[str, Any]:
    """The record at the start of a run: code (commit, dirty ``src/``, version), time and load."""
    git = git_info(repo)
    return {
        "git_commit": git["commit"],
        "src_dirty": git["src_dirty"],
        "vidsearch_version": _version(),
        "started_utc": utc_now(),
        "load_start": load_average(),
        "_t0": time.monotonic(),
    }


def finish(record: dict[str, Any]) -> dict[str, Any]:
    """Complete a ``start()`` record (in place, and returned): end time, duration and load at the end."""
    t0 = record.pop("_t0", None)
    record["finished_utc"] = utc_now()
    record["duration_s"] = round(time.monotonic() - t0, 1) if t0 is not None else None
    record["load_end"] = load_average()
    return record


def git(record: dict[str, Any]) -> dict[str, Any]:
    """``{"commit", "src_dirty"}`` of a ``start()`` record: the top-level ``git`` object every result JSON carries
    (the bench scripts' ``_common.git_info`` writes the same), so one key finds the commit of any result."""
    return {"commit": record.get("git_commit"), "src_dirty": record.get("src_dirty")}


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record as written to JSON (without the private monotonic start time)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}
