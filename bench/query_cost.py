"""What the default search improvements cost per query: the VSC-style benchmark's queries searched through the
``Engine`` with today's defaults (insets, score normalisation) and without them, alternating query by query on
one collection, so that a change of load reaches both sides alike.

    python bench/query_cost.py --size small --queries 20 --wait-quiet 300 --json

Writes bench/results/query-cost-<size>.json: per variant p50/mean of the whole query (decode + encode + search),
its parts, and the ratio to the variant without the improvements (issue #15's target: at most 2x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

VARIANTS = {
    "default": {},
    "noinsets+nonorm": {"insets": False, "norm_beta": 0.0},
    "noinsets": {"insets": False},
    "nonorm": {"norm_beta": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--queries", type=int, default=20, help="the first N queries of the data set")
    ap.add_argument("--wait-quiet", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from vidsearch.collection import Collection
    from vidsearch.evaluate.vsc_data import build_dataset
    from vidsearch.evaluate.vsc_run import dataset_config
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    payload = C.header("query-cost", vars(args))
    ds = build_dataset(dataset_config(args.size), progress=C.log)
    with tempfile.TemporaryDirectory(prefix="vidsearch-query-cost-") as tmp:
        path = Path(tmp) / "coll"
        C.log(f"indexing {len(ds.reference_ids)} references")
        with Collection.create(path) as coll:
            coll.add([ds.reference_path(r) for r in ds.reference_ids])
        payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
        engine = Engine.open(path)
        params = {name: SearchParams(**kw) for name, kw in VARIANTS.items()}
        queries = list(ds.query_ids[: args.queries])
        engine.search(ds.query_path(queries[0]), k=10, params=params["default"])  # warm-up: models, kernels
        times: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        for i, q in enumerate(queries):
            order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                t = time.perf_counter()
                result = engine.search(ds.query_path(q), k=10, params=params[name])
                wall = (time.perf_counter() - t) * 1000
                times[name].append({"total": wall, **{k: result.timings_ms.get(k, 0.0) for k in ("decode", "encode", "search")}})
            C.log(f"query {i + 1}/{len(queries)}")
        engine.close()
    base = float(np.median([t["total"] for t in times["noinsets+nonorm"]]))
    out: dict[str, Any] = {}
    for name, rows in times.items():
        p50 = float(np.median([r["total"] for r in rows]))
        out[name] = {"p50_ms": round(p50, 1), "mean_ms": round(float(np.mean([r["total"] for r in rows])), 1),
                     **{f"{k}_p50_ms": round(float(np.median([r[k] for r in rows])), 2) for k in ("decode", "encode", "search")},
                     "ratio_to_noinsets_nonorm": round(p50 / base, 3)}
    payload["variants"] = out
    payload["summary"] = {name: v["ratio_to_noinsets_nonorm"] for name, v in out.items()}
    C.log(C.table(["variant", "p50 ms", "decode", "encode", "search", "ratio"],
                  [[n, v["p50_ms"], v["decode_p50_ms"], v["encode_p50_ms"], v["search_p50_ms"], v["ratio_to_noinsets_nonorm"]]
                   for n, v in out.items()]))
    C.emit(f"query-cost-{args.size}", payload, args.json)


if __name__ == "__main__":
    main()
