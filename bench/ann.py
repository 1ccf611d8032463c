"""Approximate nearest-neighbour benchmark: vidsearch's compressed index against FAISS and hnswlib,
measured in one run on the same data.

    python bench/ann.py --n 100000 --json          # synthetic 256-d Gaussian mixture, a few minutes
    python bench/ann.py --n 1000000 --scaling      # + latency vs collection size, exact scan beside it
    python bench/ann.py --data sscd --n 100000     # real SSCD frame features (augmented copies)
    python bench/ann.py --n 10000000 --data-dir /var/tmp/ann --methods vidsearch,faiss_ivfpq_refine \
        --share-centroids --exact-latency 10 --wait-quiet 1800
                                                   # 10M: base vectors memory-mapped from DIR, not in RAM

Every method is swept over its search-time knob and reported at the cheapest setting that reaches
recall@10 >= 0.98 against exact search (or at its best recall when none does, flagged
``reached_target: false``). Latency: one query per call, 1 thread; QPS: all queries in one batch,
2 threads. Methods (``--methods``): faiss_flat, faiss_hnswflat, hnswlib, faiss_ivfpq_refine, faiss_hnswpq(_refine),
faiss_lsh(_refine) (FAISS's LSH: 256 sign bits of rotated data, a linear Hamming scan; not in the default list),
milvus_hnsw, milvus_ivf_sq8 (Milvus Lite through the collection's MilvusIndex; RAM = its files on disk),
vidsearch (the collection default), vidsearch_opq, vidsearch_pq8, vidsearch_learned.
RAM bytes/vector: the FAISS structures as serialised (codes, ids, centroids, graphs);
vectors used only for re-rank are reported separately (``rerank_bytes_per_vector``): ours are
float16 on disk (memory-mapped), FAISS's IndexRefineFlat keeps float32 in RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as common  # noqa: E402
from vidsearch.index.ivf import faiss_ram_bytes  # noqa: E402

TARGET = 0.98


def synthetic(n: int, nq: int, dim: int, seed: int = 0, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture: 1000 clusters (or n/100), per-point noise scale in [0.3, 1.0], L2-normalised.

    With ``data_dir`` the base vectors are written to (or reused from) a ``.npy`` file there and
    returned memory-mapped, so 10M x 256 float32 (10 GB) need not sit in RAM."""
    rng = np.random.default_rng(seed)
    k = max(10, min(1000, n // 100))
    centers = rng.standard_normal((k, dim)).astype(np.float32)
    base_path = qpath = None
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        base_path = data_dir / f"synthetic-{n}-{nq}-{dim}-{seed}.npy"
        qpath = data_dir / f"synthetic-{n}-{nq}-{dim}-{seed}-queries.npy"
        if base_path.exists() and qpath.exists():
            return np.load(base_path, mmap_mode="r"), np.load(qpath)
        tmp = base_path.with_suffix(".tmp.npy")
        base = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    else:
        base = np.empty((n, dim), np.float32)
    queries = np.empty((nq, dim), np.float32)
    step = 200_000
    for s in range(0, n + nq, step):
        m = min(step, n + nq - s)
        lab = rng.integers(0, k, m)
        x = centers[lab] + rng.standard_normal((m, dim)).astype(np.float32) * rng.uniform(0.3, 1.0, (m, 1)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        nb = max(0, min(m, n - s))  # rows of this chunk that belong to the base, the rest are queries
        base[s : s + nb] = x[:nb]
        queries[max(0, s - n) : max(0, s - n) + m - nb] = x[nb:]
    if base_path is not None and qpath is not None:
        base.flush()
        del base
        os.replace(tmp, base_path)
        np.save(qpath, queries)
        return np.load(base_path, mmap_mode="r"), queries
    return base, queries


def exact_knn(xq: np.ndarray, xb: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k ids over a (possibly memory-mapped) base: the library's one exact scan."""
    from vidsearch.index import exact_knn as scan

    return scan(xq, xb, k, chunk=1_000_000).ids


def _chunks(n: int, step: int = 500_000):  # type: ignore[no-untyped-def]
    for s in range(0, n, step):
        yield s, min(n, s + step)


def real_features(kind: str, n: int, nq: int, seed: int = 0, data_dir: Path | None = None,
                  encode_only: str = "") -> tuple[np.ndarray, np.ndarray] | None:
    """Frame features of the real sample footage and augmented copies (crops, flips, noise, colour).

    Without ``data_dir``: one random stream, as the 100K result files were made. With it: the vectors
    are made in blocks of ``BLOCK`` (block b drawn from its own seed (seed, b)), each saved to
    ``data_dir`` as it is done, so encoding 1M frames (hours here) can be stopped and resumed; the
    base is returned memory-mapped. ``encode_only`` ("forward" or "reverse") only makes the missing
    blocks, in that order, and returns None: augmenting runs on one core, so a second process
    encoding from the other end halves the wall time."""
    from vidsearch.decode import iter_frames
    from vidsearch.encode import load_encoder
    from vidsearch.evaluate import samples

    enc = load_encoder({"sscd": "sscd-distilled", "effnet": "effnet-lite0"}[kind])
    frames_list = []
    for p in samples.reference_footage() + samples.iscc_videos()[:3]:
        frames_list += [f.image for f in iter_frames(p, (256, 256), fps=4.0)]
    frames = np.stack(frames_list)
    w, h = enc.input_size
    from PIL import Image

    def draw(rng: np.random.Generator, count: int) -> np.ndarray:
        vecs = []
        total = 0
        while total < count:
            idx = rng.integers(0, len(frames), 256)
            batch = []
            for i in idx:
                img = frames[i]
                c = rng.uniform(0.6, 1.0)
                ch, cw = int(256 * c), int(256 * c)
                y0, x0 = rng.integers(0, 256 - ch + 1), rng.integers(0, 256 - cw + 1)
                img = img[y0 : y0 + ch, x0 : x0 + cw]
                if rng.random() < 0.5:
                    img = img[:, ::-1]
                img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((w, h)), np.float32)
                img = img * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30) + rng.normal(0, rng.uniform(0, 12), img.shape)
                batch.append(np.clip(img, 0, 255).astype(np.uint8))
            vecs.append(enc.encode(np.stack(batch)))
            total += len(batch)
            if len(vecs) % 20 == 0:
                common.log(f"  real features: {total}/{count}")
        return np.concatenate(vecs)[:count]

    if data_dir is None:
        rng = np.random.default_rng(seed)
        x = draw(rng, n + nq)
        common.log(f"  real features: {n + nq}")
        x = x[rng.permutation(len(x))]
        return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
    folder = data_dir / f"real-{kind}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    # the queries are the first block (held out), the base the next ones: a larger n reuses a smaller run's blocks
    blocks = [("queries", nq)] + [(f"base-{b:05d}", min(BLOCK, n - b * BLOCK)) for b in range(-(-n // BLOCK))]
    order = list(enumerate(blocks))
    for b, (name, count) in (order[::-1] if encode_only == "reverse" else order):
        path = folder / f"{name}-{count}.npy"
        if path.exists():
            continue
        x = draw(np.random.default_rng([seed, b]), count)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # two encoding processes may meet on a block
        np.save(tmp, x)
        os.replace(tmp, path)
        common.log(f"  real features: block {b}/{len(blocks) - 1} saved")
    if encode_only:
        return None
    base_path = folder / f"base-{n}.npy"
    if not base_path.exists():
        tmp = base_path.with_suffix(".tmp.npy")
        first = np.load(folder / f"{blocks[1][0]}-{blocks[1][1]}.npy")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, first.shape[1]))
        for b, (name, count) in enumerate(blocks[1:]):
            mm[b * BLOCK : b * BLOCK + count] = np.load(folder / f"{name}-{count}.npy")
        mm.flush()
        del mm
        os.replace(tmp, base_path)
    return np.load(base_path, mmap_mode="r"), np.load(folder / f"queries-{nq}.npy")


CHECKPOINT = 1_000_000  # vectors added between checkpoints of a cached (--index-cache) vidsearch build
BLOCK = 10_000  # vectors per saved block of real features (about a minute of sscd-distilled encoding here)


# ----------------------------------------------------------------------------- methods
class Method:
    """A built index: ``search(q, k, setting) -> ids``; ``settings`` ordered cheapest first."""

    name: str
    settings: list[Any]
    ram_bytes: int = 0
    rerank_bytes_per_vector: float = 0.0
    disk_bytes_per_vector: float = 0.0
    build_s: float = 0.0
    reused_build: bool = False
    # settings -> their group for --pick fastest (same probe breadth; members ordered by re-rank depth)
    group: Callable[[Any], Any] | None = None

    def search(self, q: np.ndarray, k: int, setting: Any) -> np.ndarray:
        raise NotImplementedError


class FaissMethod(Method):
    def __init__(self, name: str, index, settings: list[Any], apply: Callable[[Any], Any], ram_index=None,  # type: ignore[no-untyped-def]
                 rerank_bpv: float = 0.0) -> None:
        self.name, self.index, self.settings, self._apply = name, index, settings, apply
        self.ram_bytes = faiss_ram_bytes(ram_index if ram_index is not None else index)
        self.rerank_bytes_per_vector = rerank_bpv

    def search(self, q, k, setting):  # type: ignore[no-untyped-def]
        return self.index.search(q, k, params=self._apply(setting))[1]


failed: dict[str, str] = {}  # method -> why it could not be built (reported in the result file)


def _index_code_tag() -> str:
    """Short hash of the index code: a cached index is reused only while the code that built it is unchanged."""
    import hashlib

    import vidsearch.index.ivf as ivf_mod

    return hashlib.sha256(Path(ivf_mod.__file__).read_bytes()).hexdigest()[:10]


def build_methods(names: list[str], xb: np.ndarray, seed: int, workdir: Path, share: bool = False,  # type: ignore[no-untyped-def]
                  cache: tuple[Path, str] | None = None, nlist: int = 0):
    """Yield the methods one at a time (built, then measured and dropped by the caller: at 10M two
    built indexes at once would not fit in RAM beside each other). With ``cache`` (folder, data key)
    the built vidsearch indexes are kept there and reused by later runs
    on the same data while the index code is unchanged (a 10M build is over an hour here)."""
    from vidsearch.index.ivf import IVFPQConfig, choose_nlist

    n, d = xb.shape
    default = IVFPQConfig()
    nlist = nlist or choose_nlist(n, default.code_dim(d), default.list_padding_bytes())  # the collection default's choice
    pick = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, max(50 * nlist, 100_000))])
    train = np.ascontiguousarray(xb[pick], dtype=np.float32)
    # re-rank rows: the float32 base itself, memory-mapped, as a collection re-ranks from segments.f32
    # (``MemmapStore`` over a ``VectorFile`` view): the same store and kernel as the product
    if cache is not None:
        cache[0].mkdir(parents=True, exist_ok=True)
    shared: dict[str, np.ndarray] = {}  # with share=True: the first IVF's k-means centroids, reused by the others
    for name in names:
        common.log(f"building {name} (n={n}, d={d})")
        try:
            yield _build_one(name, xb, seed, nlist, train, workdir, shared if share else None, cache)
        except Exception as exc:  # one method failing to build is reported; the others are still measured
            common.log(f"FAILED to build {name}: {type(exc).__name__}: {exc}")
            failed[name] = f"{type(exc).__name__}: {exc}"[:500]


