import numpy as np

from vidsearch.decode import Segment, make_segments


def test_windows_cover_every_frame_with_overlap():
    times = np.arange(10, dtype=float)  # 1 fps, 10 s
    segs = make_segments(times, 10.0, window=2.0, stride=1.0)
    assert segs[0] == Segment(0.0, 2.0, 0, 2)
    assert segs[1] == Segment(1.0, 3.0, 1, 3)
    assert segs[-1].end == 10.0 and segs[-1].frame_end == 10
    assert len(segs) == 9
    covered = set()
    for s in segs:
        covered.update(range(s.frame_start, s.frame_end))
    assert covered == set(range(10))


def test_short_video_is_one_segment():
    segs = make_segments(np.array([0.0, 1.0]), 1.5, window=2.0, stride=1.0)
    assert segs == [Segment(0.0, 1.5, 0, 2)]


def test_image_is_one_instant():
    assert make_segments(np.array([0.0]), 0.0, window=2.0, stride=1.0) == [Segment(0.0, 0.0, 0, 1)]


def test_windows_without_frames_are_dropped():
    # key frames only at 0 s and 6 s
    segs = make_segments(np.array([0.0, 6.0]), 8.0, window=2.0, stride=2.0)
    assert [(s.start, s.frame_start, s.frame_end) for s in segs] == [(0.0, 0, 1), (6.0, 1, 2)]


def test_empty():
    assert make_segments(np.array([]), 5.0, 2.0, 1.0) == []


def test_bad_window_or_stride_is_a_config_error_not_an_endless_loop():
    import pytest

    from vidsearch.errors import ConfigError

    times = np.arange(10, dtype=float)
    for window, stride in [(0.0, 1.0), (2.0, 0.0), (-2.0, 1.0), (float("nan"), 1.0), (2.0, float("nan")),
                           (float("inf"), 1.0)]:
        with pytest.raises(ConfigError, match="window and stride"):
            make_segments(times, 10.0, window=window, stride=stride)
    with pytest.raises(ConfigError, match="duration"):
        make_segments(times, float("nan"), window=2.0, stride=1.0)


def _loop_segments(times, duration, window, stride):
    """The rule as a loop, one window at a time (what make_segments computed before it was vectorised)."""
    n = len(times)
    end_of_video = max(float(duration), float(times[-1]) + 1e-3)
    if end_of_video <= window:
        return [Segment(0.0, round(end_of_video, 3), 0, n)]
    out, start = [], 0.0
    while True:
        end = min(start + window, end_of_video)
        lo = int(np.searchsorted(times, start - 1e-6, side="left"))
        hi = int(np.searchsorted(times, end - 1e-6, side="left"))
        if hi > lo:
            out.append(Segment(round(start, 3), round(end, 3), lo, hi))
        if start + window >= end_of_video - 1e-6:
            return out
        start += stride


def test_vectorised_windows_equal_the_loop_on_seeded_cases():
    """Frame rates, gaps, strides that do not divide the window (0.3, 0.7 s: their sums drift from i x stride),
    durations shorter and longer than the last frame, hours-long videos: the same segments as the loop."""
    rng = np.random.default_rng(7)
    for case in range(300):
        n = int(rng.integers(2, 4000 if case % 10 == 0 else 80))
        step = float(rng.choice([1 / 30, 0.5, 1.0, 1 / 3, 2.0]))
        times = np.cumsum(np.full(n, step) * rng.choice([1.0, 3.0], n, p=[0.9, 0.1])) - step
        duration = float(times[-1] + rng.choice([0.0, step, 5.0, -step]))
        window = float(rng.choice([1.0, 2.0, 3.0, 2.5]))
        stride = float(rng.choice([0.3, 0.5, 0.7, 1.0, 1.5])) * window / 2
        assert make_segments(times, duration, window, stride) == _loop_segments(times, duration, window, stride), case
