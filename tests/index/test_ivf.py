"""The compressed index against exact search, with tie-tolerant recall; add/remove/persist."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from vidsearch.compress.learned_pq import LearnedPQConfig
from vidsearch.errors import CollectionError, ConfigError, NotFittedError
from vidsearch.evaluate.metrics import knn_recall
from vidsearch.index import FlatIndex
from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, IVFSearchParams, MemmapStore, choose_nlist


def clustered(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, d)).astype(np.float32)
    x = centers[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """FAISS on one OpenMP thread here: at these sizes a second thread mostly spins, and on a busy
    2-core machine it made training several times slower (as in tests/compress)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    """2000 base vectors (64-d, 50 clusters) and 200 queries: enough for 64 lists and 256-centroid
    sub-quantizers; recall, re-rank and persistence do not depend on a larger base (training time does)."""
    x = clustered(2_200)
    return x[:2_000], x[2_000:]


# the learned quantizer trained in seconds (its OPQ start cut to 2 iterations): these tests check how the
# index holds and persists it; its quality against OPQ is tests/compress's (slow) check
QUICK = LearnedPQConfig.quick(init_niter=2)


def build(xb, quantizer="pq", store=True):
    idx = IVFPQIndex(xb.shape[1], IVFPQConfig(pq_m=16, quantizer=quantizer, nlist=64),
                     MemmapStore(xb.astype(np.float16)) if store else None, learned=QUICK)
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    return idx


@pytest.fixture(scope="module")
def built(data):
    """quantizer -> an index of ``data``'s base, trained once for the module; a test that changes an index
    loads a private copy of it (``IVFPQIndex.load``) or builds its own."""
    cache = {}

    def get(quantizer="pq"):
        if quantizer not in cache:
            cache[quantizer] = build(data[0], quantizer)
        return cache[quantizer]
    return get


def exact(xb, xq, k=10):
    f = FlatIndex(xb.shape[1])
    f.add(np.arange(len(xb)), xb)
    return f.search(xq, k)


@pytest.mark.parametrize("quantizer", ["pq", "opq", "learned"])
def test_recall_against_exact_with_rerank(data, built, quantizer, tmp_path):
    xb, xq = data
    idx = built(quantizer)
    truth = exact(xb, xq)
    hits = idx.search(xq, 10, IVFSearchParams(nprobe=16, rerank=100))
    # scores after re-rank are exact inner products (float16 storage: tolerance 1e-2)
    r = knn_recall(hits.ids, truth.ids, 10, -hits.scores, -truth.scores + 1e-2)
    assert r >= 0.97, r
    no_rerank = idx.search(xq, 10, IVFSearchParams(nprobe=16, rerank=0))
    assert knn_recall(no_rerank.ids, truth.ids, 10) < r  # re-rank is what lifts recall
    assert idx.memory_bytes() / len(xb) < 4 * xb.shape[1]  # far smaller than float32 vectors
    if quantizer == "learned":  # runs in the projected space; persisted like the others
        import faiss

        assert isinstance(idx._index, faiss.IndexPreTransform) and idx._learned_pq.history_
        again = IVFPQIndex.load(_saved(idx, tmp_path), idx.store)
        np.testing.assert_array_equal(again.search(xq, 10, IVFSearchParams(nprobe=16, rerank=0)).ids, no_rerank.ids)


def _saved(idx, directory):
    path = directory / "index.vidsidx"
    idx.save(path)
    return path


def test_self_query_finds_itself(data, built):
    xb, _ = data
    idx = built("pq")
    hits = idx.search(xb[:50], 1, IVFSearchParams(nprobe=8, rerank=32))
    assert (hits.ids[:, 0] == np.arange(50)).mean() >= 0.98


def test_remove_is_filtered_then_compacted(data):
    xb, _ = data
    idx = build(xb)
    idx.config = IVFPQConfig(pq_m=16, nlist=64, compact_fraction=0.5)
    removed = np.arange(0, 40)
    assert idx.remove(removed) == 40
    assert len(idx) == len(xb) - 40
    hits = idx.search(xb[:40], 5, IVFSearchParams(nprobe=8, rerank=32))
    assert not np.isin(hits.ids, removed).any()
    idx.compact()
    assert len(idx) == len(xb) - 40 and int(idx._index.ntotal) == len(xb) - 40
    assert not np.isin(idx.search(xb[:40], 5).ids, removed).any()


