"""EfficientNet-Lite0 run in PyTorch eager mode: the baseline bench/ingest.py compares ONNX Runtime
against (images/s and cosine agreement). The package runs the ONNX export
(:mod:`vidsearch.encode.effnet`); this is never used outside the benchmarks and their tests.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode import effnet
from vidsearch.encode.registry import EncoderSpec, get
from vidsearch.encode.temporal import l2_normalize


class TorchEffNetEncoder:
    """PyTorch eager EfficientNet-Lite0 with the FrameEncoder interface (uint8 NHWC in, L2-normalised out)."""

    def __init__(self, spec: EncoderSpec | None = None) -> None:
        import torch

        spec = spec or get("effnet-lite0")
        self.name, self.dim, self.input_size = spec.name, spec.dim, spec.input_size
        self._torch = torch
        self._model = effnet.build_torch_model()

    def encode(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N, H, W, 3) uint8 RGB -> (N, 1280) float32, L2-normalised."""
        with self._torch.no_grad():
            out = self._model(self._torch.from_numpy(np.ascontiguousarray(images))).numpy()
        return l2_normalize(out.astype(np.float32))
