"""The learned comparator's run-time side (search/comparator.py, rerank='learned'): features on hand-made
matrices, the model file's checks, and the re-rank on a real collection with a hand-built ONNX model (no
PyTorch needed: a 1x1 convolution whose map is sigmoid(a * cosine + b))."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidsearch import Collection, SearchParams
from vidsearch.errors import ConfigError, EncoderError, ShapeError
from vidsearch.search import comparator as C

onnx = pytest.importorskip("onnx")


def handmade_model(path: Path, weights=(8.0, 0.0, 0.0), bias=-4.0, meta: dict | None = None,
                   top_rows: int = 3) -> Path:
    """An ONNX comparator: map = sigmoid(w . features + bias) per cell (a 1x1 convolution)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array(weights, np.float32).reshape(1, C.CHANNELS, 1, 1), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Conv", [C.INPUT_NAME, "w", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["prob"]),
             helper.make_node("Squeeze", ["prob", "axes"], [C.OUTPUT_NAME])]
    graph = helper.make_graph(
        nodes, "comparator",
        [helper.make_tensor_value_info(C.INPUT_NAME, TensorProto.FLOAT, [1, C.CHANNELS, "n", "m"])],
        [helper.make_tensor_value_info(C.OUTPUT_NAME, TensorProto.FLOAT, [1, "n", "m"])], [w, b, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    description = meta if meta is not None else {
        "format": C.MODEL_FORMAT, "format_version": C.MODEL_FORMAT_VERSION, "channels": C.CHANNELS,
        "background_rank": 30, "top_rows": top_rows, "weights_sha256": "ab" * 32}
    entry = model.metadata_props.add()
    entry.key, entry.value = C.METADATA_KEY, json.dumps(description)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return handmade_model(tmp_path_factory.mktemp("comparator") / "raw.onnx")


def test_similarity_matrix_takes_each_segments_best_region_and_skips_blank_ones():
    q = np.eye(3, dtype=np.float32)[:2]  # segments along x and y
    r = np.eye(3, dtype=np.float32)  # reference segments along x, y, z
    region = np.array([[0, 0, 1], [0, 0, 1]], np.float32)  # the region of both query segments shows z
    s = C.similarity_matrix(q, r, [region], [np.array([False, True])])
    np.testing.assert_array_equal(s, [[1, 0, 1], [0, 1, 0]])  # segment 1's region is blank: not taken
    with pytest.raises(ShapeError):
        C.similarity_matrix(q, np.eye(4, dtype=np.float32))


def test_pair_features_background_is_taken_over_every_candidate():
    a = np.array([[0.9, 0.1], [0.2, 0.4]], np.float32)
    b = np.array([[0.5], [0.3]], np.float32)
    fa, fb = C.pair_features([a, b], background_rank=2)
    # row 0 over both candidates: 0.9, 0.5, 0.1 -> 2nd best 0.5; row 1: 0.4, 0.3, 0.2 -> 0.3
    np.testing.assert_allclose(fa[1], a - np.array([[0.5], [0.3]]), atol=1e-6)
    np.testing.assert_allclose(fb[1], b - np.array([[0.5], [0.3]]), atol=1e-6)
    np.testing.assert_allclose(fa[0], a)
    np.testing.assert_allclose(fa[2], a - a.mean(axis=0), atol=1e-6)  # minus each column's mean over the query
    assert C.pair_features([a], background_rank=99)[0][1, 0, 0] == pytest.approx(0.9 - 0.1)  # rank past the end: last
    with pytest.raises(ShapeError):
        C.pair_features([a, np.zeros((3, 2), np.float32)])


def test_top_rows_score_is_the_mean_of_the_best_row_maxima():
    prob = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.0], [0.8, 0.7]], np.float32)
    assert C.top_rows_score(prob, 2) == pytest.approx((0.9 + 0.8) / 2)
    assert C.top_rows_score(prob, 10) == pytest.approx((0.9 + 0.5 + 0.3 + 0.8) / 4)
    assert C.top_rows_score(np.zeros((0, 3), np.float32), 3) == 0.0


def test_onnx_comparator_computes_its_graph_and_reads_its_description(model_file):
    model = C.OnnxComparator(model_file)
    assert model.info.top_rows == 3 and model.info.background_rank == 30 and model.name == "comparator@" + "ab" * 6
    x = np.random.default_rng(0).uniform(-1, 1, (C.CHANNELS, 7, 11)).astype(np.float32)
    np.testing.assert_allclose(model.refine(x), 1 / (1 + np.exp(-(8 * x[0] - 4))), atol=1e-5)
    assert model.refine(x[:, :1, :1]).shape == (1, 1)  # any size, down to one cell
    with pytest.raises(ShapeError):
        model.refine(x[:2])
    assert C.load_comparator(model_file) is C.load_comparator(model_file)  # loaded once per process


