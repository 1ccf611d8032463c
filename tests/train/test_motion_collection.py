"""The pixel-motion stream in a collection: `vidsearch index --motion flow` stores frame vectors fused with optical
flow, `vidsearch train` on it writes a +flow model, and a collection indexed with that model computes the same
stream for its references and for file, server-batched and stored-range queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidsearch.cli import main

FILES = ("bikes.mp4", "v1.m4v", "carphone_pristine.mp4")


@pytest.fixture(scope="module")
def flow_collection(footage: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("motion") / "flow"
    assert main(["index", "--collection", str(path), "--motion", "flow", "--json",
                 *(str(footage[f]) for f in FILES)]) == 0
    return path


@pytest.fixture(scope="module")
def flow_model(flow_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("motion-model") / "dual-flow.onnx"
    assert main(["train", "--collection", str(flow_collection), "--model", "dual", "--loss", "infonce", "--epochs",
                 "2", "--out", str(path), "--json"]) == 0
    return path


def test_a_flow_collection_stores_frame_vectors_fused_with_the_flow(flow_collection: Path,
                                                                     footage: dict[str, Path]) -> None:
    from vidsearch import Collection
    from vidsearch.config import CollectionConfig
    from vidsearch.encode.motion import flow_dim
    from vidsearch.encode.pipeline import MediaEncoder

    manifest = json.loads((flow_collection / "manifest.json").read_text())
    assert manifest["config"]["encode"]["motion"] == "flow"
    assert manifest["dims"] == {"frame": 512 + flow_dim(), "segment": 512 + flow_dim()}
    plain = MediaEncoder(CollectionConfig()).encode_file(footage["bikes.mp4"])
    with Collection.open(flow_collection) as coll:
        video = next(v for v in coll.videos() if v["path"].endswith("bikes.mp4"))
        times, stored = coll.frame_vectors(video["id"])
    stored = np.asarray(stored, np.float32)
    np.testing.assert_array_equal(times, plain.times)
    # each half unit length before the joint normalisation: the appearance part is the plain vector / sqrt(2)
    np.testing.assert_allclose(stored[:, :512] * np.sqrt(2), plain.frame_vectors, atol=3e-3)
    flow = stored[:, 512:] * np.sqrt(2)
    np.testing.assert_allclose(np.linalg.norm(flow, axis=1), 1.0, atol=3e-3)
    still = np.zeros(flow_dim(), np.float32)
    still[-1] = 1.0  # no motion: the constant component alone
    moving = np.linalg.norm(flow - still, axis=1) > 0.05
    assert moving.mean() > 0.5, moving  # bikes.mp4 pans: most sampled frames move


def test_the_server_path_and_stored_ranges_see_the_same_stream(flow_collection: Path,
                                                               footage: dict[str, Path]) -> None:
    from vidsearch import Collection
    from vidsearch.encode.pipeline import MediaEncoder

    with Collection.open(flow_collection) as coll:
        media = MediaEncoder(coll.config)
    whole = media.encode_file(footage["v1.m4v"])
    decoded = media.decode_file(footage["v1.m4v"])
    assert decoded.streams is not None and len(decoded.streams) == len(decoded.times)
    batched = media.finish(decoded, media.encoder.encode(decoded.all_images))
    np.testing.assert_allclose(batched.frame_vectors, whole.frame_vectors, atol=1e-5)
    np.testing.assert_allclose(batched.segment_vectors, whole.segment_vectors, atol=1e-5)
    assert 0 < whole.timings["streams"] <= whole.timings["encode"]  # part of "encode", measured


def test_train_on_it_writes_a_flow_model_and_indexing_with_it_turns_the_stream_on(
        flow_model: Path, footage: dict[str, Path], tmp_path: Path, capsys) -> None:
    from vidsearch.encode.motion import flow_dim
    from vidsearch.encode.temporal import read_model_info
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    info = read_model_info(flow_model)
    assert info.streams == "flow" and info.dim == 512 + flow_dim() and info.kind == "dual"
    coll = tmp_path / "dual"
    assert main(["index", "--collection", str(coll), "--temporal", str(flow_model), "--json",
                 *(str(footage[f]) for f in FILES)]) == 0
    capsys.readouterr()
    manifest = json.loads((coll / "manifest.json").read_text())
    assert manifest["config"]["encode"]["motion"] == "flow"
    assert manifest["config"]["encode"]["temporal_hash"] == info.weights_hash
    from vidsearch import Collection

    with Collection.open(coll) as opened:
        video = next(v for v in opened.videos() if v["path"].endswith("bikes.mp4"))
    engine = Engine(coll)
    try:
        params = SearchParams(insets=False)
        assert engine.search(str(footage["bikes.mp4"]), k=3, params=params).results[0].video_id == video["id"]
        assert engine.search(f"{video['id']}@2-6", k=3, params=params).results[0].video_id == video["id"]
    finally:
        engine.close()
    # --motion flow given with a flow model agrees with it: accepted (a model without the stream: the next test)
    assert main(["index", "--collection", str(tmp_path / "c2"), "--temporal", str(flow_model), "--motion", "flow",
                 "--json", str(footage["v1.m4v"])]) == 0
    capsys.readouterr()
    # through the API, a model and a configuration that disagree are refused before any file is decoded
    from vidsearch.config import CollectionConfig, EncodeConfig
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="fused with flow stream"):
        MediaEncoder(CollectionConfig(encode=EncodeConfig(temporal_model=str(flow_model),
                                                          temporal_hash=info.weights_hash)))


def test_flow_without_opencv_is_refused_before_the_collection_exists(footage: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    code = main(["index", "--collection", str(tmp_path / "c"), "--motion", "flow", "--json", str(footage["v1.m4v"])])
    assert code == 2 and not (tmp_path / "c").exists()
    assert "needs OpenCV" in json.loads(capsys.readouterr().out)["message"]


def test_a_model_without_the_stream_is_refused_with_motion(trained_models: dict[str, Path], footage: dict[str, Path],
                                                          tmp_path: Path, capsys) -> None:
    code = main(["index", "--collection", str(tmp_path / "c"), "--temporal", str(trained_models["seed0"]),
                 "--motion", "flow", "--json", str(footage["v1.m4v"])])
    assert code == 2 and not (tmp_path / "c").exists()
    assert "fused with no stream(s), not flow" in json.loads(capsys.readouterr().out)["message"]
