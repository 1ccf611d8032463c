"""How well the HNSW graph over the IVF centroids finds each vector's nearest centroid.

    python bench/centroid_graph.py [--json]

Above ``FLAT_COARSE_MAX`` lists the collection's compressed index assigns vectors to lists, and
probes lists at search time, through an HNSW graph over the k-means centroids (efSearch 256 when
adding). For each configuration this trains the k-means of that index on bench/ann.py's synthetic
mixture, builds FAISS's HNSW over the centroids as the index does, and reports, for FAISS's graph
as built and after ``connect_graph`` repaired it: centroids no search reaches (a search for the
centroid itself does not return it), centroids the graph never returns as nearest for any vector
(their lists stay empty), and the share of vectors whose graph-found centroid is not the exact
nearest one. Writes bench/results/centroid_graph.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as common  # noqa: E402
from ann import synthetic  # noqa: E402

CONFIGS = ((30_000, 64, 256), (30_000, 256, 256), (50_000, 128, 512), (100_000, 256, 1024), (200_000, 256, 4096))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import faiss

    from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, connect_graph

    rows: list[dict[str, Any]] = []
    hp = faiss.SearchParametersHNSW()
    hp.efSearch = 256
    for n, d, nlist in CONFIGS:
        x, _ = synthetic(n, 10, d, 0)
        idx = IVFPQIndex(d, IVFPQConfig(pq_m=16, nlist=nlist, coarse="hnsw"))
        idx.train(x)
        centroids = idx._ivf.quantizer.reconstruct_n(0, nlist)
        exact = faiss.IndexFlatL2(d)
        exact.add(centroids)
        nearest = exact.search(x, 1)[1][:, 0]
        graph = faiss.IndexHNSWFlat(d, idx.config.hnsw_m)  # FAISS's graph as train() builds it, before repair
        graph.hnsw.efConstruction = 200
        graph.add(centroids)
        row: dict[str, Any] = {"n": n, "dim": d, "nlist": nlist}
        for stage in ("faiss", "repaired"):
            if stage == "repaired":
                row["links_written"] = connect_graph(graph)
            found = graph.search(x, 1, params=hp)[1][:, 0]
            row[stage] = {"unreachable_centroids": int(np.sum(graph.search(centroids, 1, params=hp)[1][:, 0] != np.arange(nlist))),
                          "unreached_centroids": int(nlist - len(np.unique(found))),
                          "vectors_off_nearest": float(np.mean(found != nearest))}
        rows.append(row)
        common.log(f"  {row}")
    common.emit("centroid_graph", {"rows": rows, **common.header("centroid_graph", {"configs": CONFIGS, "ef_search": 256,
                                                                                    "data": "bench/ann.py synthetic, seed 0"})},
                args.json)


if __name__ == "__main__":
    main()
