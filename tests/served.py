"""Helpers for tests that start ``vidsearch serve`` as a process."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any


def announced(proc: subprocess.Popen, timeout: float = 120.0) -> dict[str, Any]:
    """The JSON object ``vidsearch serve --json`` prints once it serves (AssertionError if it exits or is silent)."""
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"vidsearch serve exited ({proc.wait()}): {proc.stderr.read()}")
        lines.append(line)
        if line.startswith("}"):
            info: dict[str, Any] = json.loads("".join(lines))
            return info
    raise AssertionError("vidsearch serve did not announce its URL")
