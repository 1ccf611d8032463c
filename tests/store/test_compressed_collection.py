"""A collection on the compressed index (HNSW over IVF centroids + PQ codes + exact re-rank)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vidsearch import Collection, CollectionConfig, DecodeConfig, IndexConfig, SearchParams, SegmentConfig
from vidsearch.config import EncodeConfig
from vidsearch.evaluate import samples


# SSCD's distilled student (512-d like SSCD, 2.7x faster to encode): these tests are about the index, and
# the 4 fps needed for enough segments make encoding most of their time; SSCD itself is the encoder of
# tests/conftest.py's built_collection and of every other collection test
ENCODE = EncodeConfig(encoder="sscd-distilled")


def _config(kind: str) -> CollectionConfig:
    # 4 fps and 0.25 s strides give a few hundred real segments: enough to train a small IVF-PQ
    return CollectionConfig(decode=DecodeConfig(fps=4.0), segment=SegmentConfig(window=1.0, stride=0.25),
                            encode=ENCODE, index=IndexConfig(kind=kind, train_min=256, nlist=16, pq_m=32))


@pytest.fixture(scope="module", autouse=True)
def encode_each_file_once():
    """The three collections here share one decode/segment configuration: each reference and query file is
    decoded and encoded once for the module (``MediaEncoder.cache``); these tests are about the index."""
    from vidsearch.encode.pipeline import MediaEncoder

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MediaEncoder, "cache", {})
        yield


@pytest.fixture(scope="module")
def refs(footage):
    return [footage["iscc/demo.mp4"], footage["bikes.mp4"], footage["v1.m4v"], footage["bigbuckbunny.mp4"]]


def test_auto_switches_to_the_compressed_index_and_agrees_with_exact(tmp_path: Path, refs):
    auto = Collection.create(tmp_path / "auto", _config("auto"))
    auto.add(refs[2:])  # ~80 segments: still exact
    assert auto.info()["index"]["kind"] == "flat"
    auto.add(refs[:2])  # past train_min: trained and switched
    info = auto.info()
    assert info["index"]["kind"] == "ivfpq" and info["index"]["vectors"] == info["segments"]
    exact = Collection.create(tmp_path / "flat", _config("flat"))
    exact.add(refs)
    # a re-encoded copy of a reference (the 60 s iscc demo as WebM: most of this test's encoding) and a reference
    for q in [p for p in samples.iscc_videos() if p.suffix == ".webm"] + [refs[1]]:
        a = auto.search(q, k=3, params=SearchParams(nprobe=4, rerank_depth=64))
        b = exact.search(q, k=3)
        assert [r.video_id for r in a.results[:1]] == [r.video_id for r in b.results[:1]]
        assert abs(a.results[0].score - b.results[0].score) < 0.02
        # rerank_depth=0: scored by the PQ codes alone -- same winner, approximate (not exact) scores
        c = auto.search(q, k=3, params=SearchParams(nprobe=4, rerank_depth=0))
        assert c.results[0].video_id == b.results[0].video_id
        assert c.results[0].score != pytest.approx(b.results[0].score, abs=1e-6)


def test_compressed_collection_survives_reopen_remove_and_rebuild(tmp_path: Path, refs):
    path = tmp_path / "c"
    coll = Collection.create(path, _config("ivfpq"))
    coll.add(refs)
    bikes = next(v["id"] for v in coll.videos() if Path(v["path"]).name == "bikes.mp4")
    coll.close()
    again = Collection.open(path)
    assert again.info()["index"]["kind"] == "ivfpq"
    assert again.search(refs[1], k=1).results[0].video_id == bikes
    again.remove(bikes)
    assert bikes not in [r.video_id for r in again.search(refs[1], k=5).results]
    rebuilt = again.rebuild_index()
    assert rebuilt["index"] == "IVFPQIndex" and rebuilt["vectors"] == again.info()["segments"]
    assert bikes not in [r.video_id for r in Collection.open(path).search(refs[1], k=5).results]


def test_info_describes_the_compressed_index_and_flags_one_coded_at_another_width(tmp_path: Path, refs):
    import json

    from vidsearch.store.manifest import MANIFEST

    path = tmp_path / "c"
    coll = Collection.create(path, CollectionConfig(
        decode=DecodeConfig(fps=4.0), segment=SegmentConfig(window=1.0, stride=0.25), encode=ENCODE,
        index=IndexConfig(kind="ivfpq", train_min=256, nlist=16, pq_m=32, reduce=0)))
    coll.add(refs[:2])
    ix = coll.info()["index"]
    dim = ix["dim"]
    assert dim > 256, "SSCD's 512-d segments are wider than the auto projection"
    assert (ix["lists"], ix["code_dim"], ix["pq_bytes"], ix["quantizer"]) == (16, dim, 32, "pq")
    assert ix["memory_bytes_per_vector"] == round(ix["memory_bytes"] / ix["vectors"], 1)
    assert ix["advice"] is None  # coded at the width its configuration asks for
    coll.close()
    # the same files under a configuration that now projects (as an index from before session 5 would be)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["config"]["index"]["reduce"] = -1
    (path / MANIFEST).write_text(json.dumps(manifest))
    again = Collection.open(path)
    ix = again.info()["index"]
    assert ix["code_dim"] == dim and "--rebuild-index" in ix["advice"] and "256-d" in ix["advice"]
    human = subprocess.run([sys.executable, "-m", "vidsearch.cli", "info", "-c", str(path)],
                           capture_output=True, text=True, timeout=300, check=True).stdout
    assert "16 lists" in human and "--rebuild-index" in human
    again.rebuild_index()
    ix = Collection.open(path).info()["index"]
    assert ix["code_dim"] == 256 and ix["advice"] is None
