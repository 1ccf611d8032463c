"""Render the serving section of docs/RESULTS.md from the headline run (:data:`RESULT`), or check that it matches.

    python bench/results_serve.py            # rewrite the block between the markers (appends the section if absent)
    python bench/results_serve.py --check    # exit 1 when the block differs from what the JSON says (tests run this)

Without the headline file (no full run of bench/serve.py yet) there is nothing to show: ``--check``
then passes only if docs/RESULTS.md has no serving block either.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# The headline run: the latest full sweep on the current code and bench (`python bench/serve.py --wait-quiet 120
# --name serve-ceiling --json`: the encoder curve and the ceiling measured in the run); the earlier headlines
# (serve.json, serve-vm5-retry.json, serve-hold-3.json) are rows of the image runs.
RESULT = BENCH / "results" / "serve-ceiling.json"
DOC = BENCH.parent / "docs" / "RESULTS.md"
BEGIN, END = "<!-- serve-table:begin (bench/results_serve.py) -->", "<!-- serve-table:end -->"
SECTION = f"""
## 10. Serving: `vidsearch serve` under load (issue #14)
`python bench/serve.py --wait-quiet 120 --name {RESULT.stem} --json` (`bench/results/{RESULT.stem}.json`, plot
`bench/results/{RESULT.stem}.png`; the tables below are rendered from the JSON by `python bench/results_serve.py`, and `tests/bench/test_serve_bench.py`
fails when they disagree). Two servers over the same collection of the real sample footage, in the same run: the
batch scheduler (default settings) and `--max-batch 1`; open-loop Poisson arrivals on loopback, stepped up past
saturation; latency from each request's scheduled arrival to its last byte.