def test_incremental_add_without_retraining(data):
    xb, _ = data
    half = len(xb) // 2
    idx = IVFPQIndex(xb.shape[1], IVFPQConfig(pq_m=16, nlist=64), MemmapStore(xb.astype(np.float16)))
    idx.train(xb[:half])
    idx.add(np.arange(half), xb[:half])
    idx.add(np.arange(half, len(xb)), xb[half:])
    assert len(idx) == len(xb)
    hits = idx.search(xb[-10:], 1, IVFSearchParams(nprobe=16, rerank=64))
    assert (hits.ids[:, 0] == np.arange(len(xb) - 10, len(xb))).all()


@functools.lru_cache(maxsize=1)
def _mixture() -> np.ndarray:
    """256-d mixture like bench/ann.py's: FAISS's graph over k-means centroids of it leaves some of them
    without any in-link (bench/centroid_graph.py), which connect_graph() repairs. The first 10,000
    vectors (39 per list of 256, FAISS's minimum) already leave 8 such centroids."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((300, 256)).astype(np.float32)
    x = centers[rng.integers(0, 300, 30_000)] + rng.standard_normal((30_000, 256)).astype(np.float32) * rng.uniform(
        0.3, 1.0, (30_000, 1)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True))[:10_000]


def _unreachable(quantizer) -> int:  # type: ignore[no-untyped-def]
    import faiss

    hp = faiss.SearchParametersHNSW()
    hp.efSearch = 256
    c = quantizer.reconstruct_n(0, quantizer.ntotal)
    return int(np.sum(quantizer.search(c, 1, params=hp)[1][:, 0] != np.arange(quantizer.ntotal)))


def test_an_index_saved_with_an_unrepaired_graph_is_repaired_on_load(tmp_path, monkeypatch):
    import vidsearch.index.ivf as ivf_mod

    x = _mixture()
    monkeypatch.setattr(ivf_mod, "connect_graph", lambda q: 0)  # as files saved before the repair existed
    idx = IVFPQIndex(256, IVFPQConfig(pq_m=16, nlist=256, coarse="hnsw"))
    idx.train(x)
    assert _unreachable(idx._ivf.quantizer) > 0
    idx.save(tmp_path / "old.vsi")
    monkeypatch.undo()
    back = IVFPQIndex.load(tmp_path / "old.vsi")
    assert back.graph_links_repaired > 0 and _unreachable(back._ivf.quantizer) == 0


def test_vectors_are_filed_where_the_graph_search_finds_them_and_every_centroid_is_reachable():
    """Every vector sits in the list the HNSW graph over the centroids returns for it (searches walk that
    graph, so a list it cannot reach would lose its vectors), and after connect_graph() every centroid
    is reachable: a search for a centroid returns that centroid."""
    import faiss

    x = _mixture()
    idx = IVFPQIndex(256, IVFPQConfig(pq_m=16, nlist=256, coarse="hnsw", reduce=0))
    idx.train(x)
    assert idx.graph_links_repaired > 0  # the case this guards against does occur on this data
    idx.add(np.arange(len(x)), x)
    ivf = idx._ivf
    stored = np.full(len(x), -1, np.int64)
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        if n:
            stored[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).copy()] = lst
    hp = faiss.SearchParametersHNSW()
    hp.efSearch = 256
    found = ivf.quantizer.search(x, 1, params=hp)[1][:, 0]
    assert (stored >= 0).all() and (stored == found).all()
    assert _unreachable(ivf.quantizer) == 0
    assert len(np.unique(stored)) == ivf.nlist  # no list left empty by an unreachable centroid


def test_coarse_quantizer_is_flat_for_few_lists_and_a_graph_for_many(monkeypatch):
    """``auto`` is flat up to FLAT_COARSE_MAX lists and a graph past it; either can be forced. The limit
    is lowered to 32 here: the rule is the same, without k-means into thousands of lists."""
    import faiss

    import vidsearch.index.ivf as ivf_mod

    monkeypatch.setattr(ivf_mod, "FLAT_COARSE_MAX", 32)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kinds = {}
    for nlist, coarse in ((32, "auto"), (32, "hnsw"), (64, "auto"), (64, "flat")):
        idx = IVFPQIndex(32, IVFPQConfig(pq_m=8, nlist=nlist, coarse=coarse), MemmapStore(x.astype(np.float16)))
        idx.train(x)
        idx.add(np.arange(len(x)), x)
        kinds[nlist, coarse] = type(faiss.downcast_index(idx._ivf.quantizer)).__name__
        hits = idx.search(x[:20], 5, IVFSearchParams(nprobe=nlist // 4, ef_search=64, rerank=50))
        assert (hits.ids[:, 0] == np.arange(20)).all()  # each vector finds itself through either quantizer
    assert kinds == {(32, "auto"): "IndexFlatL2", (32, "hnsw"): "IndexHNSWFlat",
                     (64, "auto"): "IndexHNSWFlat", (64, "flat"): "IndexFlatL2"}
    with pytest.raises(ConfigError):
        IVFPQConfig(coarse="graph")


def test_save_load_roundtrip_and_fuzz(data, built, tmp_path):
    xb, xq = data
    shared = built("pq")
    idx = IVFPQIndex.load(_saved(shared, tmp_path), shared.store)  # a private copy: removing changes it
    np.testing.assert_array_equal(idx.search(xq, 10).ids, shared.search(xq, 10).ids)
    idx.remove(np.array([3, 4]))
    path = tmp_path / "index.vsi"
    idx.save(path)
    back = IVFPQIndex.load(path, MemmapStore(xb.astype(np.float16)))
    a, b = idx.search(xq, 10), back.search(xq, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert back._tombstones == {3, 4}
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(20):  # random corruption: an exception, never a crash
        bad = bytearray(raw)
        if trial % 2:
            bad = bad[: rng.integers(0, len(bad))]
        else:
            for pos in rng.integers(0, min(len(bad), 4096), 8):
                bad[pos] ^= 0xFF
        (tmp_path / "bad.vsi").write_bytes(bytes(bad))
        # every such file is refused with a CollectionError: a 0xFF byte is never valid JSON (UTF-8), the
        # blob's SHA-256 catches any change to it, and a cut file fails its length checks
        with pytest.raises(CollectionError):
            IVFPQIndex.load(tmp_path / "bad.vsi")


def test_errors():
    with pytest.raises(ConfigError, match="must divide"):
        IVFPQIndex(100, IVFPQConfig(pq_m=32))
    with pytest.raises(NotFittedError):
        IVFPQIndex(64, IVFPQConfig(pq_m=16)).add(np.arange(2), np.zeros((2, 64), np.float32))
    with pytest.raises(ConfigError):
        IVFPQConfig(quantizer="zip")


# opq is slow (OPQ over 256 dimensions): learned takes the same path here (a rotation before the IVF-PQ,
# the PCA prepended to it) and test_recall_against_exact_with_rerank[opq] covers OPQ itself
@pytest.mark.parametrize("quantizer", ["pq", pytest.param("opq", marks=pytest.mark.slow), "learned"])
def test_codes_in_a_pca_projection_keep_recall_and_persist(quantizer, tmp_path):
    """With more input dimensions than max(256, 8 * code bytes) the centroids and codes live in the top PCA
    components (reduce=-1): exact re-rank on the full vectors still finds the true neighbours, and a
    saved file searches identically."""
    import faiss

    x = clustered(2_200, d=384, seed=3)
    xb, xq = x[:-200], x[-200:]
    store = MemmapStore(xb.astype(np.float16))
    idx = IVFPQIndex(384, IVFPQConfig(pq_m=16, quantizer=quantizer, nlist=64), store, learned=QUICK)
    # 8 dimensions per code byte, at least 256: 32-byte codes (64 x 4 bits, or 32 x 8) in 256, 64-byte ones in 512
    assert idx.code_dim == 256 and IVFPQConfig(pq_m=64).code_dim(1280) == 256
    assert IVFPQConfig(pq_m=128).code_dim(1280) == 512 and IVFPQConfig(pq_m=64, nbits=8).code_dim(1280) == 512
    assert IVFPQConfig(pq_m=32, nbits=8).code_dim(1280) == 256
    assert IVFPQConfig(reduce=0).code_dim(1280) == 1280 and IVFPQConfig(reduce=128).code_dim(1280) == 128
    assert IVFPQConfig(pq_m=20).code_dim(1280) == 1280  # 20 does not divide 256: full width, not an error
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    assert faiss.downcast_index(idx._ivf.quantizer).d == 256  # centroids in the projection
    truth = exact(xb, xq)
    params = IVFSearchParams(nprobe=16, rerank=100)
    hits = idx.search(xq, 10, params)
    assert knn_recall(hits.ids, truth.ids, 10, -hits.scores, -truth.scores + 1e-2) >= 0.97
    again = IVFPQIndex.load(_saved(idx, tmp_path), store)
    assert again.code_dim == 256
    np.testing.assert_array_equal(again.search(xq, 10, params).ids, hits.ids)


@pytest.mark.parametrize("nbits", [4, 8])
def test_no_precomputed_table_is_held_and_any_is_counted(tmp_path, nbits):
    """FAISS's IVF-PQ precomputed table (nlist * pq_m * 2**nbits floats) is not serialised, so a memory
    figure from the file alone would miss it: the index never builds it (after train or load), and
    memory_bytes() counts it if one is made."""
    xb = clustered(3_000, seed=4)
    idx = IVFPQIndex(64, IVFPQConfig(pq_m=16, nlist=64, nbits=nbits), MemmapStore(xb.astype(np.float16)))
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    assert idx._ivf.precomputed_table.size() == 0
    again = IVFPQIndex.load(_saved(idx, tmp_path), idx.store)
    assert again._ivf.precomputed_table.size() == 0
    before = again.memory_bytes()
    again._ivf.use_precomputed_table = 1
    again._ivf.precompute_table()
    assert again.memory_bytes() - before == 64 * 16 * 2**nbits * 4


def test_faiss_ram_bytes_counts_the_table_faiss_builds_by_default():
    """The bench's FAISS IVF-PQ peer keeps FAISS's default (the table built at training): its RAM
    figure must include it, a flat index has none."""
    import faiss

    from vidsearch.index.ivf import faiss_ram_bytes

    xb = clustered(3_000, d=32, seed=5)
    # "np": without polysemous training (on in index_factory's default, most of the training time and
    # unrelated to the table, which IndexIVFPQ.train builds either way)
    peer = faiss.index_factory(32, "IVF16,PQ8np")
    peer.train(xb)
    peer.add(xb)
    assert faiss_ram_bytes(peer) - faiss.serialize_index(peer).nbytes == 16 * 8 * 256 * 4
    flat = faiss.IndexFlatL2(32)
    flat.add(xb)
    assert faiss_ram_bytes(flat) == faiss.serialize_index(flat).nbytes


def test_files_from_before_the_projection_load_with_every_dimension(tmp_path):
    """An index file whose metadata has no ``reduce`` was built at full width: it loads as reduce=0."""
    import json

    import faiss

    from vidsearch.index.persist import HEADER

    xb = clustered(4_000, d=384, seed=5)
    idx = IVFPQIndex(384, IVFPQConfig(pq_m=16, nlist=32, reduce=0), MemmapStore(xb.astype(np.float16)))
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    path = _saved(idx, tmp_path)
    data = path.read_bytes()
    magic, version, n = HEADER.unpack_from(data)
    meta = json.loads(data[HEADER.size : HEADER.size + n])
    del meta["config"]["reduce"]  # the JSON header is outside the blob's checksum: the FAISS blob is unchanged
    new_meta = json.dumps(meta).encode()
    old = tmp_path / "old.vsi"
    old.write_bytes(HEADER.pack(magic, version, len(new_meta)) + new_meta + data[HEADER.size + n :])
    again = IVFPQIndex.load(old, idx.store)
    assert again.config.reduce == 0 and again.code_dim == 384  # auto would have meant 256
    assert not isinstance(again._index, faiss.IndexPreTransform)
    q = xb[:20]
    np.testing.assert_array_equal(again.search(q, 5, IVFSearchParams(nprobe=8, rerank=50)).ids,
                                  idx.search(q, 5, IVFSearchParams(nprobe=8, rerank=50)).ids)


def test_list_count_keeps_the_centroids_within_their_memory_budget():
    """About 4*sqrt(n) lists (a power of two, 16 to 65536), halved while the float32 centroids (and,
    past FLAT_COARSE_MAX lists, ~264 B of graph per centroid) would take more than 6 B per vector.
    Expected values computed by hand from that rule."""
    assert choose_nlist(10) == 16  # 4*sqrt(10) = 12.6: the floor of 16
    assert choose_nlist(1_000_000) == 4096  # 4*sqrt(1M) = 4000 -> 2**12; no width, no budget
    assert choose_nlist(10_000_000) == 16384  # 12649 -> 2**13.6 -> 2**14
    assert choose_nlist(1_000_000, 256) == 4096  # 4096 * 1 KiB (+ 264 B graph) <= 6 MB
    assert choose_nlist(10_000_000, 256) == 16384  # 16384 * (1024 + 264) B = 21 MB <= 60 MB
    assert choose_nlist(100_000, 256) == 512  # 1024 * 1 KiB = 1.05 MB > 600 KB; 512 * 1 KiB = 524 KB fits
    assert choose_nlist(1_000_000, 1280) == 1024  # 4096 and 2048 * 5120 B exceed 6 MB; 1024 * 5120 B = 5.2 MB
    assert choose_nlist(10_000, 64) == 128  # 512 * 256 B = 131 KB, 256 * 256 = 65.5 KB > 60 KB; 128 fits
    assert choose_nlist(10_000, 1280) == 16  # even 16 * 5120 B = 82 KB > 60 KB: never below 16
    # the graph's share decides: 16384 * 4 * 896 B = 58.7 MB fits 60 MB, with 264 B/node (63.0 MB) it does not
    assert choose_nlist(10_000_000, 896) == 8192
    assert choose_nlist(5_000, 64) == 64 and choose_nlist(1_000, 64) == 16
    # fast-scan lists padded to blocks of 32 codes: a block of 32-byte codes (1 KiB) budgeted per list
    assert choose_nlist(1_000_000, 256, 1024) == 2048  # 4096 * 2 KiB = 8.4 MB > 6 MB; 2048 * 2 KiB = 4.2 MB
    assert choose_nlist(100_000, 256, 1024) == 256  # 512 * 2 KiB = 1.05 MB > 600 KB; 256 * 2 KiB = 524 KB
    assert IVFPQConfig().list_padding_bytes() == 1024 and IVFPQConfig(pq_m=32, nbits=8).list_padding_bytes() == 0


def test_the_collection_sizes_lists_for_every_vector_not_for_the_training_sample(monkeypatch):
    """build_index trains on a sample (TRAIN_SAMPLE) but chooses the list count from all the vectors
    the index will hold: a 1M collection trained on 200K vectors still gets 1M's lists."""
    from vidsearch.config import IndexConfig
    from vidsearch.index import base

    monkeypatch.setattr(base, "TRAIN_SAMPLE", 1_000)
    trained_on = []
    train = IVFPQIndex.train
    monkeypatch.setattr(IVFPQIndex, "train", lambda self, v, seed=0: (trained_on.append(len(v)), train(self, v, seed)))
    x = clustered(10_000, d=128, seed=6)
    idx = base.build_index(IndexConfig(kind="ivfpq", pq_m=16, train_min=256), 128, np.arange(10_000), x,
                           MemmapStore(x.astype(np.float16)))
    # 10,000 128-d vectors, 16-byte codes: 4*sqrt(n) = 400 -> 512 lists, halved to 32 (32 * (512 B of
    # centroid + 512 B of padding) = 32.8 KB <= 6 B * n)
    assert idx._ivf.nlist == 32 and len(idx) == 10_000
    # trained on a sample that alone would have had fewer lists (3,200 vectors: 16 lists)
    [n_trained] = trained_on
    assert n_trained < 10_000 and choose_nlist(n_trained, 128, 512) < 32


