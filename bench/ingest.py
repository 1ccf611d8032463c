"""Ingest speed on the real sample footage, per frame encoder, plus effnet-lite0 frame-encoding
throughput: ONNX Runtime fp32 / int8 vs PyTorch eager, at all cores and at 1 thread.

    python bench/ingest.py [--encoders sscd,sscd-distilled,effnet-lite0] [--json]

Ingest: for each encoder, a fresh collection in a temporary folder, ``coll.add(reference_footage())``;
models are loaded and warmed (one batch) first, so model export/load is not counted. Best of
``--ingest-repeats`` runs (fresh collection each) by wall time. Per-file ``FileReport.timings``
(decode, encode, hash, store) are summed; ``other`` is wall minus their sum (index save, lock, listing).

Throughput: effnet-lite0 on ``--frames`` real frames decoded at 224x224 (1 fps from the reference
footage), batches of ``--batch``; best of ``--repeats`` timed passes after one warm-up pass; all variants
timed round-robin in each round so machine drift hits them alike; ratios are from the same run.

Writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

from vidsearch.encode.registry import encoder_names

ENCODERS = tuple(encoder_names())
STAGES = ("decode", "encode", "hash", "store")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated encoders to ingest with")
    p.add_argument("--ingest-repeats", type=int, default=3, help="ingest runs per encoder (best by wall time)")
    p.add_argument("--frames", type=int, default=128, help="frames per throughput pass (multiple of --batch)")
    p.add_argument("--batch", type=int, default=32, help="throughput batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed throughput passes (best of) after 1 warm-up")
    p.add_argument("--no-throughput", action="store_true", help="skip the effnet-lite0 ORT vs torch comparison")
    p.add_argument("--no-export-timing", action="store_true", help="skip timing a first-time effnet export")
    p.add_argument("--wait-quiet", type=float, default=300, metavar="SECONDS",
                   help="first wait up to this long for other CPU work to calm down (0: do not wait)")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.encoders = C.encoder_list(p, args.encoders, ENCODERS)
    return args


# ---------------------------------------------------------------------------------------- frames
def real_frames(files: list[Path], size: tuple[int, int], n: int) -> np.ndarray:
    """``n`` real frames at ``size`` (width, height): 1 fps from every file, evenly subsampled."""
    from vidsearch.decode import iter_frames

    frames = [f.image for path in files for f in iter_frames(path, size, fps=1.0)]
    if len(frames) < n:
        raise SystemExit(f"only {len(frames)} frames in the footage, asked for {n}")
    pick = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return np.stack([frames[i] for i in pick])


# ---------------------------------------------------------------------------------------- ingest
def warm_encoder(name: str, files: list[Path], batch: int) -> dict[str, float]:
    from vidsearch.encode import load_encoder, registry

    load_s, enc = C.time_call(lambda: load_encoder(name))
    images = real_frames(files[:1], registry.get(name).input_size, batch)
    # ONNX Runtime needs a few runs before it reaches its steady speed (arena growth, thread pool)
    batches_s = [C.time_call(lambda: enc.encode(images))[0] for _ in range(4)]
    return {"load_s": load_s, "warmup_batches_s": batches_s, "batch": batch}


def ingest_once(name: str, files: list[Path]) -> dict[str, Any]:
    from vidsearch import Collection
    from vidsearch.config import CollectionConfig, EncodeConfig

    config = CollectionConfig(encode=EncodeConfig(encoder=name))
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-ingest-") as tmp:
        coll = Collection.create(Path(tmp) / "coll", config)
        c0, t0 = time.process_time(), time.perf_counter()
        reports = coll.add(files)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        info = coll.info()
        coll.close()
    failed = [r.to_dict() for r in reports if r.status != "indexed"]
    stages = {k: float(sum(r.timings.get(k, 0.0) for r in reports)) for k in STAGES}
    accounted = sum(stages.values())
    video_s = float(sum(r.duration for r in reports if r.status == "indexed"))
    return {
        "config": config.to_dict(),
        "wall_s": wall,
        "video_seconds": video_s,
        "video_s_per_wall_s": video_s / wall,
        "process_cpu_s": cpu,
        "video_s_per_cpu_s": video_s / cpu,
        "cpu_utilisation": cpu / wall,
        "frames": info["frames"],
        "frames_per_s": info["frames"] / wall,
        "segments": info["segments"],
        "files_indexed": sum(r.status == "indexed" for r in reports),
        "not_indexed": failed,
        "stages_s": stages,
        "other_s": wall - accounted,
        "stage_share_of_wall": {**{k: v / wall for k, v in stages.items()}, "other": (wall - accounted) / wall},
        "per_file": [r.to_dict() for r in reports],
    }


def bench_ingest(names: list[str], files: list[Path], repeats: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        C.log(f"[ingest] {name}: loading + warm-up")
        warm = warm_encoder(name, files, batch)
        runs = []
        for i in range(repeats):
            r = ingest_once(name, files)
            C.log(f"[ingest] {name} run {i + 1}/{repeats}: {r['wall_s']:.1f} s wall, "
                  f"{r['video_s_per_wall_s']:.1f} video-s/s")
            runs.append(r)
        best = min(runs, key=lambda r: r["wall_s"])
        out[name] = {"warmup": warm, "all_walls_s": [r["wall_s"] for r in runs], "best": best}
    return out


# ---------------------------------------------------------------------------------------- export
def bench_export() -> dict[str, Any]:
    """First-time effnet-lite0 export (torch -> ONNX, verified) and int8 quantisation, into a temp folder."""
    from vidsearch.encode import effnet

    t = time.perf_counter()
    import torch  # noqa: F401

    import_s = time.perf_counter() - t
    import warnings

    warnings.filterwarnings("ignore", message="Constant folding")  # the TorchScript exporter's chatter
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-export-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_s, _ = C.time_call(lambda: effnet.export_onnx(fp32))
        quant_s, _ = C.time_call(lambda: effnet.quantize_int8(fp32, int8))
        sizes = {"fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size}
    return {"torch_import_s": import_s, "export_fp32_s": export_s, "quantize_int8_s": quant_s, **sizes,
            "note": "into a temporary folder, torch already imported; the cache in ~/.cache/vidsearch is untouched"}


# ---------------------------------------------------------------------------------------- throughput
def bench_throughput(files: list[Path], n_frames: int, batch: int, repeats: int) -> dict[str, Any]:
    import torch

    from _torch_effnet import TorchEffNetEncoder

    from vidsearch.encode import effnet, registry
    from vidsearch.encode.frame import OnnxFrameEncoder, default_threads, load_encoder

    spec = registry.get("effnet-lite0")
    images = real_frames(files, spec.input_size, n_frames)
    C.log(f"[throughput] {len(images)} real frames at {spec.input_size}, batch {batch}")

    int8_path_cached = any(effnet.cache_dir().glob("effnet-lite0-*-int8.onnx"))
    load = {}
    load["ort_fp32"], ort_fp32 = C.time_call(lambda: load_encoder("effnet-lite0", "onnx"))
    load["ort_int8"], ort_int8 = C.time_call(lambda: load_encoder("effnet-lite0", "onnx-int8"))
    load["torch"], torch_enc = C.time_call(lambda: TorchEffNetEncoder(spec))
    fp32_path, int8_path = effnet.effnet_onnx_path(False), effnet.effnet_onnx_path(True)
    ort_fp32_1 = OnnxFrameEncoder(spec, fp32_path, threads=1)
    ort_int8_1 = OnnxFrameEncoder(spec, int8_path, threads=1)

    all_threads = default_threads()
    torch_default_threads = torch.get_num_threads()
    # (label, encoder, torch threads to set before the pass or None)
    variants = [
        ("ort_fp32", ort_fp32, None, all_threads),
        ("ort_int8", ort_int8, None, all_threads),
        ("torch", torch_enc, torch_default_threads, torch_default_threads),
        ("ort_fp32_1t", ort_fp32_1, None, 1),
        ("ort_int8_1t", ort_int8_1, None, 1),
        ("torch_1t", torch_enc, 1, 1),
    ]

    def one_pass(enc, torch_threads):  # type: ignore[no-untyped-def]
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        t = time.perf_counter()
        out = [enc.encode(images[i : i + batch]) for i in range(0, len(images), batch)]
        dt = time.perf_counter() - t
        return dt, np.concatenate(out)

    vectors, times = {}, {v[0]: [] for v in variants}
    for label, enc, tt, _ in variants:  # warm-up pass, keeps the vectors for the agreement check
        _, vectors[label] = one_pass(enc, tt)
    for rnd in range(repeats):
        for label, enc, tt, _ in variants:
            dt, _ = one_pass(enc, tt)
            times[label].append(dt)
        C.log(f"[throughput] round {rnd + 1}/{repeats}: " + ", ".join(f"{k} {len(images) / v[-1]:.1f}/s" for k, v in times.items()))
    torch.set_num_threads(torch_default_threads)

    res = {}
    for label, _, _, threads in variants:
        best = min(times[label])
        res[label] = {"threads": threads, "best_s": best, "all_s": times[label], "images_per_s": len(images) / best}
    ips = {k: v["images_per_s"] for k, v in res.items()}
    ratios = {
        "ort_fp32/torch": ips["ort_fp32"] / ips["torch"],
        "ort_int8/torch": ips["ort_int8"] / ips["torch"],
        "ort_int8/ort_fp32": ips["ort_int8"] / ips["ort_fp32"],
        "ort_fp32_1t/torch_1t": ips["ort_fp32_1t"] / ips["torch_1t"],
        "ort_int8_1t/torch_1t": ips["ort_int8_1t"] / ips["torch_1t"],
        "ort_int8_1t/ort_fp32_1t": ips["ort_int8_1t"] / ips["ort_fp32_1t"],
        "ort_fp32/ort_fp32_1t (thread scaling)": ips["ort_fp32"] / ips["ort_fp32_1t"],
        "torch/torch_1t (thread scaling)": ips["torch"] / ips["torch_1t"],
    }

    def cos(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        c = (a * b).sum(axis=1)  # both L2-normalised by the encoders
        return {"min": float(c.min()), "mean": float(c.mean()), "p05": float(np.percentile(c, 5))}

    agreement = {
        "int8_vs_fp32": cos(vectors["ort_int8"], vectors["ort_fp32"]),
        "fp32_vs_torch": cos(vectors["ort_fp32"], vectors["torch"]),
        "int8_vs_torch": cos(vectors["ort_int8"], vectors["torch"]),
        "int8_1t_vs_int8": cos(vectors["ort_int8_1t"], vectors["ort_int8"]),
    }
    return {
        "frames": len(images), "batch": batch, "repeats": repeats, "input_size": spec.input_size,
        "frames_source": "1 fps from every reference_footage() file at 224x224, evenly subsampled",
        "ort_all_cores_threads": all_threads, "torch_default_threads": torch_default_threads,
        "model_files": {"fp32": fp32_path.name, "int8": int8_path.name},
        "int8_was_cached_before_run": int8_path_cached,
        "load_s": load,
        "variants": res, "ratios": ratios, "cosine_agreement": agreement,
    }


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    args = parse_args()
    from vidsearch.evaluate import samples

    files = samples.reference_footage()
    if not files:
        raise SystemExit("no sample footage found; run `make install`")
    config = {**{k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet")},
              "footage": [str(p) for p in files], "n_files": len(files)}
    payload = C.header("ingest", config, missing=samples.missing_footage(found=files))
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()

    payload["ingest"] = bench_ingest(args.encoders, files, args.ingest_repeats, args.batch)
    if "effnet-lite0" in args.encoders and not args.no_export_timing:
        C.log("[export] first-time effnet-lite0 export + int8 quantisation (temp folder)")
        payload["effnet_first_export"] = bench_export()
    if not args.no_throughput:
        payload["effnet_throughput"] = bench_throughput(files, args.frames, args.batch, args.repeats)

    payload["cpu_probe_end"] = C.cpu_probe()  # load at the end: payload["provenance"], completed by C.emit

    # ---- human-readable summary
    rows = []
    for name, r in payload["ingest"].items():
        b = r["best"]
        sh = b["stage_share_of_wall"]
        rows.append([name, b["video_seconds"], b["wall_s"], b["process_cpu_s"], b["video_s_per_wall_s"], b["frames_per_s"],
                     b["stages_s"]["decode"], b["stages_s"]["encode"], b["stages_s"]["store"],
                     f"{sh['decode']:.0%}/{sh['encode']:.0%}/{sh['store']:.0%}/{sh['hash'] + sh['other']:.0%}"])
    C.log("\nIngest (best of %d, %d files)" % (args.ingest_repeats, len(files)))
    C.log(C.table(["encoder", "video s", "wall s", "cpu s", "video s/s", "frames/s", "decode s", "encode s", "store s",
                   "dec/enc/store/rest"], rows))
    if "effnet_first_export" in payload:
        e = payload["effnet_first_export"]
        C.log(f"\neffnet first-time export {e['export_fp32_s']:.1f} s, int8 quantisation {e['quantize_int8_s']:.1f} s")
    if "effnet_throughput" in payload:
        t = payload["effnet_throughput"]
        C.log(f"\neffnet-lite0 frame encoding, {t['frames']} frames, batch {t['batch']}, best of {t['repeats']}")
        C.log(C.table(["variant", "threads", "images/s"],
                      [[k, v["threads"], v["images_per_s"]] for k, v in t["variants"].items()]))
        C.log(C.table(["ratio", "value"], [[k, v] for k, v in t["ratios"].items()]))
        a = t["cosine_agreement"]["int8_vs_fp32"]
        C.log(f"int8 vs fp32 cosine: min {a['min']:.4f}, mean {a['mean']:.4f}")
    C.log(f"cpu probe (numpy matmul, median): {payload['cpu_probe_start']['gflops_median']:.0f} GFLOP/s at start, "
          f"{payload['cpu_probe_end']['gflops_median']:.0f} at end; cpu pressure at end "
          f"{C.load_average().get('cpu_pressure_some')}")
    C.emit("ingest", payload, args.json)


if __name__ == "__main__":
    main()
