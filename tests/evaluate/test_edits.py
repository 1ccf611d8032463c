"""evaluate/edits.py's encoder: the same frames give the same bytes (what the data sets' determinism rests on)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from vidsearch.evaluate import edits


def test_encoding_the_same_frames_gives_the_same_bytes(tmp_path: Path) -> None:
    # on an AVX-512 CPU, libx264 uncapped gave 4 different files out of 5 for these frames
    rng = np.random.default_rng(0)
    base = (rng.random((200, 360, 3)) * 255).astype(np.uint8)
    frames = [np.ascontiguousarray(base[i % 20 : i % 20 + 180, i : i + 320]) for i in range(40)]
    digests = {hashlib.sha256(edits.encode_rgb(frames, 10, tmp_path / f"{k}.mp4", bitrate=500_000).read_bytes())
               .hexdigest() for k in range(5)}
    assert len(digests) == 1
    back, fps = edits.decode_rgb(tmp_path / "0.mp4", max_width=320, max_fps=10)
    assert len(back) == 40 and fps == 10


def test_x264_options_cap_the_assembly_only_on_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edits, "_avx512", lambda: True)
    assert edits.x264_options({"crf": "18"}) == {"crf": "18", "x264-params": "asm=AVX2"}
    assert edits.x264_options({"x264-params": "keyint=60"})["x264-params"] == "keyint=60:asm=AVX2"
    assert edits.x264_options({"b": "1"}, codec="mpeg4") == {"b": "1"}
    monkeypatch.setattr(edits, "_avx512", lambda: False)
    assert edits.x264_options({"crf": "18"}) == {"crf": "18"}