def _add(index, xb: np.ndarray, with_ids: bool = False, first_id: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Add a (possibly memory-mapped) base in chunks: one float32 copy of 10M x 256 is 10 GB."""
    for a, b in _chunks(len(xb)):
        x = np.ascontiguousarray(xb[a:b], dtype=np.float32)
        if with_ids:
            index.add(np.arange(first_id + a, first_id + b, dtype=np.int64), x)
        else:
            index.add(x)


def _hnsw_params(ef: int):  # type: ignore[no-untyped-def]
    import faiss

    p = faiss.SearchParametersHNSW()
    p.efSearch = ef
    return p


def _build_one(name: str, xb: np.ndarray, seed: int, nlist: int, train: np.ndarray,
               workdir: Path, shared: dict[str, np.ndarray] | None = None, cache: tuple[Path, str] | None = None) -> Method:
    import faiss

    from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, IVFSearchParams, MemmapStore

    n, d = xb.shape
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    m: Method
    if name == "faiss_flat":
        idx = faiss.IndexFlatIP(d)
        _add(idx, xb)
        m = FaissMethod(name, idx, [None], lambda s: None)
    elif name == "faiss_hnswflat":
        idx = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        _add(idx, xb)
        m = FaissMethod(name, idx, [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512], _hnsw_params)
    elif name in ("faiss_ivfpq_refine", "faiss_hnswpq", "faiss_hnswpq_refine"):
        base = faiss.index_factory(d, f"IVF{nlist},PQ32" if name == "faiss_ivfpq_refine" else "HNSW32,PQ32")
        # the factory turns on polysemous training (a code-permutation search for Hamming filtering);
        # nothing here uses it and it costs ~25 s per build, so it is off
        if hasattr(base, "do_polysemous_training"):
            base.do_polysemous_training = False
        if shared is not None and "centroids" in shared and name == "faiss_ivfpq_refine":
            base.quantizer.add(shared["centroids"])  # a filled quantizer is not retrained: only PQ is
        base.train(train)
        if name == "faiss_hnswpq":
            _add(base, xb)
            m = FaissMethod(name, base, [16, 32, 64, 128, 256, 512, 1024], _hnsw_params)
        else:
            ref = faiss.IndexRefineFlat(base)
            _add(ref, xb)
            ivf = name == "faiss_ivfpq_refine"
            knob = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) if ivf else (32, 64, 128, 256, 512)  # nprobe or efSearch
            # nprobe and k_factor on the grid ours is swept over (re-rank depth 50..500 = k_factor 5..50; the 10M result file of
            # session 3 was made with k_factor <= 30, so FAISS could not reach 0.98 there)
            settings = [(v, kf) for v in knob for kf in (5, 10, 15, 20, 30, 50)]

            def rp(s, ivf=ivf):  # type: ignore[no-untyped-def]
                inner = faiss.SearchParametersIVF() if ivf else faiss.SearchParametersHNSW()
                setattr(inner, "nprobe" if ivf else "efSearch", s[0])
                p = faiss.IndexRefineSearchParameters()
                p.k_factor = s[1]
                p.base_index_params = inner
                rp._keep = (inner, p)  # type: ignore[attr-defined]  # C++ holds raw pointers
                return p

            m = FaissMethod(name, ref, settings, rp, ram_index=base, rerank_bpv=4.0 * d)
            m.group = lambda s: s[0]  # type: ignore[method-assign]  # nprobe; k_factor ascending within
    elif name in ("faiss_lsh", "faiss_lsh_refine"):
        # the vector-search source's LSH: random rotations then sign bits (FAISS IndexLSH), 256 bits = 32 B per
        # vector like our codes, searched by a linear Hamming scan; "_refine" re-ranks the top k x k_factor exactly
        lsh = faiss.IndexLSH(d, 256, True, True)  # rotate the data; thresholds trained on the sample
        lsh.train(train)
        if name == "faiss_lsh":
            _add(lsh, xb)
            m = FaissMethod(name, lsh, [None], lambda s: None)
        else:
            ref = faiss.IndexRefineFlat(lsh)
            _add(ref, xb)

            def lsh_params(kf):  # type: ignore[no-untyped-def]
                p = faiss.IndexRefineSearchParameters()
                p.k_factor = kf
                return p

            m = FaissMethod(name, ref, [5, 10, 20, 50, 100, 200, 500], lsh_params, ram_index=lsh, rerank_bpv=4.0 * d)
    elif name in ("milvus_hnsw", "milvus_ivf_sq8"):
        # Milvus Lite (the collection's --store milvus:PATH.db) through vidsearch's MilvusIndex: HNSW M16
        # efConstruction 200, or IVF_SQ8 (1 B per dimension) with vidsearch's list count; ef / nprobe swept
        from vidsearch.index.milvus import MilvusIndex

        kind = "HNSW" if name == "milvus_hnsw" else "IVF_SQ8"
        build = {"M": 16, "efConstruction": 200} if kind == "HNSW" else {"nlist": nlist}
        mil = MilvusIndex(d, f"milvus:{workdir / (name + '.db')}", index_type=kind, build_params=build)
        _add(mil, xb, with_ids=True)
        mil.wait_indexed(timeout_s=3600)
        knobs = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512] if kind == "HNSW" else [4, 8, 12, 16, 24, 32, 48, 64, 96, 128]

        class Mv(Method):
            def search(self, q, k, s):  # type: ignore[no-untyped-def]
                return self.index.search(q, k, IVFSearchParams(nprobe=s, ef_search=s, rerank=0)).ids

        m = Mv()
        m.index = mil  # type: ignore[attr-defined]
        db = workdir / (name + ".db")
        size = sum(f.stat().st_size for f in db.rglob("*") if f.is_file()) if db.is_dir() else db.stat().st_size
        # RAM: Milvus Lite's process memory is not separable from ours; its files on disk stand in (vectors,
        # index), an upper bound on what it must hold
        m.name, m.settings, m.ram_bytes = name, knobs, size
    elif name == "hnswlib":
        import hnswlib

        idx = hnswlib.Index(space="ip", dim=d)
        idx.init_index(max_elements=n, M=32, ef_construction=100, random_seed=seed)
        for a, b in _chunks(n):
            idx.add_items(np.ascontiguousarray(xb[a:b], dtype=np.float32), ids[a:b], num_threads=2)
        path = workdir / "hnswlib.bin"
        idx.save_index(str(path))

        class H(Method):
            def search(self, q, k, ef):  # type: ignore[no-untyped-def]
                self.index.set_ef(max(ef, k))
                return self.index.knn_query(q, k=k, num_threads=getattr(self, "threads", 1))[0].astype(np.int64)

        m = H()
        m.index = idx  # type: ignore[attr-defined]
        m.name, m.settings, m.ram_bytes = name, [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512], path.stat().st_size
    elif name.startswith("vidsearch"):
        # (quantizer, PQ sub-quantizers, bits per code): "vidsearch" is the collection default
        # (32 B codes: 64 x 4-bit fast-scan since issue #13; "vidsearch_pq8" is the 8-bit PQ32 before it)
        variant = {"vidsearch": ("pq", 64, 4), "vidsearch_pq8": ("pq", 32, 8), "vidsearch_opq": ("opq", 64, 4),
                   "vidsearch_learned": ("learned", 64, 4)}[name]
        store = MemmapStore(xb)  # float32 rows, as a collection's segments.f32
        cached = None if cache is None else cache[0] / f"{cache[1]}-{name}-nlist{nlist}-{_index_code_tag()}.vsi"
        reused = cached is not None and cached.exists()
        if reused:
            idx = IVFPQIndex.load(cached, store)
            meta = json.loads(cached.with_suffix(".json").read_text())
            common.log(f"  {name}: reusing {cached} (built in {meta['build_s']} s at {meta['git']})")
        elif cached is None:
            idx = IVFPQIndex(d, IVFPQConfig(quantizer=variant[0], pq_m=variant[1], nlist=nlist, nbits=variant[2]), store)
            idx.train(train, seed=seed)
            _add(idx, xb, with_ids=True)
            meta = {"build_s": round(time.perf_counter() - t0, 2)}
        else:
            # a cached build is resumable: the trained index is checkpointed, then again every CHECKPOINT
            # vectors added (a 10M build is ~80 min here, longer than what often runs uninterrupted)
            partial = cached.with_name(cached.stem + "-partial.vsi")
            done, before = 0, 0.0
            if partial.exists():
                idx = IVFPQIndex.load(partial, store)
                # the count added comes from the index file itself, so a stale side file cannot make it re-add
                done = int(idx._index.ntotal)
                side = partial.with_suffix(".json")
                before = json.loads(side.read_text())["build_s"] if side.exists() else 0.0
                common.log(f"  {name}: resuming the build from {partial} ({done} of {n} added, {before} s so far)")
            else:
                idx = IVFPQIndex(d, IVFPQConfig(quantizer=variant[0], pq_m=variant[1], nlist=nlist, nbits=variant[2]), store)
                idx.train(train, seed=seed)

            git = common.header("ann", {})["git"]  # the code this run builds with (commits may land meanwhile)

            def checkpoint(path: Path, added: int) -> None:
                from vidsearch.store.manifest import atomic_write_text

                idx.save(path)
                atomic_write_text(path.with_suffix(".json"), json.dumps({
                    "added": added, "build_s": round(before + time.perf_counter() - t0, 2),
                    "git": git, "resumed": before > 0}))

            if done == 0:
                checkpoint(partial, 0)
            for a in range(done, n, CHECKPOINT):
                _add(idx, xb[a : min(n, a + CHECKPOINT)], with_ids=True, first_id=a)
                checkpoint(partial, min(n, a + CHECKPOINT))
            checkpoint(cached, n)
            meta = json.loads(cached.with_suffix(".json").read_text())
            partial.unlink()
            partial.with_suffix(".json").unlink(missing_ok=True)
        if shared is not None and "centroids" not in shared and variant[0] == "pq" and idx.code_dim == d:
            q = idx._ivf.quantizer
            shared["centroids"] = q.reconstruct_n(0, q.ntotal)
        from vidsearch.index.ivf import FLAT_COARSE_MAX

        # centroid-graph breadth: 2x nprobe (>= 32), and a narrow walk (max(16, nprobe)) tried first at equal
        # (nprobe, re-rank); a flat coarse quantizer ignores it, so there only one is swept
        efs = (lambda p: [max(32, 2 * p)]) if nlist <= FLAT_COARSE_MAX else (lambda p: sorted({max(16, p), max(32, 2 * p)}))
        settings = [IVFSearchParams(nprobe=p, rerank=r, ef_search=ef)
                    for p in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) for r in (16, 32, 48, 64, 100, 150, 200, 300, 500)
                    for ef in efs(p)]
        settings.sort(key=lambda s: (s.nprobe * (n / nlist) / 32 + s.rerank * d / 64, s.ef_search))  # rough cost order

        class V(Method):
            def search(self, q, k, s):  # type: ignore[no-untyped-def]
                return self.index.search(q, k, s).ids

        m = V()
        m.index = idx  # type: ignore[attr-defined]
        m.name, m.settings, m.ram_bytes = name, settings, idx.memory_bytes()
        m.group = lambda s: (s.nprobe, s.ef_search)  # type: ignore[method-assign]
        m.rerank_bytes_per_vector = 0.0
        m.disk_bytes_per_vector = 4.0 * d
        m.reused_build = reused  # build_s is then the build time recorded when the cached index was made
    else:
        raise SystemExit(f"unknown method {name}")
    m.build_s = meta["build_s"] if name.startswith("vidsearch") else time.perf_counter() - t0
    return m


def measure(m: Method, xq: np.ndarray, gt: np.ndarray, k: int, n: int, single: int, fixed: Any = None,
            pick: str = "first") -> dict[str, Any]:
    import faiss

    from vidsearch.evaluate.metrics import knn_recall

    faiss.omp_set_num_threads(2)
    m.threads = 2  # type: ignore[attr-defined]
    sweep = []
    chosen = None
    reached = False
    candidates = [fixed] if fixed is not None else m.settings
    timed: list[dict[str, Any]] = []
    if fixed is None and pick == "fastest" and m.group is not None:
        # every (probe breadth) group's shallowest re-rank reaching the target, then the one with the
        # lowest single-query p50 (200 queries, 1 thread): the cost-order guess of "first" can be off
        # by 25 % (1280-d EfficientNet 1M: nprobe 48 / re-rank 100 first, nprobe 24 / re-rank 150 faster)
        groups: dict[Any, list[Any]] = {}
        for s in candidates:
            groups.setdefault(m.group(s), []).append(s)
        frontier = []
        for members in groups.values():
            for s in members:  # re-rank depth ascending within a group
                r = knn_recall(m.search(xq, k, s), gt, k)
                sweep.append({"setting": str(s), "recall10": round(r, 4)})
                if r >= TARGET:
                    frontier.append(s)
                    break
        if frontier:
            faiss.omp_set_num_threads(1)
            m.threads = 1  # type: ignore[attr-defined]
            for s in frontier:
                for i in range(20):
                    m.search(xq[i : i + 1], k, s)
                lat = [common.time_call(lambda i=i: m.search(xq[i : i + 1], k, s))[0] for i in range(200)]
                timed.append({"setting": str(s), "p50_ms": round(float(np.median(lat)) * 1000, 4)})
            faiss.omp_set_num_threads(2)
            m.threads = 2  # type: ignore[attr-defined]
            chosen, reached = frontier[int(np.argmin([t["p50_ms"] for t in timed]))], True
    else:
        for s in candidates:
            ids = m.search(xq, k, s)
            r = knn_recall(ids, gt, k)
            sweep.append({"setting": str(s), "recall10": round(r, 4)})
            if r >= TARGET:
                chosen, reached = s, True
                break
    if not reached:  # best recall of the sweep
        chosen = candidates[int(np.argmax([e["recall10"] for e in sweep]))]
    recall = next(e["recall10"] for e in sweep if e["setting"] == str(chosen))
    # batch QPS, 2 threads, best of 3
    best = min(common.time_call(lambda: m.search(xq, k, chosen))[0] for _ in range(3))
    qps = len(xq) / best
    # single query, 1 thread
    faiss.omp_set_num_threads(1)
    m.threads = 1  # type: ignore[attr-defined]
    for i in range(20):
        m.search(xq[i : i + 1], k, chosen)
    lat = []
    for i in range(min(single, len(xq))):
        t = time.perf_counter()
        m.search(xq[i : i + 1], k, chosen)
        lat.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(2)
    lat_ms = np.array(lat) * 1000
    return {
        "recall10": recall, "reached_target": reached, "setting": str(chosen),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 4), "p99_ms": round(float(np.percentile(lat_ms, 99)), 4),
        "qps": round(qps, 1), "ram_bytes_per_vector": round(m.ram_bytes / n, 2),
        "rerank_bytes_per_vector": m.rerank_bytes_per_vector, "disk_bytes_per_vector": m.disk_bytes_per_vector,
        "build_s": round(m.build_s, 2), "index_reused_from_cache": m.reused_build, "sweep": sweep,
        "pick": pick if m.group is not None and fixed is None else "first", "frontier_p50": timed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=1000, help="single-query latency samples")
    ap.add_argument("--data", choices=["synthetic", "sscd", "effnet"], default="synthetic")
    ap.add_argument("--methods", default="faiss_flat,faiss_hnswflat,hnswlib,faiss_ivfpq_refine,faiss_hnswpq,"
                    "faiss_hnswpq_refine,vidsearch,vidsearch_opq,vidsearch_pq8")
    ap.add_argument("--scaling", action="store_true", help="also latency vs collection size (1K..n), exact beside")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--name", default=None, help="result file name (default ann-<data>-<n>)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep the base vectors in .npy files here, memory-mapped and reused across runs (real "
                    "features: saved block by block, so a long encoding can be resumed)")
    ap.add_argument("--share-centroids", action="store_true",
                    help="FAISS IVF-PQ reuses vidsearch's k-means centroids instead of training its own "
                    "(saves ~30 min of k-means at 10M; its build_s then excludes k-means)")
    ap.add_argument("--exact-latency", type=int, default=0, metavar="Q",
                    help="also time Q single exact queries by a chunked scan of the base (for sizes too big "
                    "for an in-RAM flat index)")
    ap.add_argument("--index-cache", action="store_true",
                    help="with --data-dir: keep the ground truth, float16 vectors and built vidsearch indexes under "
                    "DATA_DIR/cache and reuse them (a cached index only while src/vidsearch/index/ivf.py is unchanged; "
                    "its build_s is the one recorded when it was built)")
    ap.add_argument("--encode-only", choices=["forward", "reverse"], default="",
                    help="with --data-dir and real data: only encode the missing feature blocks (in this order) and "
                    "exit; run one forward and one reverse to use both cores (each holds ~4.5 GB, paused or not: "
                    "stop them before a 10M run)")
    ap.add_argument("--nlist", type=int, default=0,
                    help="IVF lists of every IVF method (default: the collection's choice, about 4*sqrt(n) within "
                    "6 B/vector of centroids)")
    ap.add_argument("--pick", choices=["first", "fastest"], default="first",
                    help="setting each method is measured at: the first of its sweep (cheapest first by a cost guess) "
                    "reaching recall@10 0.98, or, for the two-knob IVF methods (probes x re-rank depth), the fastest "
                    "single query among each probe count's shallowest depth reaching it")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before measuring each method, wait up to S seconds for other work on the machine to end")
    args = ap.parse_args()
    import faiss

    k = 10
    if args.data == "synthetic":
        xb, xq = synthetic(args.n, args.queries, args.dim, args.seed, args.data_dir)
    else:
        if args.encode_only:
            if args.data_dir is None:
                raise SystemExit("--encode-only needs --data-dir (the blocks are saved there)")
            real_features(args.data, args.n, args.queries, args.seed, args.data_dir, encode_only=args.encode_only)
            return
        xb, xq = real_features(args.data, args.n, args.queries, args.seed, args.data_dir)  # type: ignore[misc]
    n, d = xb.shape
    common.log(f"data {args.data}: n={n} d={d} queries={len(xq)}")
    faiss.omp_set_num_threads(2)
    cache = None
    if args.index_cache:
        if args.data_dir is None:
            raise SystemExit("--index-cache needs --data-dir (the cache lives under it)")
        cache = (args.data_dir / "cache", f"{args.data}-{n}-{len(xq)}-{d}-seed{args.seed}")
        cache[0].mkdir(parents=True, exist_ok=True)
    gt_path = None if cache is None else cache[0] / f"{cache[1]}-gt{k}.npy"
    if gt_path is not None and gt_path.exists():
        gt = np.load(gt_path)
    else:
        gt = exact_knn(xq, xb, k)
        if gt_path is not None:
            np.save(gt_path, gt)
    names = args.methods.split(",")
    results: dict[str, Any] = {}
    quiet: dict[str, Any] = {}
    exact_single: dict[str, Any] = {}
    if args.exact_latency:
        faiss.omp_set_num_threads(1)
        lat = [common.time_call(lambda i=i: exact_knn(xq[i : i + 1], xb, k))[0] for i in range(args.exact_latency + 1)][1:]
        faiss.omp_set_num_threads(2)
        exact_single = {"queries": args.exact_latency, **common.summarize_ms(lat),
                        "how": "chunked faiss.knn over the memory-mapped base, 1 thread, page cache warm"}
        common.log(f"exact single-query scan: {exact_single}")
    with tempfile.TemporaryDirectory(prefix="ann-bench-", dir=args.data_dir) as tmp:
        for m in build_methods(names, xb, args.seed, Path(tmp), share=args.share_centroids, cache=cache, nlist=args.nlist):
            if args.wait_quiet:
                quiet[m.name] = common.wait_for_quiet(args.wait_quiet)
            results[m.name] = measure(m, xq, gt, k, n, args.single, pick=args.pick)
            r = results[m.name]
            common.log(f"  {m.name}: recall10 {r['recall10']} p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms "
                       f"qps {r['qps']} RAM {r['ram_bytes_per_vector']} B/vec build {r['build_s']} s [{r['setting']}]")
            del m
        scaling = []
        if args.scaling:
            sizes = [s for s in (1_000, 10_000, 100_000, 1_000_000, 10_000_000) if s <= n]
            for size in sizes:
                sub = xb[:size]
                g = exact_knn(xq[:200], sub, k)
                row: dict[str, Any] = {"n": size}
                wanted = ["faiss_flat", "vidsearch"] if size >= 10_000 else ["faiss_flat"]
                reuse = [w for w in wanted if size == n and w in results]  # the full-size run measured these already
                for w in reuse:
                    row[w] = {key: results[w][key] for key in ("recall10", "p50_ms", "p99_ms", "setting")}
                for m in build_methods([w for w in wanted if w not in reuse], sub, args.seed, Path(tmp)):
                    r = measure(m, xq[:200], g, k, size, 200)
                    row[m.name] = {key: r[key] for key in ("recall10", "p50_ms", "p99_ms", "setting")}
                scaling.append(row)
                common.log(f"  scaling {row}")
    rows = [[name, r["recall10"], r["p50_ms"], r["p99_ms"], r["qps"], r["ram_bytes_per_vector"], r["build_s"], r["setting"]]
            for name, r in results.items()]
    common.log(common.table(["method", "recall@10", "p50 ms", "p99 ms", "QPS", "RAM B/vec", "build s", "setting"], rows))
    payload = {"n": n, "dim": d, "methods": results, "scaling": scaling, "failed": failed,
               "exact_single_query": exact_single, "quiet_before_measure": quiet,
               **common.header("ann", {"n": n, "dim": d, "queries": len(xq), "data": args.data, "seed": args.seed,
                                       "k": k, "target_recall10": TARGET, "methods": names,
                                       "base_memory_mapped": args.data_dir is not None,
                                       "share_centroids": args.share_centroids, "index_cache": args.index_cache,
                                       "nlist": args.nlist or "auto", "pick": args.pick})}
    common.emit(args.name or f"ann-{args.data}-{n}", payload, args.json)


if __name__ == "__main__":
    main()
