"""Product quantizers at equal bytes per vector: PQ, OPQ (FAISS) and LearnedPQ (PyTorch, exported to FAISS).

    python bench/compress.py [--n 100000] [--datasets synthetic,sscd] [--bytes 16,32] [--json]

For each dataset and code size (M sub-quantizers of 8 bits = M bytes per vector), each method is
fitted on the base vectors, its codes are searched with FAISS asymmetric distances (``to_faiss()``:
``IndexPQ``, behind a ``LinearTransform`` for OPQ and LearnedPQ), and we report:

- recall@10 of the ADC top-10 against the exact top-10 (squared L2 = cosine ranking for these
  L2-normalised vectors; tie-tolerant, ``vidsearch.evaluate.metrics.knn_recall``), before re-rank;
- recall@10 after an exact re-rank of the ADC top R, R in {10, 20, 50, 100} (R=10 re-orders the
  same ten items, so it equals the figure before re-rank);
- training seconds and the reconstruction MSE (mean squared L2 error per vector) on the base.

Methods: ``pq`` (faiss.ProductQuantizer), ``opq`` (faiss.OPQMatrix, 50 iterations, then PQ),
``learned`` (LearnedPQ started from that same OPQ: its time is the OPQ time plus its own) and
``learned_rec`` (the same training with the neighbour loss off: an ablation that shows how much
of the gain comes from the neighbour-preservation loss rather than from further optimisation).

Datasets (fixed seeds; the figures are deterministic for a fixed seed, data and thread count):

- ``synthetic``: ``--n`` base + 1000 query vectors, 256-d, a mixture of 1000 Gaussian clusters with
  per-cluster scales (log-normal) in a correlated space (random rotation, decaying spectrum),
  L2-normalised.
- ``sscd``: 512-d SSCD (``sscd`` encoder) vectors of the real sample footage
  (``samples.reference_footage()`` decoded at ``--fps``, each frame also flipped, cropped (two
  crops), noised and re-lit) plus the 21 iscc transcodes at 1 fps; exact duplicates removed;
  1000 random vectors held out as queries, the rest is the base. Encoded once and cached under
  ``$VIDSEARCH_CACHE/bench`` (``~/.cache/vidsearch/bench``).

FAISS runs with ``--faiss-threads`` OpenMP threads (default 1: on a shared 2-core machine,
OpenMP's spinning threads made OPQ training 3-6x slower with 2), torch with ``--torch-threads``.

Writes bench/results/compress.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

from vidsearch.compress import LearnedPQConfig

K = 10
RERANK = (10, 20, 50, 100)
N_QUERY = 1000
SEED = 0

# LearnedPQ settings used for every dataset and size (see LearnedPQConfig's docstring).
LEARNED = LearnedPQConfig(epochs=2, n_anchors=20000, batch_size=64, lr=1e-3, nbr_loss="ranking", mine_every=1,
                          lambda_rec=1.0, lambda_nbr=10.0, seed=SEED)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="synthetic base vectors (default 100000)")
    p.add_argument("--datasets", default="synthetic,sscd", help="comma-separated: synthetic, sscd")
    p.add_argument("--bytes", default="16,32", help="comma-separated bytes per vector (M with nbits=8)")
    p.add_argument("--methods", default="pq,opq,learned,learned_rec", help="comma-separated methods")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second decoded from the footage (sscd)")
    p.add_argument("--faiss-threads", type=int, default=1)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    args.bytes = [int(s) for s in args.bytes.split(",") if s.strip()]
    args.methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    bad = [d for d in args.datasets if d not in ("synthetic", "sscd")]
    if bad:
        p.error(f"unknown dataset(s) {bad}; expected synthetic and/or sscd")
    bad = [m for m in args.methods if m not in ("pq", "opq", "learned", "learned_rec")]
    if bad:
        p.error(f"unknown method(s) {bad}; expected some of pq, opq, learned, learned_rec")
    return args


# ----------------------------------------------------------------------------- data


def synthetic(n_base: int, n_query: int = N_QUERY, d: int = 256, n_clusters: int = 1000,
              seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture in a correlated space, L2-normalised: (n_base, d) and (n_query, d) float32."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = 1.0 / np.sqrt(1 + np.arange(d) / 8.0)
    mix = (basis * spectrum).T  # latent @ mix: correlated components with decaying variances
    centers = rng.standard_normal((n_clusters, d))
    scales = np.exp(rng.normal(np.log(0.6), 0.4, n_clusters))
    n = n_base + n_query
    label = rng.integers(0, n_clusters, n)
    x = (centers[label] + scales[label, None] * rng.standard_normal((n, d))) @ mix
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    perm = rng.permutation(n)
    return x[perm[:n_base]], x[perm[n_base:]]


def _augment(image: np.ndarray, rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """Variants of one (S, S, 3) uint8 frame decoded at S = 1.25 * size: plain, flip, two crops, noise, light."""
    from PIL import Image

    def resize(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))

    big = image.shape[0]
    plain = resize(image)
    off = (big - size) // 2
    centre_crop = image[off : off + size, off : off + size]  # central 80 %
    corner = resize(image[: int(big * 0.7), big - int(big * 0.7) :])  # top-right 70 %, rescaled
    noisy = np.clip(plain.astype(np.int16) + rng.normal(0, 10, plain.shape).round().astype(np.int16), 0, 255)
    light = np.clip(plain.astype(np.float32) * 0.75 + 40, 0, 255)
    return [plain, np.ascontiguousarray(plain[:, ::-1]), np.ascontiguousarray(centre_crop), corner,
            noisy.astype(np.uint8), light.astype(np.uint8)]


def sscd_features(fps: float, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Real 512-d SSCD vectors (base, queries, description), encoded once and cached."""
    from vidsearch.decode import iter_frames
    from vidsearch.encode import load_encoder
    from vidsearch.evaluate import samples

    refs = samples.reference_footage()
    transcodes = samples.iscc_videos()
    desc = {"encoder": "sscd", "fps": fps, "seed": seed, "references": [p.name for p in refs],
            "transcodes": [p.name for p in transcodes], "transcode_fps": 1.0,
            "variants": ["plain", "hflip", "centre crop 80%", "top-right crop 70%", "gaussian noise sd 10",
                         "x0.75 + 40 lighting"], "n_query": N_QUERY}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(os.environ.get("VIDSEARCH_CACHE") or Path.home() / ".cache" / "vidsearch") / "bench"
    path = root / f"compress-sscd-{key}.npz"
    if path.is_file():
        z = np.load(path)
        return z["base"], z["query"], {**desc, "cache": str(path)}
    encoder = load_encoder("sscd")
    size = encoder.input_size[0]
    big = int(round(size * 1.25))
    rng = np.random.default_rng(seed)
    chunks: list[np.ndarray] = []
    t0 = time.perf_counter()
    for i, ref in enumerate(refs):
        batch: list[np.ndarray] = []
        for frame in iter_frames(ref, (big, big), fps=fps):
            batch.extend(_augment(frame.image, rng, size))
            if len(batch) >= 60:
                chunks.append(encoder.encode(np.stack(batch)))
                batch = []
        if batch:
            chunks.append(encoder.encode(np.stack(batch)))
        C.log(f"[compress] sscd: {ref.name} done ({i + 1}/{len(refs)}), {sum(map(len, chunks))} vectors, "
              f"{time.perf_counter() - t0:.0f} s")
    for video in transcodes:
        try:
            frames = [f.image for f in iter_frames(video, encoder.input_size, fps=1.0)]
        except Exception as exc:  # a container this FFmpeg build cannot read: skip it, say so
            C.log(f"[compress] sscd: skipped {video.name}: {exc}")
            continue
        for s in range(0, len(frames), 60):
            chunks.append(encoder.encode(np.stack(frames[s : s + 60])))
    x = np.concatenate(chunks).astype(np.float32)
    x = np.unique(x, axis=0)  # exact duplicates (identical frames) would make ties
    x = x[rng.permutation(len(x))]
    base, query = x[N_QUERY:], x[:N_QUERY]
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, base=base, query=query)
    os.replace(tmp, path)
    C.log(f"[compress] sscd: {len(x)} vectors encoded in {time.perf_counter() - t0:.0f} s, cached in {path}")
    return base, query, {**desc, "cache": str(path)}


