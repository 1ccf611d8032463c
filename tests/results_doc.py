"""What the docs/RESULTS.md checks share: a marked table's rows and a result file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def marked_rows(name: str) -> list[str]:
    """The rows (stripped, header and separator left out) of the table between ``<!-- NAME:begin -->`` and
    ``<!-- NAME:end -->`` in docs/RESULTS.md."""
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    found = re.search(rf"<!-- {re.escape(name)}:begin -->(.*?)<!-- {re.escape(name)}:end -->", doc, re.S)
    assert found, f"the {name} markers are missing from docs/RESULTS.md"
    return [r.strip() for r in found.group(1).strip().splitlines()[2:]]


def marked_cells(name: str) -> list[list[str]]:
    """:func:`marked_rows`, each split into its stripped cells."""
    return [[c.strip() for c in r.strip("|").split("|")] for r in marked_rows(name)]


def result(name: str) -> dict[str, Any]:
    """bench/results/NAME (a JSON file)."""
    data: dict[str, Any] = json.loads((ROOT / "bench" / "results" / name).read_text())
    return data
