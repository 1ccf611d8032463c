"""Pruning with distillation into the same embedding space (issue #18, item 4): the curve of pruning ratio against
images/s, cosine to the teacher and VSC-style segment micro-AP of pruned queries against an index built with the
full model.

    python bench/prune.py [--ratios 0.25,0.5,0.75] [--images 2048] [--epochs 4] [--wait-quiet 300] [--json]

For each ratio, ``vidsearch.train.prune.prune_and_distill`` prunes EfficientNet-Lite0 (the teacher, fp32 torch)
and distils it on augmented views of the frames int8 calibration may use (``quant.calibration_files
("packaged+photos")``: the packaged footage and the even-numbered photographs); the student is exported (fp32) and
quantised with the default int8 recipe (``effnet.DEFAULT_INT8``). Models are cached by configuration (training
is timed in the run that makes them, and its seconds are kept in the model's metadata).

Measured, the teacher's two variants beside the students' in the same rounds:

- cosine to the teacher (fp32) on held-out frames never trained or calibrated on (``quant.heldout_sources()``:
  opencv-doc's videos and the odd-numbered photographs): min, 1st percentile, mean;
- images/s at 1 and 2 threads through ``OnnxFrameEncoder`` (batches of ``--batch``, ``--rounds`` rounds in a
  shuffled order, the median), and the ratio to the teacher's int8 model (the ``effnet-lite0`` default);
- multiply-adds of one frame;
- VSC-style small benchmark (seed 0, ``--vsc-seeds``): the references indexed once with ``effnet-lite0`` (its default
  variant, int8), the queries encoded by the teacher and by each student (the engine's query encoder swapped, as
  bench/quant.py's vsc section does), segment and pair micro-AP.

The VSC references are cut from the same packaged footage and photographs the students are distilled on (their
targets are the teacher's vectors, never the benchmark's labels); the held-out cosine says how far from those
images the students keep to the teacher.

Writes bench/results/prune.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C
import quant as Q

from vidsearch.encode import effnet

PRUNE_VERSION = "1"  # bump when the students would be made differently


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratios", default="0.25,0.5,0.75", help="fractions of the expanded channels removed")
    p.add_argument("--images", type=int, default=2048, help="augmented training frames per student")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--train-per-source", type=int, default=24, help="frames of each training video (1 fps, spread)")
    p.add_argument("--heldout-per-video", type=int, default=24, help="held-out frames per opencv-doc video (as bench/quant.py)")
    p.add_argument("--batch", type=int, default=32, help="frames per encoder call when timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--vsc-seeds", default="0", help="VSC-style small data sets (seeds), comma-separated; empty: none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait-quiet", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--name", default="prune")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    args.ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    args.vsc_seeds = [int(s) for s in args.vsc_seeds.split(",") if s.strip()]
    return args


def model_dir() -> Path:
    path = effnet.cache_dir().parent / "prune"
    path.mkdir(parents=True, exist_ok=True)
    return path


def student(config: Any, sources: list[Path], args: argparse.Namespace, calibration: np.ndarray) -> dict[str, Any]:
    """The fp32 and int8 files of the student of ``config``, trained (and timed) when not cached."""
    from vidsearch.train import prune as P

    key = hashlib.sha256(json.dumps([PRUNE_VERSION, config.to_dict(), args.train_per_source,
                                     [(p.name, p.stat().st_size) for p in sources]], sort_keys=True).encode()).hexdigest()[:12]
    fp32 = model_dir() / f"effnet-lite0-pruned-{config.ratio:g}-{key}-fp32.onnx"
    int8 = fp32.with_name(fp32.name.replace("-fp32", "-int8"))
    made = False
    if not fp32.exists():
        C.log(f"[prune] ratio {config.ratio:g}: training ({config.images} views, {config.epochs} epochs)")
        frames = Q.cached_frames(sources, args.train_per_source, config.source_size)
        result = P.prune_and_distill(frames, config, progress=lambda m: C.log(f"[prune]   {m}"))
        P.export(result, fp32, calibration[:8])
        made = True
    if not int8.exists():
        t0 = time.perf_counter()
        effnet.quantize_int8(fp32, int8, effnet.DEFAULT_INT8, calibration, min_cosine=-1.0)
        C.log(f"[prune] ratio {config.ratio:g}: int8 in {time.perf_counter() - t0:.0f} s")
    description = P.read_description(fp32)
    return {"fp32": fp32, "int8": int8, "trained_in_this_run": made, "description": description}


def vsc_figures(seed: int, query_encoders: dict[str, Any]) -> dict[str, Any]:
    """VSC-style small (``seed``): the references in an ``effnet-lite0`` collection, the queries encoded by each of
    ``query_encoders`` (name -> FrameEncoder)."""
    from vidsearch.config import CollectionConfig
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate.vsc_data import build_dataset, default_root
    from vidsearch.evaluate.vsc_methods import VidsearchRanges
    from vidsearch.evaluate.vsc_run import dataset_config, evaluate
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    config = dataset_config("small", seed)
    dataset = build_dataset(config, default_root(config))
    path, ref_of_video = Q.vsc_collection(dataset, "effnet-lite0")

    class Ranges(VidsearchRanges):
        def __init__(self, name: str, encoder: Any) -> None:
            super().__init__(f"vidsearch-effnet-lite0+queries-{name}", CollectionConfig(), SearchParams())
            self.encoder = encoder

        def index(self, references: Any) -> None:
            self._engine = Engine.open(path)
            self._ref_of_video = dict(ref_of_video)
            self._engine._media_encoder = MediaEncoder(self._engine.config, encoder=self.encoder)

    out: dict[str, Any] = {"seed": seed, "references": len(dataset.reference_ids), "queries": len(dataset.query_ids),
                           "methods": {}}
    for name, encoder in query_encoders.items():
        predictor = Ranges(name, encoder)
        try:
            _, figures = evaluate(dataset, predictor, progress=C.log)
        finally:
            predictor.close()
        keep = ("segment_micro_ap", "pair_micro_ap", "true_pair_recall", "query_ms_p50")
        out["methods"][name] = {k: figures.get(k) for k in keep}
        C.log(f"[prune] VSC small seed {seed}, queries by {name}: segment micro-AP {figures['segment_micro_ap']:.4f}, "
              f"pair {figures['pair_micro_ap']:.4f}")
    return out


def main() -> None:
    from vidsearch.encode.frame import OnnxFrameEncoder
    from vidsearch.encode.registry import get
    from vidsearch.train.prune import PruneConfig

    args = parse_args()
    payload = C.header("prune", {k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet")})
    spec = get("effnet-lite0")
    train_sources = Q.calibration_files("packaged+photos")
    heldout_files = Q.heldout_sources()
    heldout = Q.cached_frames(heldout_files, args.heldout_per_video, (224, 224))
    calibration = effnet.sample_images(effnet.calibration_sources(), effnet.DEFAULT_INT8.frames_per_source)
    payload["config"].update(train_files=[p.name for p in train_sources], heldout_files=[p.name for p in heldout_files],
                             heldout_frames=int(len(heldout)), int8_recipe=effnet.DEFAULT_INT8.to_dict())

    # training first (heavy, minutes; not timed against anything), then the quiet measurements
    students: dict[str, dict[str, Any]] = {}
    for ratio in args.ratios:
        config = PruneConfig(ratio=ratio, images=args.images, epochs=args.epochs, lr=args.lr, seed=args.seed)
        students[f"{ratio:g}"] = student(config, train_sources, args, calibration)

    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()
    paths: dict[str, Path] = {"teacher-fp32": effnet.effnet_onnx_path(quantized=False),
                              "teacher-int8": effnet.effnet_onnx_path(quantized=True)}
    for r, s in students.items():
        paths[f"pruned-{r}-fp32"] = s["fp32"]
        paths[f"pruned-{r}-int8"] = s["int8"]
    reference = Q.run_onnx(paths["teacher-fp32"], heldout)
    rows: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        rows[name] = {"file": path.name, "cosine_to_teacher": Q.cosines(Q.run_onnx(path, heldout), reference)}
    speed = Q.speed_table(paths, spec, heldout, args, "teacher-int8")
    for name in paths:
        rows[name].update(speed[name])
    from vidsearch.train import prune as P

    teacher_macs = P.macs(effnet.build_torch_model())
    for name in rows:
        if name.startswith("pruned-"):
            d = students[name.split("-")[1]]["description"]
            rows[name].update(ratio=float(name.split("-")[1]), macs=d["macs"][1], channels=d["channels"],
                              cosine_train_after=d["cosine_train_after"], cosine_train_before=d["cosine_train_before"],
                              train_seconds=d["seconds"], trained_in_this_run=students[name.split("-")[1]]["trained_in_this_run"])
        else:
            rows[name].update(ratio=0.0, macs=teacher_macs)
    payload["variants"] = rows

    payload["vsc"] = []
    for seed in args.vsc_seeds:
        encoders = {"teacher-int8": OnnxFrameEncoder(spec, paths["teacher-int8"])}
        encoders.update({f"pruned-{r}-int8": OnnxFrameEncoder(spec, s["int8"]) for r, s in students.items()})
        payload["vsc"].append(vsc_figures(seed, encoders))
    payload["cpu_probe_end"] = C.cpu_probe()

    C.log(C.table(["variant", "MMAC", "cos p1", "cos mean", "img/s 1t", "img/s 2t", "x int8 teacher 2t"], [
        [n, r["macs"] / 1e6, r["cosine_to_teacher"]["p1"], r["cosine_to_teacher"]["mean"], r["images_per_s_1t"],
         r["images_per_s_2t"], r["x_teacher-int8_2t"]] for n, r in rows.items()]))
    for v in payload["vsc"]:
        C.log(f"VSC small seed {v['seed']}: " + ", ".join(f"{n} {m['segment_micro_ap']:.4f}" for n, m in v["methods"].items()))
    C.emit(args.name, payload, args.json)


if __name__ == "__main__":
    main()
