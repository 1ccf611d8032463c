"""Render the engine section of docs/RESULTS.md from bench/results/engine-*.json, or check that it matches.

    python bench/results_engine.py            # rewrite the block between the markers in docs/RESULTS.md
    python bench/results_engine.py --check    # exit 1 when the block differs from what the JSON says (tests run this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DOC = BENCH.parent / "docs" / "RESULTS.md"
BEGIN, END = "<!-- engine-table:begin (bench/results_engine.py) -->", "<!-- engine-table:end -->"


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render(results: Path = RESULTS) -> str:
    """The Markdown block (markers included) for every engine-*.json in ``results``."""
    lines = [BEGIN, "",
             "| segments | engine p50 / p99 ms | bare index p50 ms | engine / bare | recall@10 | index B/vector | "
             "batch QPS ours / FAISS (recall) | build s ours / FAISS | engine open s | load at start | commit (src dirty) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(results.glob("engine-*.json"), key=lambda p: json.loads(p.read_text())["summary"]["segments"]):
        d = json.loads(path.read_text())
        s = d["summary"]
        ours_b = (d.get("batch") or {}).get("best") or {}
        peer = d.get("faiss_ivfpq_refine") or {}
        peer_b = peer.get("best") or {}
        build = (d.get("rebuild") or {}).get("index_build_s")
        load = d.get("provenance", {}).get("load_start") or {}
        git = d.get("git", {})
        lines.append(
            f"| {s['segments']:,} | {_f(s['engine_p50_ms'])} / {_f(s['engine_p99_ms'])} | {_f(s['bare_index_p50_ms'])} | "
            f"{s['engine_p50_ms'] / s['bare_index_p50_ms']:.2f}x | {_f(s['recall10'])} | {s['ram_bytes_per_vector']:.1f} | "
            f"{_f(ours_b.get('batch_qps'), 0)} ({_f(ours_b.get('recall10'))}) / {_f(peer_b.get('batch_qps'), 0)} "
            f"({_f(peer_b.get('recall10'))}) | {_f(build, 0)} / {_f(peer.get('build_s'), 0)} | {_f(d.get('engine_open_s'), 2)} | "
            f"{(load.get('loadavg_1_5_15') or ['-'])[0]} | {str(git.get('commit', '-'))[:8]} ({git.get('src_dirty')}) |")
        stale = d.get("stale_reader")
        if stale:
            lines.append(f"| stale reader, {d['config']['stale_segments']:,} segments + 20 videos | open + first search "
                         f"{_f(stale['open_and_search_s'], 2)} s ({_f(stale.get('with_import_s'), 2)} s with Python's import of vidsearch), state {stale['state']}, {stale['exact_rows']} rows "
                         f"scanned exactly, top hit correct: {stale['top'] == stale['expected_top']} | | | | | | | | | |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        print(f"{DOC} has no engine block ({BEGIN} ... {END})", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render() + tail
    if args.check:
        if new != doc:
            print("docs/RESULTS.md's engine table differs from bench/results/engine-*.json; run "
                  "python bench/results_engine.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
