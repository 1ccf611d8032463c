"""Depth in a collection (RGB-D, early fusion): `vidsearch index --depth early` fuses each sampled colour frame's
vector with the depth vector of the depth stream's nearest frame; a colour-only file gets a zero depth part (it
ranks as before); `vidsearch train` on it writes a model that records the stream, and indexing with that model
turns it on. Flow and depth together are fused in that order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidsearch.cli import main


@pytest.fixture(scope="module")
def rgbd_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """4 s of the synthetic RGB-D renderer at 4 fps (a sphere moving away from the camera): H.264 colour and FFV1
    16-bit depth in one MKV, as an RGB-D recorder writes them; and its depth frames."""
    from vidsearch.decode.depth import write_rgbd
    from vidsearch.evaluate.rgbd import render_clip

    clip = render_clip(seed=0, index=0, motion=1, frames=16, size=96)
    path = write_rgbd(clip.colour, clip.depth, 4, tmp_path_factory.mktemp("rgbd") / "rgbd.mkv")
    return path, clip.depth


@pytest.fixture(scope="module")
def depth_collection(rgbd_file: tuple[Path, np.ndarray], footage: dict[str, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("depth") / "coll"
    assert main(["index", "--collection", str(path), "--depth", "early", "--json", str(rgbd_file[0]),
                 str(footage["carphone_pristine.mp4"]), str(footage["v1.m4v"])]) == 0
    return path


def _stored(collection: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from vidsearch import Collection

    with Collection.open(collection) as coll:
        video = next(v for v in coll.videos() if v["path"].endswith(name))
        times, frames = coll.frame_vectors(video["id"])
    return np.asarray(times), np.asarray(frames, np.float32)


def test_the_depth_part_is_the_nearest_depth_frame_and_colour_only_files_get_none(
        depth_collection: Path, rgbd_file: tuple[Path, np.ndarray], footage: dict[str, Path]) -> None:
    from vidsearch.config import CollectionConfig
    from vidsearch.encode.depth import depth_dim, depth_vectors
    from vidsearch.encode.pipeline import MediaEncoder

    manifest = json.loads((depth_collection / "manifest.json").read_text())
    assert manifest["config"]["encode"]["depth"] == "early" and "motion" not in manifest["config"]["encode"]
    assert manifest["dims"] == {"frame": 512 + depth_dim(), "segment": 512 + depth_dim()}
    times, stored = _stored(depth_collection, "rgbd.mkv")
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0]
    expected = depth_vectors(rgbd_file[1][[0, 4, 8, 12]])  # 4 fps: the depth frames at the sample times
    np.testing.assert_allclose(stored[:, 512:] * np.sqrt(2), expected, atol=2e-3)
    assert np.linalg.norm(expected[0] - expected[-1]) > 0.05  # the sphere moves away: the depth changes
    # a colour-only file: its colour vector as a plain collection stores it, and a zero depth part
    times, stored = _stored(depth_collection, "carphone_pristine.mp4")
    plain = MediaEncoder(CollectionConfig()).encode_file(footage["carphone_pristine.mp4"])
    np.testing.assert_allclose(stored[:, :512], plain.frame_vectors, atol=2e-3)
    assert not stored[:, 512:].any()


def test_the_server_path_equals_the_file_path_with_depth(depth_collection: Path,
                                                         rgbd_file: tuple[Path, np.ndarray]) -> None:
    from vidsearch import Collection
    from vidsearch.encode.pipeline import MediaEncoder

    with Collection.open(depth_collection) as coll:
        media = MediaEncoder(coll.config)
    whole = media.encode_file(rgbd_file[0])
    decoded = media.decode_file(rgbd_file[0])
    batched = media.finish(decoded, media.encoder.encode(decoded.all_images))
    np.testing.assert_allclose(batched.frame_vectors, whole.frame_vectors, atol=1e-5)


def test_a_model_trained_on_it_records_depth_and_indexing_with_it_turns_it_on(
        depth_collection: Path, rgbd_file: tuple[Path, np.ndarray], footage: dict[str, Path], tmp_path: Path,
        capsys) -> None:
    from vidsearch.encode.temporal import read_model_info
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    model = tmp_path / "rgbd-early.onnx"
    assert main(["train", "--collection", str(depth_collection), "--model", "lstm", "--loss", "infonce", "--epochs",
                 "1", "--out", str(model), "--json"]) == 0
    info = read_model_info(model)
    assert info.streams == "depth" and info.dim == 512 + 65
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), "--temporal", str(model), "--json", str(rgbd_file[0]),
                 str(footage["carphone_pristine.mp4"])]) == 0
    capsys.readouterr()
    assert json.loads((coll / "manifest.json").read_text())["config"]["encode"]["depth"] == "early"
    engine = Engine(coll)
    try:
        hits = engine.search(str(rgbd_file[0]), k=2, params=SearchParams(insets=False)).results
        assert hits and hits[0].path.endswith("rgbd.mkv")
    finally:
        engine.close()
    # the same model with --motion flow asked for is refused: it was trained without it
    assert main(["index", "--collection", str(tmp_path / "c2"), "--temporal", str(model), "--motion", "flow",
                 "--json", str(rgbd_file[0])]) == 2
    assert "fused with depth stream(s), not flow" in json.loads(capsys.readouterr().out)["message"]


def test_flow_and_depth_together(rgbd_file: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    from vidsearch.config import CollectionConfig, EncodeConfig
    from vidsearch.encode.depth import depth_vectors
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.encode.streams import frame_dim

    config = CollectionConfig(encode=EncodeConfig(motion="flow", depth="early"))
    assert frame_dim(config.encode) == 512 + 33 + 65
    media = MediaEncoder(config).encode_file(rgbd_file[0])
    assert media.frame_vectors.shape == (4, 610)
    third = 1 / np.sqrt(3)  # three unit parts, normalised together
    np.testing.assert_allclose(np.linalg.norm(media.frame_vectors[:, 512:545], axis=1), third, atol=1e-4)
    np.testing.assert_allclose(media.frame_vectors[:, 545:] / third, depth_vectors(rgbd_file[1][[0, 4, 8, 12]]),
                               atol=1e-4)


def test_depth_is_matched_on_the_container_time_when_its_stream_starts_later(tmp_path: Path) -> None:
    """A recorder's depth track may start after the colour: the depth frame nearest each sample is found on the
    container's clock, not on each stream's own first frame."""
    from fractions import Fraction

    import av

    from vidsearch.config import CollectionConfig, EncodeConfig
    from vidsearch.encode.depth import depth_vectors
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate.rgbd import render_clip

    clip = render_clip(seed=0, index=1, motion=1, frames=16, size=96)
    path = tmp_path / "late-depth.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        c = out.add_stream("libx264", rate=4, options={"preset": "veryfast"})
        c.width, c.height, c.pix_fmt = 96, 96, "yuv420p"
        d = out.add_stream("ffv1", rate=4)
        d.width, d.height, d.pix_fmt = 96, 96, "gray16le"
        d.metadata["title"] = "depth"
        for i, (rgb, dep) in enumerate(zip(clip.colour, clip.depth)):
            out.mux(c.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(dep), format="gray16le")
            frame.pts, frame.time_base = i + 2, Fraction(1, 4)  # depth frame i shown at 0.5 s + i / 4
            out.mux(d.encode(frame))
        out.mux(c.encode())
        out.mux(d.encode())
    media = MediaEncoder(CollectionConfig(encode=EncodeConfig(depth="early"))).encode_file(path)
    assert media.times.tolist() == [0.0, 1.0, 2.0, 3.0]
    # samples at 0, 1, 2, 3 s of the colour; the depth frames at 0.5 + i / 4 s: nearest i = 0, 2, 6, 10
    np.testing.assert_allclose(media.frame_vectors[:, 512:] * np.sqrt(2), depth_vectors(clip.depth[[0, 2, 6, 10]]),
                               atol=1e-4)


def test_depth_near_reduces_only_the_frames_it_picks(rgbd_file: tuple[Path, np.ndarray]) -> None:
    from vidsearch.decode.depth import depth_near
    from vidsearch.encode.depth import depth_vectors

    calls = []

    def reduce(frame: np.ndarray) -> np.ndarray:
        calls.append(frame)
        return depth_vectors(frame[None])[0]

    rows = depth_near(rgbd_file[0], [3.0, 0.0, 1.1, 9.0], reduce)  # any order; 9 s is past the last frame (3.75 s)
    assert rows is not None and len(calls) == 4  # of the 16 depth frames, the 4 picked
    np.testing.assert_allclose(rows, depth_vectors(rgbd_file[1][[12, 0, 4, 15]]), atol=1e-6)