def test_an_index_trained_for_a_much_smaller_collection_is_outgrown():
    """The collection retrains its compressed index once it holds 16x the vectors the lists were chosen
    for (a quarter of the lists it would choose now); never with a fixed nlist or an exact index."""
    from vidsearch.config import IndexConfig
    from vidsearch.index import base

    x = clustered(2_000, seed=7)
    store = MemmapStore(x.astype(np.float16))
    idx = base.build_index(IndexConfig(kind="ivfpq", pq_m=16, train_min=256), 64, np.arange(2_000), x, store)
    trained = idx._ivf.nlist
    # 2,000 64-d vectors, 16-byte codes: 4*sqrt(n) = 179 -> 128, halved to the floor of 16 (16 * (256 B of
    # centroid + 512 B of padding) = 12.3 KB, over 12 KB, but never fewer than 16 lists)
    assert trained == 16
    assert not base.outgrown(IndexConfig(), idx, 2_000)
    # 4 * 16 = 64 lists of 768 B fit the 6 B/vector budget from 49152 / 6 = 8192 vectors
    n = 8_192
    assert base.outgrown(IndexConfig(), idx, n) and not base.outgrown(IndexConfig(), idx, n - 1)  # n: the first size outgrown
    assert not base.outgrown(IndexConfig(nlist=trained), idx, 10 * n)  # a fixed list count is kept
    assert not base.outgrown(IndexConfig(), FlatIndex(64), 10 * n)


