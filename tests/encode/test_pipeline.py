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
