"""Query latency on a collection of all the real sample footage, with an exact-scan numpy peer.

    python bench/latency.py [--encoder sscd] [--repeats 30] [--json]

Builds a collection of ``reference_footage()`` in a temporary folder, then times ``coll.search``
for three queries, round-robin, ``--warmups`` untimed rounds then ``--repeats`` timed rounds:

* ``clip``:  a 10 s excerpt (20-30 s) of the iscc ``demo.mp4``, re-encoded 320 px wide (make_copy);
* ``image``: a PNG still of ``bigbuckbunny.mp4`` at 3 s, full size (1280x720), as the demo makes it;
* ``stored``: ``VIDEO_ID@20-30`` of the indexed ``demo.mp4`` (stored frame vectors, no decoding);
* ``clip720``: 10 s of 720p H.264 (30 fps, key frame every 2 s), the first 10 s of the HD footage
  ``vidsearch.evaluate.hd.hd_footage`` makes from the sample videos (bigbuckbunny, then rgb.m4v).

``--queries clip720`` (or ``--hd-only``) times only some of them (the collection is built all the same).

Reported: total and the ``SearchResult.timings_ms`` split (decode, encode, search; ``unattributed`` =
total minus the three, per call: e.g. reading stored frame vectors for ``stored``) as p50/p99, and
the process CPU time of each ``search`` call (all threads; less sensitive to other work on the machine).
Peers, timed in the same rounds (right after each ``search``) on the same query segment vectors: an
exact numpy scan (``xq @ xb.T`` then top-``segment_k`` by argpartition + sort) and the bare FAISS index
search, so the search stage (index + voting + catalogue lookup) can be stated as a ratio. The peers
are timed again each in its own loop after a pause (``*_isolated``), away from frame encoding, and FAISS
also with one OpenMP thread: on 2 cores, thread pools that spin after work (ONNX Runtime, OpenBLAS,
libgomp) slow a tiny multi-threaded search that runs right after them by orders of magnitude. Each
round also repeats ``search`` with FAISS's OpenMP pool at one thread (``search_faiss_1thread``).
With 30 repeats p99 is close to the maximum; read it as "worst seen".

Writes bench/results/latency.json (or latency-ENCODER.json for another encoder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

from vidsearch.encode.registry import encoder_names
from vidsearch.evaluate.transforms import Transform


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="sscd", choices=encoder_names())
    p.add_argument("--repeats", type=int, default=30, help="timed rounds (each round runs every query once)")
    p.add_argument("--warmups", type=int, default=3, help="untimed rounds first")
    p.add_argument("--k", type=int, default=10, help="videos returned per query")
    p.add_argument("--query-encoder", choices=encoder_names(),
                   help="encode the file queries with this encoder (SearchParams.query_encoder; e.g. sscd-distilled "
                        "for the default sscd collection); writes latency-q-NAME.json")
    p.add_argument("--footage", type=int, default=0, metavar="N",
                   help="index only the first N sample videos (0: all; a partial run, for tests)")
    p.add_argument("--wait-quiet", type=float, default=300, metavar="SECONDS",
                   help="first wait up to this long for other CPU work to calm down (0: do not wait)")
    p.add_argument("--queries", default=",".join(QUERIES), help=f"comma-separated, some of {', '.join(QUERIES)}")
    p.add_argument("--hd-only", action="store_true", help="only the clip720 query (same as --queries clip720)")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.queries = ["clip720"] if args.hd_only else [q.strip() for q in args.queries.split(",") if q.strip()]
    bad = [q for q in args.queries if q not in QUERIES]
    if bad or not args.queries:
        p.error(f"--queries: unknown {bad or 'none given'}; expected some of {', '.join(QUERIES)}")
    return args


QUERIES = ("clip", "clip720", "image", "stored")
CLIP_TRANSFORM = Transform(start=20, end=30, width=320)
CLIP720_SECONDS = 10.0


def make_queries(folder: Path, names: list[str], demo_mp4: Path, image_src: Path, image_at: float,
                 demo_id: str) -> dict[str, str]:
    """The query of each name in ``names``: a file made in ``folder`` (or found in the HD cache) or a stored range."""
    from vidsearch.evaluate.hd import hd_footage
    from vidsearch.evaluate.transforms import make_copy

    out: dict[str, str] = {}
    for q in names:
        if q == "clip":
            out[q] = str(make_copy(demo_mp4, folder / "clip_20-30_320px.mp4", CLIP_TRANSFORM))
        elif q == "clip720":
            out[q] = str(hd_footage(720, CLIP720_SECONDS))
        elif q == "image":
            out[q] = str(export_frame(image_src, image_at, folder / "bigbuckbunny_3s.png"))
        elif q == "stored":
            out[q] = f"{demo_id}@20-30"
    return out


def export_frame(src: Path, at: float, dst: Path) -> Path:
    """Save the first decoded frame at or after ``at`` seconds, at the video's own size, as PNG."""
    from PIL import Image

    from vidsearch.decode import iter_frames, probe

    info = probe(src)
    frame = next(f for f in iter_frames(src, (info.width, info.height), fps=25) if f.time >= at - 1e-6)
    Image.fromarray(frame.image).save(dst)
    return dst