"""
KIND_NAMES = {"image": "image (JPEG/PNG frame)", "clip": "10 s clip (H.264)", "ref": "stored range (`ref`)"}


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _met(flag: bool | None) -> str:
    return "-" if flag is None else ("met" if flag else "**missed**")


def _batches(metrics: dict[str, Any], mode: str, kind: str, scheduler: str) -> str:
    h = (((metrics.get(mode) or {}).get(kind) or {}).get("batch_size") or {}).get(scheduler) or {}
    if not h.get("count"):
        return "-"
    return f"{h['mean']:.1f} (p99 <= {float(h['p99_le']):g})" if h.get("p99_le") not in (None, "+Inf") else f"{h['mean']:.1f}"


def _runs_text(cfg: dict[str, Any], short: bool = False) -> str:
    """How the 2x figures were taken: "" for one overload run (runs before --overload-repeats), else the worst of N."""
    n = int(cfg.get("overload_repeats") or 1)
    if n == 1:
        return ""
    return f" (the worst of {n} runs)" if short else f"; the worst of {n} runs, the 503s counted over all"


def render(result: Path = RESULT) -> str:
    """The Markdown block (markers included) for ``result``."""
    d = json.loads(result.read_text())
    s, per, cfg = d["summary"], d.get("per_mode") or {}, d["config"]
    prov, git, coll = d.get("provenance") or {}, d.get("git") or {}, d.get("collection") or {}
    load = (prov.get("load_start") or {}).get("loadavg_1_5_15") or ["-"]
    psi = ((prov.get("load_start") or {}).get("cpu_pressure_some") or {}).get("avg10", "-")
    T = s["latency_target_ms"]
    lines = [BEGIN, "",
             f"Run of {prov.get('started_utc', '-')}: commit {str(git.get('commit'))[:8]} (src dirty: {git.get('src_dirty')}), "
             f"load at start {load[0]} (CPU pressure avg10 {psi} %), {prov.get('duration_s', '-')} s; "
             f"{coll.get('indexed', '-')} videos ({coll.get('segments', '-')} segments); latency target {T:g} ms "
             f"(`--latency-target-ms`, both servers); load generator's CPU: {_f((s.get('generator_cpu_share') or 0) * 100)} % "
             f"of the sweep's wall time.",
             "",
             "| query | p99 limit ms | scheduler: req/s at the limit (p99 ms) | `--max-batch 1`: req/s at the limit (p99 ms) "
             "| scheduler / batch 1 | encode batch, mean frames (scheduler) | at 2x: offered req/s, admitted p99 ms, 503s, 503 p99 ms "
             f"(scheduler{_runs_text(cfg)}) |",
             "|---|---|---|---|---|---|---|"]
    for kind in cfg["kinds"]:
        a, b = (per.get("scheduler") or {}).get(kind) or {}, (per.get("max_batch_1") or {}).get(kind) or {}
        ratio = a["qps_at_limit"] / b["qps_at_limit"] if a.get("qps_at_limit") and b.get("qps_at_limit") else None
        over = a.get("overload") or {}
        share = f"{over['n_503']}/{over['sent']}" if over.get("sent") else "-"
        lines.append(
            f"| {KIND_NAMES.get(kind, kind)} | {a.get('limit_ms', '-'):g} | {_f(a.get('qps_at_limit'))} ({_f(a.get('p99_ms_at_limit'))}) | "
            f"{_f(b.get('qps_at_limit'))} ({_f(b.get('p99_ms_at_limit'))}) | {'-' if ratio is None else f'{ratio:.2f}x'} | "
            f"{_batches(d.get('metrics') or {}, 'scheduler', kind, 'encode')} | "
            f"{_f(over.get('offered_rps'))}, {_f(over.get('admitted_p99_ms'))}, {share}, {_f(over.get('p99_503_ms'))} |")
    t = s.get("targets") or {}
    curve = s.get("encoder_curve_best_ratio")
    where = {"in this run": f" at batch {s.get('encoder_curve_best_size')}, measured in this run before the servers "
                            f"started"}.get(s.get("encoder_curve_measured") or "",
                                            ", read from bench/results/encoder-batch.json as it was then")
    why = "1.5x" if curve is None or curve >= 1.5 else f"0.9 x the encoder curve's best {curve:.2f}x{where}"
    ratio_text = "-" if s.get("ratio") is None else f"{s['ratio']:.2f}x"
    growth_text = "-" if s.get("rss_growth_pct") is None else f"{s['rss_growth_pct']:+.1f} %"
    lines += ["",
              "| target | measured | |",
              "|---|---|---|",
              f"| image queries: scheduler / `--max-batch 1` throughput at p99 <= {T:g} ms, >= {s['ratio_target']:.2f}x ({why}) | "
              f"{ratio_text} ({_f(s.get('image_qps_at_target_scheduler'))} / "
              f"{_f(s.get('image_qps_at_target_max_batch_1'))} req/s) | {_met(t.get('image_ratio'))} |",
              f"| stored-range queries: >= 1,000 req/s at p99 <= {s.get('ref_p99_limit_ms', 50):g} ms | "
              f"{_f(s.get('ref_qps_at_50ms_p99'))} req/s | {_met(t.get('ref_1000_rps_at_50ms'))} |",
              f"| at 2x the sustainable image load ({_f(s.get('overload_offered_rps'))} req/s): admitted p99 <= {T:g} ms"
              f"{_runs_text(cfg, short=True)} | "
              f"{_f(s.get('admitted_p99_at_2x_ms'))} ms | {_met(t.get('admitted_p99_at_2x_within_target'))} |",
              f"| at 2x: the excess gets 503 within 20 ms (p99{_runs_text(cfg)}) | {_f(s.get('overload_503_p99_ms'))} ms "
              f"({s.get('overload_503_count', '-')} 503s) | {_met(t.get('overload_503_within_20ms'))} |",
              f"| zero 5xx over the sweep | {s.get('five_xx_total', '-')} | {_met(t.get('zero_5xx'))} |",
              f"| server RSS grows < 10 % over {cfg.get('rss_requests', '-'):,} requests after warm-up | "
              f"{growth_text} ({_f(s.get('rss_before_mb'), 0)} -> "
              f"{_f(s.get('rss_after_mb'), 0)} MiB) | {_met(t.get('rss_growth_below_10pct'))} |",
              ""]
    ceiling = d.get("ceiling") or {}
    if ceiling.get("modes"):
        a, b = (ceiling["modes"].get(m) or {} for m in ("scheduler", "max_batch_1"))
        lines += [f"Ceiling (after the sweep, each server alone with a {ceiling['latency_target_ms'] / 1000:g} s latency "
                  f"target so that nothing is refused, {ceiling['requests']} image queries closed loop at concurrency "
                  f"{ceiling['concurrency']}): scheduler {_f(a.get('answered_rps'))} req/s (p99 {_f(a.get('p99_ms'))} ms, "
                  f"encode batches of {_f(a.get('encode_batch_mean'))} frames, {_f(a.get('server_cpu_ms_per_request'))} "
                  f"ms of CPU a request), `--max-batch 1` {_f(b.get('answered_rps'))} req/s (p99 {_f(b.get('p99_ms'))} "
                  f"ms, {_f(b.get('server_cpu_ms_per_request'))} ms of CPU a request): "
                  f"{'-' if ceiling.get('ratio') is None else format(ceiling['ratio'], '.2f') + 'x'} at any latency.", ""]
    lines.append(END)
    return "\n".join(lines)


WORKERS_RESULT = BENCH / "results" / "serve-workers2.json"
W_BEGIN, W_END = "<!-- serve-workers-table:begin (bench/results_serve.py) -->", "<!-- serve-workers-table:end -->"


def render_workers(result: Path = WORKERS_RESULT) -> str:
    """The Markdown block (markers included) of a run whose scheduler server had ``--workers N``."""
    d = json.loads(result.read_text())
    per, cfg, prov, git = d.get("per_mode") or {}, d["config"], d.get("provenance") or {}, d.get("git") or {}
    load = (prov.get("load_start") or {}).get("loadavg_1_5_15") or ["-"]
    lines = [W_BEGIN, "",
             f"Run of {prov.get('started_utc', '-')}: `{d.get('command', '-')}`, commit {str(git.get('commit'))[:8]} "
             f"(src dirty: {git.get('src_dirty')}), load at start {load[0]}, {prov.get('duration_s', '-')} s; the "
             f"scheduler's server with `{cfg.get('scheduler_args') or '-'}`, the other `--max-batch 1` in one process.",
             "",
             "| query | server | req/s at p99 <= limit (p99 ms) | at 2x: offered req/s, admitted p99 ms, 503s, 503 p99 ms |",
             "|---|---|---|---|"]
    for kind in cfg["kinds"]:
        for mode, name in (("scheduler", f"scheduler, `{cfg.get('scheduler_args') or ''}`"),
                           ("max_batch_1", "`--max-batch 1`, one process")):
            a = (per.get(mode) or {}).get(kind) or {}
            over = a.get("overload") or {}
            share = f"{over['n_503']}/{over['sent']}" if over.get("sent") else "-"
            lines.append(f"| {KIND_NAMES.get(kind, kind)} (limit {a.get('limit_ms', '-'):g} ms) | {name} | "
                         f"{_f(a.get('qps_at_limit'))} ({_f(a.get('p99_ms_at_limit'))}) | {_f(over.get('offered_rps'))}, "
                         f"{_f(over.get('admitted_p99_ms'))}, {share}, {_f(over.get('p99_503_ms'))} |")
    lines += ["", W_END]
    return "\n".join(lines)


I_BEGIN, I_END = "<!-- serve-image-runs-table:begin (bench/results_serve.py) -->", "<!-- serve-image-runs-table:end -->"
# Image-only runs of bench/serve.py (``--kinds image --name NAME``), oldest first: what each one changed.
IMAGE_RUNS = (
    ("serve", "session 13's headline full sweep (the Intel VM of then, `insets=false` queries; bdfeeff)"),
    ("serve-image-baseline", "steps of >= 100 requests"),
    ("serve-image-300", "steps of >= 300 requests (`--image-min-requests 300`)"),
    ("serve-light", "the same, the scheduler's server with `--light-encoder sscd-distilled`"),
    ("serve-headroom", "full sweep: admission headroom 0.1, steps of >= 300 requests, the highest passing rate "
                       "confirmed once, each run judged alone"),
    ("serve-image-early", "the same (images only), and uploads refused before their body is read"),
    ("serve-strict-confirm", "the same, full sweep"),
    ("serve-pooled", "full sweep, the runs of a rate judged together (refusals pooled)"),
    ("serve-light-2", "the same (images only), the scheduler's server with `--light-encoder sscd-distilled`"),
    ("serve-bisect", "full sweep, a bisection step after a failed confirmation"),
    ("serve-repeat", "the final full sweep again (headroom 0.2, the default now), straight after it"),
    ("serve-light-before", "another VM (AVX2-only AMD EPYC, slower: SSCD 18 images/s), `--light-encoder "
                           "sscd-distilled`, as `serve-light-2`"),
    ("serve-light-after", "the same (`--light-encoder sscd-distilled`), a pool query predicted to lose min(own, busy / 2) "
                          "to the encoder's batches, its cost learnt as if alone"),
    ("serve-light-after-2", "the same (`--light-encoder sscd-distilled`), its cost learnt as measured"),
    ("serve-insets-default", "the AMD VM, full sweep, queries sent with the server's defaults (insets on), their "
                             "insets batched by the encode scheduler (the code now); no light encoder"),
    ("serve-intel-defaults", "the Intel VM (AVX-512) again, full sweep, the server's defaults (insets on), after "
                             "this session's stored-range CPU cuts (vote kernel, top-k, windows)"),
    ("serve-vm5-full", "a faster Intel VM (AVX-512; the test suite 1.7x faster), full sweep, the server's defaults"),
    ("serve-image-500", "the same VM, images only, `--latency-target-ms 500` (the server's default target)"),
    ("serve-image-headroom0", "the same VM, images only, both servers with `--admission-headroom 0`"),
    ("serve-image-retry", "the same VM, images only, default settings; a step failing on refusals alone is run again "
                          "and judged with its repeat (the bench since 7b08ca7)"),
    ("serve-image-retry-2", "the same again, after the headline sweep"),
    ("serve-image-switch1ms", "the same with a 1 ms GIL switch interval in the server (tried, reverted: 503s at 2x "
                              "not faster)"),
    ("serve-image-nice", "the same with the server's worker threads at nice 5 (tried, reverted: see the text)"),
    ("serve-image-nice-2", "the same again"),
    ("serve-vm5-retry", "session 19's headline full sweep (the same VM), every target met in one sweep"),
    ("serve-hold", "full sweep, uploads admitted once their form is read, their units held before they are stored "
                   "(`QueryService.hold`, the store time's 90th percentile)"),
    ("serve-hold-image", "the same, images only"),
    ("serve-control-66b5ae9", "control: the code before the hold (66b5ae9, from a worktree), images only, straight "
                              "after"),
    ("serve-hold-image-2", "images only after the headline sweep (2695554: its code, a comment and a test changed), "
                           "three runs at 2x"),
    ("serve-hold-3", "session 20's headline full sweep (dde9394); its image target, 1.03x, came from an encoder curve "
                     "measured on the AMD VM (1.15x); this VM's curve gives 1.32-1.35x"),
)


def render_image_runs(results: Path = BENCH / "results") -> str:
    """The Markdown block (markers included) of the image-only runs in :data:`IMAGE_RUNS`."""
    lines = [I_BEGIN, "",
             "| run | commit (src dirty) | scheduler req/s at p99 <= target (p99 ms) | `--max-batch 1` req/s (p99 ms) | "
             "scheduler / batch 1 | at 2x: offered req/s, admitted p99 ms, 503s, 503 p99 ms (scheduler) |",
             "|---|---|---|---|---|---|"]
    same_encoder: list[float] = []  # the ratios of the runs whose two servers ran the same encoder
    no_ratio = 0  # such runs in which a server passed no rate (no ratio)
    target = None
    for name, label in (*IMAGE_RUNS, (RESULT.stem, "")):
        d = json.loads((results / f"{name}.json").read_text())
        per, git = d.get("per_mode") or {}, d.get("git") or {}
        a, b = (per.get("scheduler") or {}).get("image") or {}, (per.get("max_batch_1") or {}).get("image") or {}
        ratio = a["qps_at_limit"] / b["qps_at_limit"] if a.get("qps_at_limit") and b.get("qps_at_limit") else None
        if "--light-encoder" not in str((d.get("config") or {}).get("scheduler_args", "")):
            if ratio is not None:
                same_encoder.append(ratio)
            else:
                no_ratio += 1
        if not label:  # the headline run: counted above, its row is the serving table's
            target = (d.get("summary") or {}).get("ratio_target")
            continue
        over = a.get("overload") or {}
        share = f"{over['n_503']}/{over['sent']}" if over.get("sent") else "-"
        lines.append(f"| {label} (`{name}.json`) | {str(git.get('commit'))[:7]} ({git.get('src_dirty')}) | "
                     f"{_f(a.get('qps_at_limit'))} ({_f(a.get('p99_ms_at_limit'))}) | "
                     f"{_f(b.get('qps_at_limit'))} ({_f(b.get('p99_ms_at_limit'))}) | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | {_f(over.get('offered_rps'))}, "
                     f"{_f(over.get('admitted_p99_ms'))}, {share}, {_f(over.get('p99_503_ms'))} |")
    if same_encoder and target:
        met = sum(r >= target for r in same_encoder)
        lines += ["", f"Over these runs and the headline run above, with the same encoder on both servers "
                      f"({len(same_encoder)} sweeps): scheduler / `--max-batch 1` median "
                      f"{statistics.median(same_encoder):.2f}x, range {min(same_encoder):.2f}x-{max(same_encoder):.2f}x; "
                      f"{met} of {len(same_encoder)} at or above the {target:.2f}x target"
                      + (f"; in {no_ratio} more a server passed no rate (no ratio)." if no_ratio else ".")]
    lines += ["", I_END]
    return "\n".join(lines)


def updated(doc: str, result: Path = RESULT, workers: Path = WORKERS_RESULT) -> str:
    """``doc`` with its serving block rendered from ``result`` (the section appended when it has no block), and
    its workers block (where the document has one) from ``workers``."""
    if BEGIN not in doc or END not in doc:
        doc = doc.rstrip("\n") + "\n" + SECTION + render(result) + "\n"
    else:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + render(result) + tail
    if W_BEGIN in doc and W_END in doc and workers.is_file():
        head, rest = doc.split(W_BEGIN, 1)
        _, tail = rest.split(W_END, 1)
        doc = head + render_workers(workers) + tail
    if I_BEGIN in doc and I_END in doc:
        head, rest = doc.split(I_BEGIN, 1)
        _, tail = rest.split(I_END, 1)
        doc = head + render_image_runs(workers.parent) + tail
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    doc = DOC.read_text()
    if not RESULT.is_file():
        if BEGIN in doc:
            print(f"docs/RESULTS.md has a serving block but {RESULT} is missing; run python bench/serve.py", file=sys.stderr)
            return 1
        print(f"no {RESULT.name} yet (run python bench/serve.py); nothing to render", file=sys.stderr)
        return 0
    new = updated(doc)
    if args.check:
        if new != doc:
            print("docs/RESULTS.md's serving tables differ from bench/results/serve.json; run python bench/results_serve.py",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
