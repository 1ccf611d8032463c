"""Segment-level near-duplicate mAP: exact vectors vs PQ vs OPQ vs learned PQ at equal bytes.

    python bench/segments.py --data DIR [--bytes 4,8,16] [--json]

Why: on the video-level near-duplicate benchmark (``vidsearch eval neardup``, 17 references) every
method, compressed or not, ranks the true video first (mAP 1.000 down to 4 bytes per vector), so it
cannot tell the quantizers apart. This asks the finer question the codes decide: for each segment of
a query, which *segments* of the 17 references show the same seconds? The distractors are then the
neighbouring seconds of the same shot and every other segment of the collection (1,045 here), which is
where quantization error shows.

Data: the full near-duplicate benchmark (``vidsearch eval neardup --size full --data DIR`` renders it;
here it is reused, or rendered when DIR is empty). Segments on the Table 2 grid: SSCD, 4 fps, 1 s
windows every 0.25 s. A query segment counts when its window lies inside the query's matching range
(``query_range``); it is mapped linearly onto the true reference range (reversed for ``reversed``,
stretched for the speed changes) and the relevant reference segments are those of the true video
whose window overlaps the mapped one with temporal IoU >= 0.3 (about five at this stride). No-match
queries take no part (this is retrieval quality, not detection).

Each quantizer is fitted on the reference segment vectors (as a collection fits its index), the
references are encoded, and every query segment ranks all reference segments by FAISS asymmetric
distance (``to_faiss()``, codes only, no re-rank); ``exact`` ranks by the float32 inner product.
Quantizers and LearnedPQ settings are those of bench/compress.py (learned starts from OPQ).
Figures: mAP over query segments (and the mean per query), recall@10 of relevant segments.
Writes bench/results/segments.json. Encoded vectors are cached in DIR/segments-cache.npz.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

from compress import fit_quantizers

FPS, WINDOW, STRIDE, ENCODER = 4.0, 1.0, 0.25, "sscd"
IOU_MIN = 0.3


def encode_all(data: Path, allow_partial: bool = False) -> dict[str, Any]:
    """Reference and query segment vectors with their windows (cached in ``data``).

    Raises ``MissingDataError`` when footage of the full benchmark is not installed, unless
    ``allow_partial`` (the result is then marked partial)."""
    from vidsearch.config import CollectionConfig, DecodeConfig, EncodeConfig, SegmentConfig
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate.neardup import build_neardup

    bench = build_neardup(data, "full", 0, allow_partial=allow_partial)
    cache = data / "segments-cache.npz"
    key = (f"{ENCODER}-{FPS}-{WINDOW}-{STRIDE}-{len(bench.references)}-{len(bench.queries)}"
           f"{'-partial' if bench.partial else ''}")
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            return {k: z[k] for k in z.files} | {"bench": bench}
    enc = MediaEncoder(CollectionConfig(decode=DecodeConfig(fps=FPS), segment=SegmentConfig(window=WINDOW, stride=STRIDE),
                                        encode=EncodeConfig(encoder=ENCODER)))
    ref_vecs, ref_video, ref_win = [], [], []
    for i, r in enumerate(bench.references):
        m = enc.encode_file(r.path)
        ref_vecs.append(m.segment_vectors)
        ref_video += [i] * len(m.segments)
        ref_win += [(s.start, s.end) for s in m.segments]
        C.log(f"  reference {r.ref_id}: {len(m.segments)} segments")
    q_vecs, q_query, q_win = [], [], []
    for j, q in enumerate(bench.queries):
        if q.source is None:
            continue
        m = enc.encode_file(q.path)
        q_vecs.append(m.segment_vectors)
        q_query += [j] * len(m.segments)
        q_win += [(s.start, s.end) for s in m.segments]
        if j % 20 == 0:
            C.log(f"  queries encoded: {j + 1}/{len(bench.queries)}")
    out = {"key": np.array(key), "ref_vecs": np.concatenate(ref_vecs).astype(np.float32), "ref_video": np.array(ref_video),
           "ref_win": np.array(ref_win, np.float64), "q_vecs": np.concatenate(q_vecs).astype(np.float32),
           "q_query": np.array(q_query), "q_win": np.array(q_win, np.float64)}
    tmp = data / "segments-cache.tmp.npz"
    np.savez(tmp, **out)
    tmp.replace(cache)
    return out | {"bench": bench}


def ground_truth(d: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(query segments that count, relevant reference segment indices of each)."""
    bench = d["bench"]
    ref_index = {r.ref_id: i for i, r in enumerate(bench.references)}
    keep, relevant = [], []
    for s, (j, (a, b)) in enumerate(zip(d["q_query"], d["q_win"])):
        q = bench.queries[int(j)]
        if q.query_range is None or q.ref_range is None:
            continue
        q0, q1 = q.query_range
        r0, r1 = q.ref_range
        if a < q0 - 1e-6 or b > q1 + 1e-6:
            continue  # partly outside the matching part (the unrelated footage around an inserted excerpt)
        rate = (r1 - r0) / (q1 - q0)
        if q.transform == "reversed":
            ma, mb = r1 - (b - q0) * rate, r1 - (a - q0) * rate
        else:
            ma, mb = r0 + (a - q0) * rate, r0 + (b - q0) * rate
        rv = ref_index[q.source]
        ws = d["ref_win"]
        inter = np.clip(np.minimum(ws[:, 1], mb) - np.maximum(ws[:, 0], ma), 0, None)
        union = np.maximum(ws[:, 1], mb) - np.minimum(ws[:, 0], ma)
        rel = np.flatnonzero((d["ref_video"] == rv) & (inter / union >= IOU_MIN))
        if len(rel):
            keep.append(s)
            relevant.append(rel)
    return np.array(keep), relevant


