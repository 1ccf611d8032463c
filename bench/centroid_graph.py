"""How well the HNSW graph over the IVF centroids finds each vector's nearest centroid.

    python bench/centroid_graph.py [--json]

The collection's compressed index assigns vectors to lists, and probes lists at search time, through
an HNSW graph over the k-means centroids (efSearch 256 when adding). For each configuration this
trains that index on bench/ann.py's synthetic mixture and reports: centroids the graph never returns
as nearest for any vector (their lists stay empty), and the share of vectors whose graph-found
centroid is not the exact nearest one. Writes bench/results/centroid_graph.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as common  # noqa: E402
from ann import synthetic  # noqa: E402

CONFIGS = ((30_000, 64, 256), (30_000, 256, 256), (50_000, 128, 512), (100_000, 256, 1024))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import faiss

    from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex

    rows: list[dict[str, Any]] = []
    for n, d, nlist in CONFIGS:
        x, _ = synthetic(n, 10, d, 0)
        idx = IVFPQIndex(d, IVFPQConfig(pq_m=16, nlist=nlist))
        idx.train(x)
        quantizer = idx._ivf.quantizer
        hp = faiss.SearchParametersHNSW()
        hp.efSearch = 256
        graph = quantizer.search(x, 1, params=hp)[1][:, 0]
        exact = faiss.IndexFlatL2(d)
        exact.add(quantizer.reconstruct_n(0, nlist))
        nearest = exact.search(x, 1)[1][:, 0]
        row = {"n": n, "dim": d, "nlist": nlist, "unreached_centroids": int(nlist - len(np.unique(graph))),
               "vectors_off_nearest": float(np.mean(graph != nearest))}
        rows.append(row)
        common.log(f"  {row}")
    common.emit("centroid_graph", {"rows": rows, **common.header("centroid_graph", {"configs": CONFIGS, "ef_search": 256,
                                                                                    "data": "bench/ann.py synthetic, seed 0"})},
                args.json)


if __name__ == "__main__":
    main()