def test_a_collection_index_holds_32_byte_fast_scan_codes_of_residuals():
    """The collection's factory turns IndexConfig.pq_m (bytes per code) into 4-bit fast-scan codes: 64
    sub-quantizers for the default 32 bytes, coding each vector's residual from its list's centroid
    (FAISS's fast-scan default codes the vector itself)."""
    import faiss

    from vidsearch.config import IndexConfig
    from vidsearch.index import base

    cfg = base.ivfpq_config(IndexConfig())
    assert (cfg.pq_m, cfg.nbits, cfg.code_bytes) == (64, 4, 32)
    x = clustered(3_000, d=64, seed=8)
    idx = base.build_index(IndexConfig(kind="ivfpq", pq_m=16, train_min=256), 64, np.arange(3_000), x,
                           MemmapStore(x.astype(np.float16)))
    assert isinstance(idx._ivf, faiss.IndexIVFPQFastScan) and idx._ivf.by_residual and idx._ivf.pq.M == 32
    assert idx._ivf.code_size == 16


def test_an_8_bit_index_from_before_fast_scan_still_loads_and_searches(data, tmp_path):
    """Indexes saved with 8-bit codes (the default before 4-bit fast-scan) load as what their blob holds,
    also from a header that lacks the code layout (files from before ``nbits`` was recorded), and search
    as before: recall against exact, identical results after the round trip."""
    import json

    import faiss

    from vidsearch.index.persist import HEADER

    xb, xq = data
    idx = IVFPQIndex(64, IVFPQConfig(pq_m=16, nbits=8, nlist=64), MemmapStore(xb.astype(np.float16)))
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    assert isinstance(idx._ivf, faiss.IndexIVFPQ) and not isinstance(idx._ivf, faiss.IndexIVFPQFastScan)
    params = IVFSearchParams(nprobe=16, rerank=100)
    hits = idx.search(xq, 10, params)
    truth = exact(xb, xq)
    assert knn_recall(hits.ids, truth.ids, 10, -hits.scores, -truth.scores + 1e-2) >= 0.97
    path = _saved(idx, tmp_path)
    data_ = path.read_bytes()
    magic, version, n = HEADER.unpack_from(data_)
    meta = json.loads(data_[HEADER.size : HEADER.size + n])
    del meta["config"]["nbits"], meta["config"]["pq_m"]  # today's defaults (64 x 4 bits) would not match the blob
    new_meta = json.dumps(meta).encode()
    old = tmp_path / "old.vsi"
    old.write_bytes(HEADER.pack(magic, version, len(new_meta)) + new_meta + data_[HEADER.size + n :])
    again = IVFPQIndex.load(old, idx.store)
    assert (again.config.pq_m, again.config.nbits) == (16, 8)
    np.testing.assert_array_equal(again.search(xq, 10, params).ids, hits.ids)
