"""RGB-D files: the depth stream or PNG folder read back exactly, colour decoded from the colour stream only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch.decode import iter_frames, probe
from vidsearch.decode.depth import has_depth, read_depth, write_depth_pngs, write_rgbd
from vidsearch.errors import DecodeError
from vidsearch.evaluate.rgbd import render_clip


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return render_clip(seed=0, index=1, motion=0, frames=8, size=64)  # "toward": the depth changes every frame


def test_mkv_depth_stream_round_trips_exactly_and_colour_comes_from_the_colour_stream(clip, tmp_path: Path) -> None:
    path = write_rgbd(clip.colour, clip.depth, 8, tmp_path / "rgbd.mkv")
    assert has_depth(path)
    depth = read_depth(path)
    assert depth.depth.dtype == np.uint16 and np.array_equal(depth.depth, clip.depth)  # FFV1: lossless, 16-bit
    assert np.allclose(depth.times, np.arange(8) / 8)
    info = probe(path)
    assert info.codec == "h264" and (info.width, info.height) == (64, 64)
    frames = list(iter_frames(path, (64, 64), fps=8))
    assert len(frames) == 8
    # the colour frames, not the depth (H.264 is lossy: close, not equal)
    assert np.abs(frames[3].image.astype(int) - clip.colour[3].astype(int)).mean() < 12
    # the depth frame nearest each colour frame's time
    assert np.array_equal(depth.at([f.time for f in frames]), clip.depth)


def test_png_folder_with_a_frame_rate_or_times_in_the_names(clip, tmp_path: Path) -> None:
    numbered = write_depth_pngs(clip.depth, tmp_path / "numbered")
    with pytest.raises(DecodeError, match="give the frame rate"):
        read_depth(numbered)
    got = read_depth(numbered, fps=4)
    assert np.array_equal(got.depth, clip.depth) and np.allclose(got.times, np.arange(8) / 4)
    timed = write_depth_pngs(clip.depth, tmp_path / "timed", fps=8)
    got = read_depth(timed)
    assert np.array_equal(got.depth, clip.depth) and np.allclose(got.times, np.arange(8) / 8, atol=1e-6)
    assert np.array_equal(got.at([0.01, 0.49, 10.0]), clip.depth[[0, 4, 7]])


def test_colour_only_files_and_bad_depth_are_clear_errors(clip, footage, tmp_path: Path) -> None:
    from PIL import Image

    plain = footage["bikes.mp4"]
    assert not has_depth(plain)
    with pytest.raises(DecodeError, match="no depth stream"):
        read_depth(plain)
    with pytest.raises(DecodeError, match="no PNG file"):
        read_depth(tmp_path)
    (tmp_path / "rgb").mkdir()
    Image.fromarray(clip.colour[0]).save(tmp_path / "rgb" / "000000.png")
    with pytest.raises(DecodeError, match="16-bit single-channel"):
        read_depth(tmp_path / "rgb", fps=8)
