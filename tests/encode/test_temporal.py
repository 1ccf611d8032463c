"""Temporal aggregators: mean pooling, frame resampling, and learned ONNX models run without PyTorch; the
encode config's model record (path + weights hash) round-trips through the manifest, old manifests unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vidsearch.config import CollectionConfig, EncodeConfig
from vidsearch.encode.temporal import MeanPool, OnnxTemporalModel, load_temporal, read_model_info, resample_frames
from vidsearch.errors import CollectionError, ConfigError, EncoderError, ShapeError
from vidsearch.store.manifest import read_manifest, write_manifest

HASH = "ab" * 32


def test_resample_frames_keeps_order_repeats_short_and_subsamples_long() -> None:
    frames = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    assert resample_frames(frames, 8)[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    long = np.arange(32, dtype=np.float32)[:, None]
    assert resample_frames(long, 4)[:, 0].tolist() == [4, 12, 20, 28]
    assert resample_frames(frames[:1], 3)[:, 0].tolist() == [0, 0, 0]
    with pytest.raises(ShapeError):
        resample_frames(np.zeros((0, 3), np.float32), 4)


def test_mean_pool_is_order_blind() -> None:
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(MeanPool().aggregate(x), MeanPool().aggregate(x[::-1]), atol=1e-6)
    assert isinstance(load_temporal(EncodeConfig()), MeanPool)


def test_encode_config_model_record_round_trips_and_old_manifests_are_unchanged(tmp_path: Path) -> None:
    plain = CollectionConfig().to_dict()
    assert set(plain["encode"]) == {"encoder", "aggregator", "batch_size"}  # as format_version 1 wrote it
    config = CollectionConfig(encode=EncodeConfig(temporal_model="/models/lstm.onnx", temporal_hash=HASH))
    write_manifest(tmp_path, config, {"frame": 512, "segment": 512})
    stored = read_manifest(tmp_path)
    assert stored["config"]["encode"]["temporal_model"] == "/models/lstm.onnx"
    assert CollectionConfig.from_dict(json.loads(json.dumps(stored["config"]))) == config
    for bad in ({"temporal_model": "/m.onnx"}, {"temporal_hash": HASH}, {"temporal_model": "/m.onnx", "temporal_hash": "xyz"}):
        with pytest.raises(ConfigError, match="64-hex SHA-256"):
            EncodeConfig(**bad)  # type: ignore[arg-type]
    damaged = json.loads((tmp_path / "manifest.json").read_text())
    damaged["config"]["encode"]["temporal_hash"] = 7
    (tmp_path / "manifest.json").write_text(json.dumps(damaged))
    with pytest.raises(CollectionError, match="temporal_hash should be a string"):
        read_manifest(tmp_path)


def test_missing_or_foreign_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such temporal model file"):
        OnnxTemporalModel(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(EncoderError, match="could not load ONNX model"):
        read_model_info(junk)
    with pytest.raises(ConfigError, match="no such temporal model file"):
        load_temporal(EncodeConfig(temporal_model=str(tmp_path / "absent.onnx"), temporal_hash=HASH))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NDArrayPair]:
    """A tiny trained LSTM exported to ONNX, with a batch of windows and torch's vectors for them."""
    pytest.importorskip("torch")
    from vidsearch.train.datasets import clip_set
    from vidsearch.train.loop import TrainConfig, embed, export_onnx, train_temporal

    rng = np.random.default_rng(0)
    data = clip_set(rng.normal(size=(24, 3, 16)), np.arange(24) % 2)
    result = train_temporal(data, TrainConfig(loss="ce", epochs=1, hidden=8, batch_size=8))
    windows = rng.normal(size=(5, 16, 16)).astype(np.float32)
    windows /= np.linalg.norm(windows, axis=2, keepdims=True)
    path = export_onnx(result, tmp_path_factory.mktemp("model") / "tiny.onnx")
    return path, (windows, embed(result.model, windows))


NDArrayPair = tuple[np.ndarray, np.ndarray]


def test_a_model_without_vidsearch_metadata_is_refused(exported: tuple[Path, NDArrayPair], tmp_path: Path) -> None:
    import onnx

    proto = onnx.load(str(exported[0]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(EncoderError, match="without the 'vidsearch.temporal' metadata"):
        OnnxTemporalModel(bare)


def test_hash_mismatch_is_refused(exported: tuple[Path, NDArrayPair]) -> None:
    path = exported[0]
    info = read_model_info(path)
    assert isinstance(load_temporal(EncodeConfig(temporal_model=str(path), temporal_hash=info.weights_hash)),
                      OnnxTemporalModel)
    with pytest.raises(ConfigError, match="weights hash is .* but the collection was built with abababab"):
        load_temporal(dataclasses.replace(EncodeConfig(), temporal_model=str(path), temporal_hash=HASH))


def test_core_install_runs_an_exported_model_without_torch(exported: tuple[Path, NDArrayPair], tmp_path: Path) -> None:
    """torch and onnx unimportable in a child process: the model still loads and gives torch's vectors."""
    path, (windows, expected) = exported
    np.save(tmp_path / "windows.npy", windows)
    child = textwrap.dedent(f"""
        import sys
        for name in ("torch", "onnx", "torchvision"):
            sys.modules[name] = None  # as if not installed
        import numpy as np
        from vidsearch.encode.temporal import OnnxTemporalModel
        model = OnnxTemporalModel({str(path)!r})
        windows = np.load({str(tmp_path / 'windows.npy')!r})
        np.save({str(tmp_path / 'got.npy')!r}, model.aggregate_many(list(windows)))
        from vidsearch.train.loop import require_torch
        try:
            require_torch()
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), expected, atol=1e-5)
    assert "ConfigError" in run.stdout and "pip install 'vidsearch[train]'" in run.stdout


def test_mean_windows_from_one_running_sum_equal_the_mean_of_each_window() -> None:
    from vidsearch.decode.windows import Segment
    from vidsearch.encode.pipeline import segment_vectors
    from vidsearch.encode.temporal import MeanPool

    rng = np.random.default_rng(0)
    frames = rng.standard_normal((40, 16)).astype(np.float32)
    segments = [Segment(float(a), float(a + 3), a, min(40, a + 3)) for a in range(0, 40, 2)] + [Segment(39.0, 40.0, 39, 40)]
    got = segment_vectors(frames, segments, MeanPool())
    want = np.stack([MeanPool().aggregate(frames[s.frame_start : s.frame_end]) for s in segments])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (len(segments), 16)