def exact_scan(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner product: (Q, D) x (N, D) -> top-k ids and scores per query, best first."""
    scores = xq @ xb.T
    k = min(k, xb.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)


def main() -> None:
    args = parse_args()
    from vidsearch import Collection
    from vidsearch.config import CollectionConfig, EncodeConfig
    from vidsearch.evaluate import samples
    from vidsearch.search.results import SearchParams
    from vidsearch.store.vectors import VectorFile

    files = samples.reference_footage()
    demo_mp4 = next(p for p in samples.iscc_videos() if p.name == "demo.mp4")
    image_src = next(p for p in files if p.name == "bigbuckbunny.mp4")
    image_at = 3.0
    missing = samples.missing_footage(found=files)
    if args.footage:  # the two videos the queries come from, then the others in order: a partial run
        kept = [demo_mp4, image_src] + [p for p in files if p not in (demo_mp4, image_src)]
        files = kept[: max(2, args.footage)]
        missing = {**missing, "footage": f"only {len(files)} of the sample videos (--footage {args.footage})"}
    params = SearchParams(query_encoder=args.query_encoder)
    config = CollectionConfig(encode=EncodeConfig(encoder=args.encoder))
    clip_transform = CLIP_TRANSFORM
    name = "latency" if args.encoder == "sscd" else f"latency-{args.encoder}"
    if args.query_encoder:
        name += f"-q-{args.query_encoder}"
    payload = C.header(name, {
        **{k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet")},
        "collection_config": config.to_dict(), "search_params": params.__dict__,
        "footage": [str(p) for p in files],
        "queries": {"clip": {"source": str(demo_mp4), "transform": clip_transform.__dict__},
                    "image": {"source": str(image_src), "frame_at_s": image_at, "format": "png, full size"},
                    "stored": "VIDEO_ID@20-30 of demo.mp4",
                    "clip720": {"source": "vidsearch.evaluate.hd.hd_footage(720, 10)", "seconds": CLIP720_SECONDS,
                                "size": "1280x720", "fps": 30, "gop": 60}},
        "queries_run": args.queries,
    }, missing=missing)
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()

    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-latency-") as tmp:
        folder = Path(tmp)
        coll = Collection.create(folder / "coll", config)
        C.log(f"[latency] building a {args.encoder} collection of {len(files)} files")
        build_s, reports = C.time_call(lambda: coll.add(files))
        info = coll.info()
        demo_id = next(r.video_id for r in reports if Path(r.path) == demo_mp4)
        names = {v["id"]: Path(v["path"]).name for v in coll.videos()}
        payload["collection"] = {
            "build_s": build_s, "videos": info["videos"], "segments": info["segments"], "frames": info["frames"],
            "duration_s": info["duration_s"], "dims": info["dims"],
            "not_indexed": [r.to_dict() for r in reports if r.status != "indexed"],
        }
        queries = make_queries(folder, args.queries, demo_mp4, image_src, image_at, demo_id)

        # stored segment vectors for the numpy peer (no removals, so rows 0..segments-1 are all live)
        n_seg = info["segments"]
        xb = np.ascontiguousarray(VectorFile.open(coll.path / "segments.f32").read(slice(0, n_seg), n_seg), np.float32)
        # the query's segment vectors as the engine computes them (whole frames: the peers compare one search)
        engine = coll.engine()
        xqs = {q: engine.encode_query(path).segment_vectors for q, path in queries.items()}
        index = engine.snapshot.index  # what the engine searches; its bare search is the second peer
        payload["collection"]["index_type"] = type(index).__name__
        assert index is not None and len(index) == n_seg, (len(index) if index else None, n_seg)

        # agreement of the peers (tie-tolerant: compare the k-th best scores, not ids)
        peer_check = {}
        for q, xq in xqs.items():
            _, s_np = exact_scan(xq, xb, params.segment_k)
            hits = index.search(xq, params.segment_k)
            kk = s_np.shape[1]
            peer_check[q] = float(np.abs(hits.scores[:, :kk] - s_np).max())

        samples_: dict[str, dict[str, list[float]]] = {
            q: {k: [] for k in ("total", "decode", "encode", "search", "process_cpu", "numpy_exact", "faiss_index",
                                 "search_faiss_1thread", "total_faiss_1thread")}
            for q in queries
        }
        import faiss

        omp_threads = faiss.omp_get_max_threads()
        results: dict[str, Any] = {}
        for rnd in range(args.warmups + args.repeats):
            timed = rnd >= args.warmups
            for q, path in queries.items():
                c0 = time.process_time()
                res = coll.search(path, k=args.k, params=params)
                cpu_s = time.process_time() - c0
                np_s, _ = C.time_call(lambda: exact_scan(xqs[q], xb, params.segment_k))
                fx_s, _ = C.time_call(lambda: index.search(xqs[q], params.segment_k))
                # the same search with FAISS's OpenMP pool at one thread (the library's default is all cores)
                faiss.omp_set_num_threads(1)
                res_1t = coll.search(path, k=args.k, params=params)
                faiss.omp_set_num_threads(omp_threads)
                if timed:
                    for key in ("total", "decode", "encode", "search"):
                        samples_[q][key].append(res.timings_ms[key] / 1000)
                    samples_[q]["process_cpu"].append(cpu_s)
                    samples_[q]["search_faiss_1thread"].append(res_1t.timings_ms["search"] / 1000)
                    samples_[q]["total_faiss_1thread"].append(res_1t.timings_ms["total"] / 1000)
                    samples_[q]["numpy_exact"].append(np_s)
                    samples_[q]["faiss_index"].append(fx_s)
                results[q] = res
            if timed and (rnd - args.warmups + 1) % 10 == 0:
                C.log(f"[latency] {rnd - args.warmups + 1}/{args.repeats} rounds")
        # the peers again, each in its own loop after a pause (so no other thread pool -- ONNX Runtime's,
        # OpenBLAS's, FAISS's OpenMP -- is still spinning): the search step's cost on an idle machine.
        # faiss_index_1thread: the same FAISS search with OpenMP limited to one thread.
        isolated = {
            "numpy_exact_isolated": lambda xq: exact_scan(xq, xb, params.segment_k),
            "faiss_index_isolated": lambda xq: index.search(xq, params.segment_k),
            "faiss_index_1thread_isolated": lambda xq: index.search(xq, params.segment_k),
        }
        for label, fn in isolated.items():
            faiss.omp_set_num_threads(1 if "1thread" in label else omp_threads)
            for q in queries:
                time.sleep(0.5)
                for _ in range(args.warmups):
                    fn(xqs[q])
                samples_[q][label] = [C.time_call(lambda: fn(xqs[q]))[0] for _ in range(args.repeats)]
        faiss.omp_set_num_threads(omp_threads)
        payload["faiss_omp_threads"] = omp_threads
        coll.close()

    out: dict[str, Any] = {}
    for q in queries:
        sq = samples_[q]
        sq["unattributed"] = [t - d - e - x for t, d, e, x in zip(sq["total"], sq["decode"], sq["encode"], sq["search"])]
        s = {k: C.summarize_ms(v) for k, v in sq.items()}
        res = results[q]
        top = res.results[0] if res.results else None
        p50 = {k: v["p50_ms"] for k, v in s.items()}
        out[q] = {
            "query": Path(queries[q]).name,
            "query_segments": int(xqs[q].shape[0]),
            "top1": names.get(top.video_id) if top else None,
            "top1_score": top.score if top else None,
            "top1_match": None if not (top and top.matches) else top.matches[0]._asdict(),
            "runner_up_score": res.results[1].score if len(res.results) > 1 else None,
            "timings": s,
            "ratios_p50": {
                "search_stage/numpy_exact": p50["search"] / p50["numpy_exact"],
                "faiss_index/numpy_exact": p50["faiss_index"] / p50["numpy_exact"],
                "search_stage/faiss_index": p50["search"] / p50["faiss_index"],
                "search_stage/total": p50["search"] / p50["total"],
                "search_stage/numpy_exact_isolated": p50["search"] / p50["numpy_exact_isolated"],
                "faiss_index/faiss_index_isolated": p50["faiss_index"] / p50["faiss_index_isolated"],
                "search_stage/search_stage_faiss_1thread": p50["search"] / p50["search_faiss_1thread"],
                "faiss_index_isolated/faiss_index_1thread_isolated":
                    p50["faiss_index_isolated"] / p50["faiss_index_1thread_isolated"],
                "numpy_exact/numpy_exact_isolated": p50["numpy_exact"] / p50["numpy_exact_isolated"],
            },
            "peer_max_abs_score_diff": peer_check[q],
            "samples_ms": {k: [round(x * 1000, 4) for x in v] for k, v in sq.items()},
        }
    payload["queries"] = out
    payload["cpu_probe_end"] = C.cpu_probe()  # load at the end: payload["provenance"], completed by C.emit

    rows = []
    for q, r in out.items():
        t = r["timings"]
        rows.append([q, r["query_segments"], r["top1"], r["top1_score"], t["total"]["p50_ms"], t["total"]["p99_ms"],
                     t["decode"]["p50_ms"], t["encode"]["p50_ms"], t["search"]["p50_ms"], t["search"]["p99_ms"],
                     t["numpy_exact"]["p50_ms"], t["faiss_index"]["p50_ms"], r["ratios_p50"]["search_stage/numpy_exact"],
                     t["numpy_exact_isolated"]["p50_ms"], t["faiss_index_isolated"]["p50_ms"],
                     t["faiss_index_1thread_isolated"]["p50_ms"], t["search_faiss_1thread"]["p50_ms"]])
    C.log(f"\nQuery latency, {args.encoder}, {info['segments']} stored segments, {args.repeats} repeats (ms)")
    C.log(C.table(["query", "segs", "top1", "score", "total p50", "total p99", "decode", "encode", "search p50",
                   "search p99", "numpy p50", "faiss p50", "search/numpy", "numpy iso", "faiss iso", "faiss 1t iso", "search (faiss 1t)"], rows))
    C.log(f"cpu probe (numpy matmul, median): {payload['cpu_probe_start']['gflops_median']:.0f} GFLOP/s at start, "
          f"{payload['cpu_probe_end']['gflops_median']:.0f} at end; cpu pressure at end "
          f"{C.load_average().get('cpu_pressure_some')}")
    C.emit(name, payload, args.json)


if __name__ == "__main__":
    main()
