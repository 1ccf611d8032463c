"""MediaEncoder: the optional per-process encode cache used by benchmarks."""

from __future__ import annotations

import dataclasses

from vidsearch.config import CollectionConfig, DecodeConfig
from vidsearch.encode.pipeline import MediaEncoder


def test_cache_is_off_by_default_and_keys_on_file_and_config(footage, monkeypatch):
    path = footage["bikes.mp4"]
    assert MediaEncoder.cache is None
    enc = MediaEncoder(CollectionConfig(encode=dataclasses.replace(CollectionConfig().encode, encoder="sscd-distilled")))
    a, b = enc.encode_file(path), enc.encode_file(path)
    assert a is not b  # no cache: encoded twice
    monkeypatch.setattr(MediaEncoder, "cache", {})
    c = enc.encode_file(path)
    assert enc.encode_file(path) is c and len(MediaEncoder.cache) == 1
    assert (c.segment_vectors == a.segment_vectors).all()
    other = MediaEncoder(dataclasses.replace(enc.config, decode=DecodeConfig(fps=2.0)), encoder=enc.encoder)
    d = other.encode_file(path)
    assert d is not c and len(d.times) > len(c.times) and len(MediaEncoder.cache) == 2
    assert enc.encode_file(path, crops=True) is not c and len(MediaEncoder.cache) == 3


# ------------------------------------------------------------------ decode and encode overlapped
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vidsearch.decode.prefetch import THREAD_NAME  # noqa: E402
from vidsearch.errors import DecodeError  # noqa: E402


class _MeanColourEncoder:
    """A stand-in frame encoder (no model): each image's mean colour per quadrant, L2-normalised; records the
    thread each call runs on and can fail on its n-th call."""

    name, dim, input_size = "mean-colour", 12, (32, 32)

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.threads: set[str] = set()

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail_on_call == self.calls:
            raise RuntimeError("encoder failed")
        q = images.reshape(len(images), 2, 16, 2, 16, 3).mean(axis=(2, 4)).reshape(len(images), -1).astype(np.float32)
        return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def hd_clip() -> Path:
    from vidsearch.evaluate.hd import hd_footage

    return hd_footage(720, seconds=6)  # the tests/decode clip (cached)


def _media(overlap: bool, encoder: object, batch_size: int = 4, fps: float = 3.0) -> MediaEncoder:
    config = CollectionConfig(decode=DecodeConfig(fps=fps),
                              encode=dataclasses.replace(CollectionConfig().encode, batch_size=batch_size))
    return MediaEncoder(config, encoder=encoder, overlap=overlap)  # type: ignore[arg-type]


def test_overlapped_decode_gives_the_vectors_of_the_sequential_pipeline(hd_clip):
    enc = _MeanColourEncoder()
    a = _media(True, enc).encode_file(hd_clip)
    b = _media(False, enc).encode_file(hd_clip)
    assert len(a.times) == 18 and np.array_equal(a.times, b.times)
    assert np.array_equal(a.frame_vectors, b.frame_vectors) and np.array_equal(a.segment_vectors, b.segment_vectors)
    # the encoder ran on the caller's thread only; the decode thread's work is reported beside the wall split
    assert enc.threads == {threading.current_thread().name}
    assert a.timings["decode_thread"] > 0 and "decode_thread" not in b.timings
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_overlap_with_crops_and_insets_matches_sequential(hd_clip):
    enc = _MeanColourEncoder()
    a = _media(True, enc, fps=1.0).encode_file(hd_clip, crops=True, insets=True)
    b = _media(False, enc, fps=1.0).encode_file(hd_clip, crops=True, insets=True)
    assert len(a.region_segment_vectors) == len(b.region_segment_vectors) > 5
    for x, y in zip(a.region_segment_vectors, b.region_segment_vectors):
        assert np.array_equal(x, y)


def test_a_decode_error_is_the_same_decode_error_with_or_without_the_thread(footage, tmp_path):
    # headers intact (it probes), every picture zeroed: the error is raised in the decode thread
    data = bytearray(footage["bikes.mp4"].read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(bytes(data))
    errors = []
    for overlap in (True, False):
        with pytest.raises(DecodeError) as exc:
            _media(overlap, _MeanColourEncoder()).encode_file(bad)
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and "broken.mp4" in errors[0] and "no decodable video frame" in errors[0]
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_an_encoder_error_mid_file_stops_the_decode_thread(hd_clip):
    enc = _MeanColourEncoder(fail_on_call=2)
    with pytest.raises(RuntimeError, match="encoder failed"):
        _media(True, enc, batch_size=2).encode_file(hd_clip)
    assert enc.calls == 2
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_real_encoder_vectors_are_identical_overlapped_or_not(footage, hd_clip):
    from vidsearch.encode import load_encoder

    enc = load_encoder("sscd-distilled")
    config = CollectionConfig(encode=dataclasses.replace(CollectionConfig().encode, encoder="sscd-distilled"))
    for path in (hd_clip, footage["bikes.mp4"]):
        a = MediaEncoder(config, encoder=enc).encode_file(path)
        b = MediaEncoder(config, encoder=enc, overlap=False).encode_file(path)
        assert np.array_equal(a.frame_vectors, b.frame_vectors) and np.array_equal(a.times, b.times)
