"""A short real HD clip for the decode tests, made once (and cached) by vidsearch.evaluate.hd."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def hd_clip() -> Path:
    """6 s of 720p H.264 at 30 fps, a key frame every 2 s (3 groups of pictures), B-frames: the first 6 s of the
    HD footage (bigbuckbunny, then rgb.m4v: a scene cut inside the second group)."""
    from vidsearch.evaluate.hd import hd_footage

    return hd_footage(720, seconds=6)
