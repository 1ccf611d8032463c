"""The compressed index against exact search, with tie-tolerant recall; add/remove/persist."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.errors import CollectionError, ConfigError, NotFittedError
from vidsearch.evaluate.metrics import knn_recall
from vidsearch.index import FlatIndex
from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, IVFSearchParams, MemmapStore, choose_nlist


def clustered(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, d)).astype(np.float32)
    x = centers[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    x = clustered(12_000)
    return x[:10_000], x[10_000:10_200]


def build(xb, quantizer="pq", store=True):
    idx = IVFPQIndex(xb.shape[1], IVFPQConfig(pq_m=16, quantizer=quantizer, nlist=64),
                     MemmapStore(xb.astype(np.float16)) if store else None)
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    return idx


def exact(xb, xq, k=10):
    f = FlatIndex(xb.shape[1])
    f.add(np.arange(len(xb)), xb)
    return f.search(xq, k)


@pytest.mark.parametrize("quantizer", ["pq", "opq", "learned"])
def test_recall_against_exact_with_rerank(data, quantizer):
    xb, xq = data
    if quantizer == "learned":
        xb = xb[:4000]  # training the differentiable PQ dominates: a smaller base keeps the test at seconds
    idx = build(xb, quantizer)
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
        again = IVFPQIndex.load(_saved(idx), idx.store)
        np.testing.assert_array_equal(again.search(xq, 10, IVFSearchParams(nprobe=16, rerank=0)).ids, no_rerank.ids)


def _saved(idx):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "index.vidsidx"
    idx.save(path)
    return path


def test_self_query_finds_itself(data):
    xb, _ = data
    idx = build(xb)
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
    idx = IVFPQIndex(xb.shape[1], IVFPQConfig(pq_m=16, nlist=64), MemmapStore(xb.astype(np.float16)))
    idx.train(xb[:5000])
    idx.add(np.arange(5000), xb[:5000])
    idx.add(np.arange(5000, 10_000), xb[5000:])
    assert len(idx) == 10_000
    hits = idx.search(xb[9990:], 1, IVFSearchParams(nprobe=16, rerank=64))
    assert (hits.ids[:, 0] == np.arange(9990, 10_000)).all()


def _mixture() -> np.ndarray:
    """256-d mixture like bench/ann.py's: FAISS's graph over k-means centroids of it leaves some of them
    without any in-link (bench/centroid_graph.py), which connect_graph() repairs."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((300, 256)).astype(np.float32)
    x = centers[rng.integers(0, 300, 30_000)] + rng.standard_normal((30_000, 256)).astype(np.float32) * rng.uniform(
        0.3, 1.0, (30_000, 1)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _unreachable(quantizer) -> int:  # type: ignore[no-untyped-def]
    import faiss

    hp = faiss.SearchParametersHNSW()
    hp.efSearch = 256
    c = quantizer.reconstruct_n(0, quantizer.ntotal)
    return int(np.sum(quantizer.search(c, 1, params=hp)[1][:, 0] != np.arange(quantizer.ntotal)))


def test_an_index_saved_with_an_unrepaired_graph_is_repaired_on_load(tmp_path, monkeypatch):
    import vidsearch.index.ivf as ivf_mod

    x = _mixture()[:20_000]
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
    idx.add(np.arange(30_000), x)
    ivf = idx._ivf
    stored = np.empty(30_000, np.int64)
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        if n:
            stored[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).copy()] = lst
    hp = faiss.SearchParametersHNSW()
    hp.efSearch = 256
    found = ivf.quantizer.search(x, 1, params=hp)[1][:, 0]
    assert (stored == found).all()
    assert _unreachable(ivf.quantizer) == 0
    assert len(np.unique(stored)) == ivf.nlist  # no list left empty by an unreachable centroid


