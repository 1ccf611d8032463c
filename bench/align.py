"""Re-ranking cost of the temporal alignment kernels (vidsearch.search.align), with peers.

    python bench/align.py [--repeats 5] [--candidates 200] [--json]

Random L2-normalised float32 vectors from ``numpy.random.default_rng(--seed)``; every figure is the
best of ``--repeats`` timed runs after ``--warmups`` untimed ones (numba compiles or loads its cache
before any timing).

1. Throughput: candidate pairs per second for query and candidates of the same length L in
   (10, 30, 60, 100) and d in (256, 512), for ``dtw``, ``bidtw`` and ``subdtw``:
   * ``rerank``: ``rerank(query, K candidates, method)`` (top=None: every pair aligned, with paths;
     one matrix product for all cost matrices, one compiled call for all DPs);
   * ``pair_call``: the one-pair functions (``dtw(a, b)`` ...) called K times from Python;
   * peers on the same pairs: dtaidistance ``dtw_ndim.distance_fast`` (C, full DTW cost only,
     sqrt of our cost; optional) and a numpy anti-diagonal wavefront DP on the cost matrix.
2. Headline: re-rank 100 candidates of 60 segments against a 60-segment query with ``bidtw``,
   top=10, with and without the lower-bound pruning, in ms (target <= 20 ms); also every candidate
   ranked (no top). Three candidate sets: ``random`` (nothing related to the query),
   ``10_partial_copies`` (10 candidates hold a noisy copy of 20 query segments, reversed or slowed
   down 2x, among random segments) and ``10_full_copies`` (10 candidates are noisy copies of the
   whole query, reversed or time-warped). The bound of a normalised cost is loose (it must allow
   paths up to n + m - 1 long), so it skips candidates only when the top-k are strong matches
   (the third set). The pruned and unpruned rankings are checked to be identical. The matrix
   product that makes all cost matrices (which the bound needs too) is timed alone as well.

Everything is measured twice, each time in a fresh interpreter: with the BLAS threading inherited
(OpenBLAS: one thread per core) and with OPENBLAS/OMP/MKL_NUM_THREADS=1 (``--blas-threads``). On a
shared 2-core machine under load, a 2-thread matrix product of this size can stall for tens of ms
waiting for its second thread, while one thread is not slowed that way.

Writes bench/results/align.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

import _common as C


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 30, 60, 100])
    p.add_argument("--dims", type=int, nargs="+", default=[256, 512])
    p.add_argument("--methods", nargs="+", default=["dtw", "bidtw", "subdtw"])
    p.add_argument("--candidates", type=int, default=200, help="pairs per throughput measurement")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the best is reported")
    p.add_argument("--warmups", type=int, default=1, help="untimed runs first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--headline-candidates", type=int, default=100)
    p.add_argument("--headline-length", type=int, default=60)
    p.add_argument("--headline-top", type=int, default=10)
    p.add_argument("--wait-quiet", type=float, default=300, metavar="SECONDS",
                   help="first wait up to this long for other CPU work to calm down (0: do not wait)")
    p.add_argument("--blas-threads", choices=["both", "default", "1"], default="both",
                   help="BLAS threading to measure with (each in its own interpreter): as inherited, one "
                        "thread, or both in one run (default)")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def best_of(fn: Callable[[], Any], repeats: int, warmups: int) -> tuple[float, Any]:
    """Best wall time (s) of ``repeats`` runs after ``warmups``, and the last output."""
    out = None
    for _ in range(warmups):
        out = fn()
    times = []
    for _ in range(repeats):
        t, out = C.time_call(fn)
        times.append(t)
    return min(times), out


def wavefront_dtw_cost(cost: np.ndarray) -> float:
    """Peer: full DTW cost by anti-diagonals, each diagonal one vectorised numpy step."""
    n, m = cost.shape
    D = np.full((n + 1, m + 1), np.inf)
    D[0, 0] = 0.0
    c = cost.astype(np.float64)
    for s in range(2, n + m + 1):  # s = i + j in 1-based padded coordinates
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        D[i, j] = c[i - 1, j - 1] + np.minimum(np.minimum(D[i - 1, j], D[i, j - 1]), D[i - 1, j - 1])
    return float(D[n, m])


def throughput(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    from vidsearch.search import align as A

    pair_funcs = {"dtw": A.dtw, "bidtw": A.bidtw, "subdtw": A.subsequence_dtw}
    try:
        from dtaidistance import dtw_ndim
    except ImportError:
        dtw_ndim = None
        C.log("[align] dtaidistance not installed: its peer column is left empty")
    rows = []
    K = args.candidates
    for d in args.dims:
        for L in args.lengths:
            q = unit(rng, (L, d))
            cands = list(unit(rng, (K, L, d)))
            peers: dict[str, Any] = {}
            if dtw_ndim is not None:
                q64, c64 = q.astype(np.float64), [c.astype(np.float64) for c in cands]
                t, costs = best_of(lambda: [dtw_ndim.distance_fast(q64, c) for c in c64], args.repeats, args.warmups)
                ours = [A.dtw(q, c).cost for c in cands[:5]]
                peers["dtaidistance_pairs_per_s"] = K / t
                peers["dtaidistance_max_rel_diff"] = float(max(abs(x**2 - y) / y for x, y in zip(costs[:5], ours)))
            n_wave = min(K, 20)  # slow: fewer pairs, same per-pair figure
            costs_m = [A.cost_matrix(q, c) for c in cands[:n_wave]]
            t, _ = best_of(lambda: [wavefront_dtw_cost(cm) for cm in costs_m], args.repeats, args.warmups)
            peers["numpy_wavefront_dp_only_pairs_per_s"] = n_wave / t
            for method in args.methods:
                t_rr, _ = best_of(lambda: A.rerank(q, cands, method), args.repeats, args.warmups)
                fn = pair_funcs[method]
                t_pc, _ = best_of(lambda: [fn(q, c) for c in cands], args.repeats, args.warmups)
                row = {"method": method, "length": L, "dims": d, "pairs": K,
                       "rerank_pairs_per_s": K / t_rr, "rerank_us_per_pair": t_rr / K * 1e6,
                       "pair_call_pairs_per_s": K / t_pc, "pair_call_us_per_pair": t_pc / K * 1e6}
                if method == "dtw":
                    row.update(peers)
                rows.append(row)
                C.log(f"[align] d={d} L={L} {method}: rerank {K / t_rr:,.0f} pairs/s, "
                      f"pair calls {K / t_pc:,.0f} pairs/s")
    return rows


def headline_sets(args: argparse.Namespace, rng: np.random.Generator, d: int) -> tuple[np.ndarray, dict[str, list]]:
    """The query and three candidate sets (see the module doc)."""
    n, K = args.headline_length, args.headline_candidates
    q = unit(rng, (n, d))

    def noisy(x: np.ndarray) -> np.ndarray:
        y = x + rng.uniform(0.2, 0.6) * unit(rng, x.shape)  # cosine to the original ~0.86-0.98
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    sets: dict[str, list] = {"random": list(unit(rng, (K, n, d)))}
    partial = list(unit(rng, (K, n, d)))
    full = list(unit(rng, (K, n, d)))
    related = rng.choice(K, size=min(10, K), replace=False)
    for r, k in enumerate(related):
        # partial: 20 query segments (reversed, or 10 slowed down 2x) inside random segments
        start, at = int(rng.integers(0, n - 20)), int(rng.integers(0, n - 20))
        part = q[start:start + 20][::-1] if r % 2 == 0 else np.repeat(q[start:start + 10], 2, axis=0)
        partial[k][at:at + 20] = noisy(part)
        # full: the whole query, reversed or with a random time warp (segments repeated and dropped)
        warp = np.sort(rng.integers(0, n, n))
        full[k] = noisy(q[::-1] if r % 2 == 0 else q[warp])
    sets["10_partial_copies"] = partial
    sets["10_full_copies"] = full
    return q, sets


def headline(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    from vidsearch.search import align as A

    rows = []
    for d in args.dims:
        q, sets = headline_sets(args, rng, d)
        for name, cands in sets.items():
            X = np.concatenate(cands)
            t_mm, _ = best_of(lambda: np.maximum(2 - 2 * (q @ X.T), 0), args.repeats, args.warmups)
            t_all, full = best_of(lambda: A.rerank(q, cands, "bidtw"), args.repeats, args.warmups)
            t_exact, exact = best_of(lambda: A.rerank(q, cands, "bidtw", top=args.headline_top, prune=False),
                                     args.repeats, args.warmups)
            t_pruned, pruned = best_of(lambda: A.rerank(q, cands, "bidtw", top=args.headline_top),
                                       args.repeats, args.warmups)
            same = (pruned.indices.tolist() == exact.indices.tolist()
                    and np.array_equal(pruned.scores, exact.scores)
                    and exact.indices.tolist() == full.indices[:args.headline_top].tolist())
            rows.append({
                "dims": d, "candidate_set": name, "method": "bidtw", "query_length": args.headline_length,
                "candidates": args.headline_candidates, "candidate_length": args.headline_length,
                "top": args.headline_top,
                "ms_all_no_top": t_all * 1e3, "ms_top_unpruned": t_exact * 1e3, "ms_top_pruned": t_pruned * 1e3,
                "ms_cost_matrices_only": t_mm * 1e3,
                "pruned_speedup": t_exact / t_pruned,
                "candidates_skipped_by_bound": pruned.n_pruned, "dp_abandoned": pruned.n_abandoned,
                "same_ranking_as_unpruned": bool(same),
                "top_scores": pruned.scores.tolist(),
                "meets_20ms_target": bool(min(t_exact, t_pruned) * 1e3 <= 20.0),
            })
            C.log(f"[align] headline d={d} {name}: all {t_all * 1e3:.2f} ms, top-{args.headline_top} "
                  f"unpruned {t_exact * 1e3:.2f} ms, pruned {t_pruned * 1e3:.2f} ms "
                  f"(skipped {pruned.n_pruned}, abandoned {pruned.n_abandoned}, same={same})")
    return rows


BLAS_ENV_KEYS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, in this process (with the BLAS threading it was started with)."""
    from vidsearch.search import align as A

    t0 = time.perf_counter()  # compile (or load the numba cache) before timing anything
    w = unit(np.random.default_rng(1), (4, 8))
    for fn in (A.dtw, A.bidtw, A.subsequence_dtw):
        fn(w, w)
    first_call_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    rows = throughput(args, rng)
    heads = headline(args, rng)
    return {"first_call_s": first_call_s, "throughput": rows, "headline": heads,
            "numba_available": A.NUMBA_AVAILABLE}


