"""A temporal model trained on a collection's stored frames, recorded in a new collection's manifest, used to
index real footage and to search it end to end; another model in its place is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidsearch.cli import main
from vidsearch.errors import ConfigError
from vidsearch.train.datasets import collection_clips


@pytest.fixture(scope="session")
def temporal_collection(trained_models: dict[str, Path], footage: dict[str, Path],
                        tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("temporal") / "coll"
    assert main(["index", "--collection", str(path), "--temporal", str(trained_models["seed0"]), "--json",
                 str(footage["bikes.mp4"]), str(footage["v1.m4v"]), str(footage["carphone_pristine.mp4"])]) == 0
    return path


def test_collection_clips_are_the_stored_windows(built_collection: Path) -> None:
    data = collection_clips(built_collection)
    manifest = json.loads((built_collection / "manifest.json").read_text())
    assert data.labels is None and data.dim == manifest["dims"]["frame"]
    assert len(data) > 50 and all(1 <= len(c) <= 3 for c in data.clips)  # 2 s windows at 1 fps
    np.testing.assert_allclose(np.linalg.norm(data.clips[0], axis=1), 1.0, atol=1e-2)
    assert len(set(data.groups.tolist())) == 5
    assert len(collection_clips(built_collection, max_clips=10)) == 10


def test_trained_models_describe_themselves_and_differ_by_seed(trained_models: dict[str, Path]) -> None:
    from vidsearch.encode.temporal import read_model_info

    first, second = (read_model_info(trained_models[k]) for k in ("seed0", "seed1"))
    assert first.kind == "lstm" and first.dim == 512 and first.frames == 16
    assert first.weights_hash != second.weights_hash
    assert first.meta["collection"] and len(first.meta["train"]["history"]) == 2


def test_supervised_loss_on_a_collection_is_refused(built_collection: Path, tmp_path: Path, capsys) -> None:
    code = main(["train", "--collection", str(built_collection), "--model", "lstm", "--loss", "triplet",
                 "--epochs", "1", "--out", str(tmp_path / "m.onnx"), "--json"])
    assert code == 2
    assert "needs labelled clips" in json.loads(capsys.readouterr().out)["message"]


def test_manifest_records_the_model_and_search_uses_it(temporal_collection: Path, trained_models: dict[str, Path],
                                                       footage: dict[str, Path]) -> None:
    from vidsearch import Collection
    from vidsearch.encode.temporal import OnnxTemporalModel, read_model_info
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    manifest = json.loads((temporal_collection / "manifest.json").read_text())
    info = read_model_info(trained_models["seed0"])
    assert manifest["config"]["encode"]["temporal_model"] == str(trained_models["seed0"].resolve())
    assert manifest["config"]["encode"]["temporal_hash"] == info.weights_hash
    with Collection.open(temporal_collection) as coll:
        assert coll.config.encode.temporal_hash == info.weights_hash
        video = next(v for v in coll.videos() if v["path"].endswith("bikes.mp4"))
        times, frames = coll.frame_vectors(video["id"])
    # the stored segment vectors are the model's, not the mean's
    engine = Engine(temporal_collection)
    try:
        snap = engine.snapshot
        rows = np.flatnonzero(snap.catalog.segment_video == snap.catalog.video_ids.index(video["id"]))
        model = OnnxTemporalModel(trained_models["seed0"])
        first = np.asarray(frames[:2], np.float32)
        expected = model.aggregate(first)
        mean = first.mean(axis=0) / np.linalg.norm(first.mean(axis=0))
        stored = np.asarray(snap.segments[rows[0]], np.float32)
        np.testing.assert_allclose(stored, expected, atol=2e-3)  # frames stored as float16
        assert float(stored @ mean) < 0.9999
        # a file query and a stored-range query find bikes.mp4 first
        params = SearchParams(insets=False)
        result = engine.search(str(footage["bikes.mp4"]), k=3, params=params)
        assert result.results[0].video_id == video["id"]
        ref = engine.search(f"{video['id']}@2-6", k=3, params=params)
        assert ref.results[0].video_id == video["id"]
    finally:
        engine.close()


def test_another_model_in_its_place_is_refused(temporal_collection: Path, trained_models: dict[str, Path],
                                               footage: dict[str, Path], tmp_path: Path, capsys) -> None:
    from vidsearch import Collection

    copy = tmp_path / "coll"
    shutil.copytree(temporal_collection, copy)
    model_copy = tmp_path / "model.onnx"
    shutil.copy(trained_models["seed0"], model_copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["encode"]["temporal_model"] = str(model_copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with Collection.open(copy) as coll:  # the same weights at the recorded path: searchable
        assert coll.search(str(footage["v1.m4v"]), k=1).results
    shutil.copy(trained_models["seed1"], model_copy)  # retrained since: other weights
    with Collection.open(copy) as coll:
        with pytest.raises(ConfigError, match="weights hash is .* but the collection was built with"):
            coll.search(str(footage["v1.m4v"]), k=1)
    # the CLI says so in one line, and a different --temporal for an existing collection is refused too
    assert main(["search", "--collection", str(copy), str(footage["v1.m4v"]), "--json"]) == 2
    assert "weights hash" in json.loads(capsys.readouterr().out)["message"]
    assert main(["index", "--collection", str(copy), "--temporal", str(trained_models["seed1"]), "--json",
                 str(footage["v2.m4v"])]) == 2
    assert "cannot change" in json.loads(capsys.readouterr().out)["message"]
    model_copy.unlink()
    with Collection.open(copy) as coll:
        with pytest.raises(ConfigError, match="no such temporal model file"):
            coll.search(str(footage["v1.m4v"]), k=1)


def test_a_model_of_another_width_is_refused_before_indexing(trained_models: dict[str, Path], footage: dict[str, Path],
                                                             tmp_path: Path, capsys) -> None:
    code = main(["index", "--collection", str(tmp_path / "c"), "--encoder", "effnet-lite0", "--temporal",
                 str(trained_models["seed0"]), "--json", str(footage["v1.m4v"])])
    assert code == 2 and not (tmp_path / "c").exists()
    assert "takes 512-d frame vectors, the effnet-lite0 encoder gives 1280-d" in json.loads(capsys.readouterr().out)["message"]