def test_coarse_quantizer_is_flat_for_few_lists_and_a_graph_for_many():
    import faiss

    from vidsearch.index.ivf import FLAT_COARSE_MAX

    rng = np.random.default_rng(1)
    x = rng.standard_normal((20_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kinds = {}
    for nlist, coarse in ((64, "auto"), (64, "hnsw"), (FLAT_COARSE_MAX * 2, "auto"), (FLAT_COARSE_MAX * 2, "flat")):
        idx = IVFPQIndex(32, IVFPQConfig(pq_m=8, nlist=nlist, coarse=coarse), MemmapStore(x.astype(np.float16)))
        idx.train(x[: max(nlist * 4, 5000)])
        idx.add(np.arange(len(x)), x)
        kinds[nlist, coarse] = type(faiss.downcast_index(idx._ivf.quantizer)).__name__
        hits = idx.search(x[:20], 5, IVFSearchParams(nprobe=nlist // 4, ef_search=64, rerank=50))
        assert (hits.ids[:, 0] == np.arange(20)).all()  # each vector finds itself through either quantizer
    assert kinds == {(64, "auto"): "IndexFlatL2", (64, "hnsw"): "IndexHNSWFlat",
                     (FLAT_COARSE_MAX * 2, "auto"): "IndexHNSWFlat", (FLAT_COARSE_MAX * 2, "flat"): "IndexFlatL2"}
    with pytest.raises(ConfigError):
        IVFPQConfig(coarse="graph")


def test_save_load_roundtrip_and_fuzz(data, tmp_path):
    xb, xq = data
    idx = build(xb)
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
        try:
            IVFPQIndex.load(tmp_path / "bad.vsi")
        except (CollectionError, ValueError, KeyError, TypeError, RuntimeError):
            pass


def test_errors():
    with pytest.raises(ConfigError, match="must divide"):
        IVFPQIndex(100, IVFPQConfig(pq_m=32))
    with pytest.raises(NotFittedError):
        IVFPQIndex(64, IVFPQConfig(pq_m=16)).add(np.arange(2), np.zeros((2, 64), np.float32))
    with pytest.raises(ConfigError):
        IVFPQConfig(quantizer="zip")
    assert choose_nlist(1_000_000) == 4096 and choose_nlist(10) == 16


@pytest.mark.parametrize("quantizer", ["pq", "opq", "learned"])
def test_codes_in_a_pca_projection_keep_recall_and_persist(quantizer):
    """With more input dimensions than max(256, 8 * pq_m) the centroids and codes live in the top PCA
    components (reduce=-1): exact re-rank on the full vectors still finds the true neighbours, and a
    saved file searches identically."""
    import faiss

    x = clustered(8_000 if quantizer != "learned" else 4_200, d=384, seed=3)
    xb, xq = x[:-200], x[-200:]
    store = MemmapStore(xb.astype(np.float16))
    idx = IVFPQIndex(384, IVFPQConfig(pq_m=16, quantizer=quantizer, nlist=64), store)
    assert idx.code_dim == 256 and IVFPQConfig(pq_m=64).code_dim(1280) == 512
    assert IVFPQConfig(reduce=0).code_dim(1280) == 1280 and IVFPQConfig(reduce=128).code_dim(1280) == 128
    assert IVFPQConfig(pq_m=20).code_dim(1280) == 1280  # 20 does not divide 256: full width, not an error
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    assert faiss.downcast_index(idx._ivf.quantizer).d == 256  # centroids in the projection
    truth = exact(xb, xq)
    params = IVFSearchParams(nprobe=16, rerank=100)
    hits = idx.search(xq, 10, params)
    assert knn_recall(hits.ids, truth.ids, 10, -hits.scores, -truth.scores + 1e-2) >= 0.97
    again = IVFPQIndex.load(_saved(idx), store)
    assert again.code_dim == 256
    np.testing.assert_array_equal(again.search(xq, 10, params).ids, hits.ids)


def test_no_precomputed_table_is_held_and_any_is_counted():
    """FAISS's IVF-PQ precomputed table (nlist * pq_m * 256 floats) is not serialised, so a memory
    figure from the file alone would miss it: the index never builds it (after train or load), and
    memory_bytes() counts it if one is made."""
    xb = clustered(6_000, seed=4)
    idx = IVFPQIndex(64, IVFPQConfig(pq_m=16, nlist=64), MemmapStore(xb.astype(np.float16)))
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    assert idx._ivf.precomputed_table.size() == 0
    again = IVFPQIndex.load(_saved(idx), idx.store)
    assert again._ivf.precomputed_table.size() == 0
    before = again.memory_bytes()
    again._ivf.use_precomputed_table = 1
    again._ivf.precompute_table()
    assert again.memory_bytes() - before == 64 * 16 * 256 * 4


def test_faiss_ram_bytes_counts_the_table_faiss_builds_by_default():
    """The bench's FAISS IVF-PQ peer keeps FAISS's default (the table built at training): its RAM
    figure must include it, a flat index has none."""
    import faiss

    from vidsearch.index.ivf import faiss_ram_bytes

    xb = clustered(6_000, seed=5)
    peer = faiss.index_factory(64, "IVF32,PQ16")
    peer.train(xb)
    peer.add(xb)
    assert faiss_ram_bytes(peer) - faiss.serialize_index(peer).nbytes == 32 * 16 * 256 * 4
    flat = faiss.IndexFlatL2(64)
    flat.add(xb)
    assert faiss_ram_bytes(flat) == faiss.serialize_index(flat).nbytes


def test_files_from_before_the_projection_load_with_every_dimension(tmp_path):
    """An index file whose metadata has no ``reduce`` was built at full width: it loads as reduce=0."""
    import json

    from vidsearch.index.ivf import _HEADER

    import faiss

    xb = clustered(4_000, d=384, seed=5)
    idx = IVFPQIndex(384, IVFPQConfig(pq_m=16, nlist=32, reduce=0), MemmapStore(xb.astype(np.float16)))
    idx.train(xb)
    idx.add(np.arange(len(xb)), xb)
    path = _saved(idx)
    data = path.read_bytes()
    magic, version, n = _HEADER.unpack_from(data)
    meta = json.loads(data[_HEADER.size : _HEADER.size + n])
    del meta["config"]["reduce"]
    new_meta = json.dumps(meta).encode()
    old = tmp_path / "old.vsi"
    old.write_bytes(_HEADER.pack(magic, version, len(new_meta)) + new_meta + data[_HEADER.size + n :])
    again = IVFPQIndex.load(old, idx.store)
    assert again.config.reduce == 0 and again.code_dim == 384  # auto would have meant 256
    assert not isinstance(again._index, faiss.IndexPreTransform)
    q = xb[:20]
    np.testing.assert_array_equal(again.search(q, 5, IVFSearchParams(nprobe=8, rerank=50)).ids,
                                  idx.search(q, 5, IVFSearchParams(nprobe=8, rerank=50)).ids)


def test_list_count_keeps_the_centroids_within_their_memory_budget():
    from vidsearch.index.ivf import CENTROID_BUDGET, FLAT_COARSE_MAX

    assert choose_nlist(1_000_000, 256) == 4096 and choose_nlist(10_000_000, 256) == 16384
    assert choose_nlist(100_000, 256) == 512  # 1024 float32 256-d centroids would be 10.5 B/vector
    assert choose_nlist(1_000_000, 1280) == 1024
    for n in (10_000, 100_000, 1_000_000, 10_000_000):
        for dim in (64, 256, 512, 1280):
            nlist = choose_nlist(n, dim)
            per_list = 4 * dim + (264 if nlist > FLAT_COARSE_MAX else 0)
            assert nlist == 16 or nlist * per_list <= CENTROID_BUDGET * n
            assert nlist <= choose_nlist(n)


def test_the_collection_sizes_lists_for_every_vector_not_for_the_training_sample(monkeypatch):
    """build_index trains on a sample (TRAIN_SAMPLE) but chooses the list count from all the vectors
    the index will hold: a 1M collection trained on 200K vectors still gets 1M's lists."""
    from vidsearch.config import IndexConfig
    from vidsearch.index import base

    monkeypatch.setattr(base, "TRAIN_SAMPLE", 1_000)
    x = clustered(5_000, seed=6)
    idx = base.build_index(IndexConfig(kind="ivfpq", pq_m=16, train_min=256), 64, np.arange(5_000), x,
                           MemmapStore(x.astype(np.float16)))
    assert choose_nlist(5_000, 64) != choose_nlist(1_000, 64)
    assert idx._ivf.nlist == choose_nlist(5_000, 64)
    assert len(idx) == 5_000


def test_an_index_trained_for_a_much_smaller_collection_is_outgrown():
    """The collection retrains its compressed index once it holds 16x the vectors the lists were chosen
    for (a quarter of the lists it would choose now); never with a fixed nlist or an exact index."""
    from vidsearch.config import IndexConfig
    from vidsearch.index import base

    x = clustered(5_000, seed=7)
    store = MemmapStore(x.astype(np.float16))
    idx = base.build_index(IndexConfig(kind="ivfpq", pq_m=16, train_min=256), 64, np.arange(5_000), x, store)
    trained = idx._ivf.nlist
    assert not base.outgrown(IndexConfig(), idx, 5_000)
    n = next(n for n in range(5_000, 10**8, 5_000) if choose_nlist(n, 64) >= 4 * trained)
    assert base.outgrown(IndexConfig(), idx, n) and not base.outgrown(IndexConfig(), idx, n - 5_000)  # n: the first size outgrown
    assert not base.outgrown(IndexConfig(nlist=trained), idx, 10 * n)  # a fixed list count is kept
    assert not base.outgrown(IndexConfig(), FlatIndex(64), 10 * n)