def run_child(threads: str) -> dict[str, Any]:
    """Run ``measure`` in a fresh interpreter with BLAS limited to ``threads`` ("default": as inherited)."""
    env = dict(os.environ)
    if threads != "default":
        env.update({k: threads for k in BLAS_ENV_KEYS})
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", *sys.argv[1:]]
    C.log(f"[align] measuring with BLAS threads: {threads}")
    out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, check=True, text=True).stdout
    res = json.loads(out)
    res["blas_threads"] = threads
    res["blas_env"] = {k: env[k] for k in BLAS_ENV_KEYS if k in env}
    return res


def main() -> None:
    args = parse_args()
    if args.child:
        json.dump(C._jsonable(measure(args)), sys.stdout)
        return
    from vidsearch.search import align as A

    config = {k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet", "child")}
    config.update({"data": "random unit vectors (float32), numpy default_rng(seed)",
                   "numba_available": A.NUMBA_AVAILABLE, "timing": "best of repeats after warmups",
                   "runs": "one fresh interpreter per BLAS threading setting, same seed and data"})
    payload = C.header("align", config)
    payload["versions"].update(C.versions(["numba", "llvmlite", "dtaidistance", "hypothesis"]))
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()
    settings = {"both": ["default", "1"], "default": ["default"], "1": ["1"]}[args.blas_threads]
    payload["runs"] = [run_child(t) for t in settings]
    payload["cpu_probe_end"] = C.cpu_probe()  # load at the end: payload["provenance"], completed by C.emit

    C.log("\n" + C.table(
        ["blas", "method", "L", "d", "rerank pairs/s", "pair-call pairs/s", "dtaidistance pairs/s",
         "wavefront pairs/s"],
        [[run["blas_threads"], r["method"], r["length"], r["dims"], r["rerank_pairs_per_s"],
          r["pair_call_pairs_per_s"], r.get("dtaidistance_pairs_per_s"), r.get("numpy_wavefront_dp_only_pairs_per_s")]
         for run in payload["runs"] for r in run["throughput"]]))
    C.log("\n" + C.table(
        ["blas", "d", "set", "all ms", "top10 ms", "top10 pruned ms", "matmul ms", "skipped", "abandoned", "same"],
        [[run["blas_threads"], h["dims"], h["candidate_set"], h["ms_all_no_top"], h["ms_top_unpruned"],
          h["ms_top_pruned"], h["ms_cost_matrices_only"], h["candidates_skipped_by_bound"], h["dp_abandoned"],
          h["same_ranking_as_unpruned"]] for run in payload["runs"] for h in run["headline"]]))
    C.emit("align", payload, args.json)


if __name__ == "__main__":
    main()