def ap_and_recall(order: np.ndarray, relevant: list[np.ndarray], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """AP over the full ranking (Wu et al. 2007, as ``metrics.average_precision``) and recall@k, per row."""
    aps, recalls = np.empty(len(order)), np.empty(len(order))
    for i, (row, rel) in enumerate(zip(order, relevant)):
        hit = np.isin(row, rel)
        ranks = np.flatnonzero(hit) + 1
        aps[i] = float(np.mean(np.arange(1, len(ranks) + 1) / ranks)) * len(ranks) / len(rel) if len(ranks) else 0.0
        recalls[i] = hit[:k].sum() / min(k, len(rel))
    return aps, recalls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="near-duplicate benchmark folder (rendered if empty)")
    ap.add_argument("--bytes", default="4,8,16", help="code sizes in bytes (M sub-quantizers of 8 bits)")
    ap.add_argument("--methods", default="pq,opq,learned")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--allow-partial", action="store_true",
                    help="run even if some benchmark footage is missing (the result is marked \"partial\": true)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    d = encode_all(args.data, args.allow_partial)
    xb, xq_all = d["ref_vecs"], d["q_vecs"]
    keep, relevant = ground_truth(d)
    xq = np.ascontiguousarray(xq_all[keep])
    per_query = d["q_query"][keep]
    C.log(f"{len(xb)} reference segments, {len(xq)} query segments from {len(set(per_query.tolist()))} queries, "
          f"{np.mean([len(r) for r in relevant]):.1f} relevant each")

    def summarise(order: np.ndarray) -> dict[str, Any]:
        aps, rec = ap_and_recall(order, relevant)
        by_query = [aps[per_query == j].mean() for j in np.unique(per_query)]
        transforms = [d["bench"].queries[int(j)].transform for j in np.unique(per_query)]
        per_t: dict[str, list[float]] = {}
        for t, v in zip(transforms, by_query):
            per_t.setdefault(t.split(".")[0] if t.startswith("transcode") else t, []).append(float(v))
        return {"mAP_segments": float(aps.mean()), "mAP_by_query": float(np.mean(by_query)),
                "recall_at_10": float(rec.mean()), "per_transform_mAP": {t: float(np.mean(v)) for t, v in per_t.items()}}

    results: dict[str, Any] = {"exact": summarise(np.argsort(-(xq @ xb.T), axis=1, kind="stable"))}
    C.log(f"exact: {results['exact']['mAP_segments']:.4f}")
    for nbytes in [int(b) for b in args.bytes.split(",")]:
        for method, model, train_s, extra in fit_quantizers(xb, nbytes, args.methods.split(","), args.torch_threads):
            extra.pop("history", None)
            index = model.to_faiss()
            index.add(xb)
            t = time.perf_counter()
            _, order = index.search(xq, len(xb))
            search_s = time.perf_counter() - t
            r = {**summarise(order), "train_seconds": train_s, "search_seconds": search_s, **extra}
            results[f"{method}{nbytes}"] = r
            C.log(f"{method} {nbytes} B: mAP {r['mAP_segments']:.4f} (by query {r['mAP_by_query']:.4f}), "
                  f"recall@10 {r['recall_at_10']:.4f}, train {train_s:.0f} s")
    rows = [[name, r["mAP_segments"], r["mAP_by_query"], r["recall_at_10"]] for name, r in results.items()]
    C.log(C.table(["method", "segment mAP", "mAP by query", "recall@10"], rows))
    payload = {"results": results, "reference_segments": int(len(xb)), "query_segments": int(len(xq)),
               "queries": int(len(set(per_query.tolist()))),
               **C.header("segments", {"data": str(args.data), "encoder": ENCODER, "fps": FPS, "window": WINDOW,
                                       "stride": STRIDE, "iou_min": IOU_MIN, "bytes": args.bytes,
                                       "methods": args.methods, "torch_threads": args.torch_threads},
                           missing=d["bench"].missing)}
    C.emit("segments", payload, args.json)


if __name__ == "__main__":
    main()