# ----------------------------------------------------------------------------- evaluation


def exact_knn(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 top-k (faiss.IndexFlatL2): (Q, k) distances and ids."""
    import faiss

    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    return index.search(xq, k)


def evaluate(index: Any, xb: np.ndarray, xq: np.ndarray, gt_d: np.ndarray, gt_i: np.ndarray) -> dict[str, Any]:
    """ADC recall@10 before re-rank and after an exact re-rank of the top R, plus search seconds."""
    from vidsearch.evaluate.metrics import knn_recall

    index.reset()
    t0 = time.perf_counter()
    index.add(xb)
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, found = index.search(xq, max(RERANK))
    search_s = time.perf_counter() - t0
    exact_of_found = ((xq[:, None, :] - xb[found]) ** 2).sum(2)  # (Q, Rmax) exact distances of ADC results
    out: dict[str, Any] = {"recall_at_10": knn_recall(found, gt_i, K, exact_of_found, gt_d)}
    rerank = {}
    for R in RERANK:
        order = np.argsort(exact_of_found[:, :R], axis=1, kind="stable")[:, :K]
        ids = np.take_along_axis(found[:, :R], order, 1)
        dist = np.take_along_axis(exact_of_found[:, :R], order, 1)
        rerank[str(R)] = knn_recall(ids, gt_i, K, dist, gt_d)
    out["recall_at_10_after_rerank"] = rerank
    out["add_seconds"] = add_s
    out["search_seconds"] = search_s
    return out


def learned_config(n_base: int, torch_threads: int, neighbour_loss: bool,
                   base: LearnedPQConfig = LEARNED) -> LearnedPQConfig:
    """``base``, with epochs raised on small sets so every run takes about the same number of steps."""
    planned = base.n_anchors or n_base
    epochs = max(base.epochs, round(base.epochs * planned / min(n_base, planned)))
    return dataclasses.replace(base, epochs=epochs, n_threads=torch_threads,
                               lambda_nbr=base.lambda_nbr if neighbour_loss else 0.0)


def fit_quantizers(xb: np.ndarray, M: int, methods: list[str], torch_threads: int,  # type: ignore[no-untyped-def]
                   config: LearnedPQConfig = LEARNED):
    """Yield ``(method, fitted model, train seconds, extra fields)`` for each of ``methods`` at M bytes;
    the learned ones start from the OPQ (fitted once) and their time includes it."""
    from _compress_estimators import ProductQuantizer

    from vidsearch.compress import OPQ, LearnedPQ

    opq: Any = None
    opq_s = 0.0
    for method in methods:
        extra: dict[str, Any] = {}
        if method == "pq":
            train_s, model = C.time_call(lambda: ProductQuantizer(M).fit(xb))
        elif method == "opq" or opq is None:
            opq_s, opq = C.time_call(lambda: OPQ(M).fit(xb))
            train_s, model = opq_s, opq
        if method in ("learned", "learned_rec"):
            run = learned_config(len(xb), torch_threads, method == "learned", config)
            own_s, model = C.time_call(lambda: LearnedPQ(M, config=run).fit(xb, init=opq))
            train_s = opq_s + own_s  # the OPQ it starts from is part of its training
            extra = {"train_seconds_without_opq": own_s, "params": run.to_dict(), "history": model.history_}
        yield method, model, train_s, extra


def run_dataset(name: str, xb: np.ndarray, xq: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    gt_d, gt_i = exact_knn(xb, xq, K)
    out: dict[str, Any] = {"n_base": len(xb), "n_query": len(xq), "dim": xb.shape[1], "sizes": {}}
    for nbytes in args.bytes:
        M = nbytes  # nbits = 8: one byte per sub-quantizer
        if xb.shape[1] % M:
            C.log(f"[compress] {name}: skipping {nbytes} bytes, {xb.shape[1]} is not divisible by M={M}")
            continue
        res: dict[str, Any] = {}
        for method, model, train_s, extra in fit_quantizers(xb, M, args.methods, args.torch_threads):
            entry = {"train_seconds": train_s, "reconstruction_mse": model.reconstruction_error(xb),
                     "code_bytes": model.code_size, **evaluate(model.to_faiss(), xb, xq, gt_d, gt_i), **extra}
            res[method] = entry
            C.log(f"[compress] {name} {nbytes} B {method}: recall@10 {entry['recall_at_10']:.4f}, after re-rank "
                  + ", ".join(f"R={r} {v:.4f}" for r, v in entry["recall_at_10_after_rerank"].items())
                  + f"; train {train_s:.1f} s, mse {entry['reconstruction_mse']:.4f}")
        out["sizes"][str(nbytes)] = res
    return out


def main() -> None:
    args = parse_args()
    import vidsearch  # noqa: F401  (sets OPENBLAS_CORETYPE before FAISS loads)
    import faiss

    faiss.omp_set_num_threads(args.faiss_threads)
    config = {
        "k": K, "rerank_R": list(RERANK), "n_query": N_QUERY, "seed": SEED, "bytes_per_vector": args.bytes,
        "nbits": 8, "methods": args.methods, "datasets": args.datasets, "n_synthetic": args.n, "fps": args.fps,
        "faiss_threads": args.faiss_threads, "torch_threads": args.torch_threads,
        "opq": {"niter": 50, "niter_pq": 25}, "learned": LEARNED.to_dict(),
        "metric": "squared L2 (vectors are L2-normalised); recall tie-tolerant (knn_recall with exact distances)",
        "search": "to_faiss(): IndexPQ (ADC), behind LinearTransform(rotation_) for opq/learned",
    }
    payload = C.header("compress", config)
    payload["cpu_probe_start"] = C.cpu_probe()
    payload["datasets"] = {}
    for name in args.datasets:
        if name == "synthetic":
            xb, xq = synthetic(args.n)
            desc: dict[str, Any] = {"kind": "gaussian mixture", "n_clusters": 1000, "dim": 256, "seed": SEED}
        else:
            xb, xq, desc = sscd_features(args.fps)
        C.log(f"[compress] {name}: {len(xb)} base, {len(xq)} queries, {xb.shape[1]}-d")
        payload["datasets"][name] = {"data": desc, **run_dataset(name, xb, xq, args)}
    payload["cpu_probe_end"] = C.cpu_probe()
    payload["load_avg_end"] = C.load_average()

    rows = []
    for name, ds in payload["datasets"].items():
        for nbytes, res in ds["sizes"].items():
            for method, e in res.items():
                rr = e["recall_at_10_after_rerank"]
                rows.append([name, nbytes, method, e["recall_at_10"], *(rr[str(r)] for r in RERANK),
                             e["train_seconds"], e["reconstruction_mse"]])
    C.log("\n" + C.table(["dataset", "bytes", "method", "R@10", *(f"rr{r}" for r in RERANK), "train_s", "mse"], rows))
    C.emit("compress", payload, args.json)


if __name__ == "__main__":
    main()