def test_a_missing_or_foreign_model_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="no such comparator"):
        C.load_comparator(tmp_path / "none.onnx")
    with pytest.raises(EncoderError, match="format"):
        C.OnnxComparator(handmade_model(tmp_path / "temporal.onnx", meta={"format": "vidsearch-temporal"}))
    with pytest.raises(EncoderError, match="newer|format"):
        C.OnnxComparator(handmade_model(tmp_path / "future.onnx", meta={
            "format": C.MODEL_FORMAT, "format_version": 99, "channels": 3, "background_rank": 30, "top_rows": 3,
            "weights_sha256": "ab" * 32}))
    rng = np.random.default_rng(1)
    for i in range(5):  # random bytes: an error, never a crash
        junk = tmp_path / f"junk{i}.onnx"
        junk.write_bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
        with pytest.raises(EncoderError):
            C.OnnxComparator(junk)


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VIDSEARCH_COMPARATOR", raising=False)
    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path))
    assert C.default_path() == tmp_path / "models" / "comparator.onnx"
    monkeypatch.setenv("VIDSEARCH_COMPARATOR", str(tmp_path / "m.onnx"))
    assert C.default_path() == tmp_path / "m.onnx"


@pytest.fixture(scope="module")
def coll(built_collection: Path):
    with Collection.open(built_collection) as c:
        yield c


def _ref(coll, name: str, start: float, end: float) -> str:
    video = next(v["id"] for v in coll.videos() if Path(v["path"]).name == name)
    return f"{video}@{start}-{end}"


def test_learned_rerank_scores_the_copy_first_and_keeps_the_votes_ranges(coll, model_file, monkeypatch):
    monkeypatch.setenv("VIDSEARCH_COMPARATOR", str(model_file))  # the engine runs the default model
    query = _ref(coll, "bikes.mp4", 2, 8)
    voted = coll.search(query, k=5, params=SearchParams(rerank="none"))
    learned = coll.search(query, k=5, params=SearchParams(rerank="learned"))
    assert Path(learned.results[0].path).name == "bikes.mp4"
    scores = [h.score for h in learned.results]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    assert learned.results[0].score > 0.9 > learned.results[-1].score  # exact copy: cosine ~1 -> sigmoid(4)
    before = {h.video_id: [m[:4] for m in h.matches] for h in voted.results}
    for hit in learned.results:  # the vote's ranges, re-scored
        assert [m[:4] for m in hit.matches] == before[hit.video_id]
        assert all(0.0 <= m.score <= 1.0 for m in hit.matches)


def test_rerank_function_takes_the_model_path(model_file):
    from vidsearch.search.rerank import rerank
    from vidsearch.search.results import Match
    from vidsearch.search.vote import VideoVote

    vectors = np.eye(4, dtype=np.float32)  # four orthogonal query segments, one a second
    starts = np.arange(4, dtype=np.float64)
    refs = {"a": vectors, "b": np.tile(vectors[3], (4, 1))}  # a: the query itself; b: only its last second

    def fetch(video_id: str):
        return starts, starts + 1, refs[video_id]

    votes = [VideoVote("b", 1.0, [Match(3, 4, 0, 4, 0.9)]), VideoVote("a", 0.5, [Match(0, 2, 0, 2, 0.4)])]
    out = rerank("learned", vectors, starts, starts + 1, votes, fetch, comparator=model_file)
    assert [v.video_id for v in out] == ["a", "b"]  # three rows of "a" match, one of "b"
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert out[0].score == pytest.approx(sig(4.0), abs=1e-5)
    assert out[1].score == pytest.approx((sig(4.0) + 2 * sig(-4.0)) / 3, abs=1e-5)
    assert out[0].matches[0][:4] == (0, 2, 0, 2) and out[0].matches[0].score == pytest.approx(sig(4.0), abs=1e-5)
    assert out[1].matches[0].score == pytest.approx(sig(4.0), abs=1e-5)  # range 3-4 s: the matching row only
    with pytest.raises(ConfigError):
        rerank("learned", vectors, starts, starts + 1, [VideoVote("a", 1.0, [])], fetch,
               comparator=model_file.with_name("missing.onnx"))
