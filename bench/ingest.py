"""Ingest speed on the real sample footage, per frame encoder, plus effnet-lite0 frame-encoding
throughput: ONNX Runtime fp32 / int8 vs PyTorch eager, at all cores and at 1 thread; and ingest of HD
(720p, 1080p H.264) footage with the default configuration, with decode-only and encode-only bounds.

    python bench/ingest.py [--encoders sscd,sscd-distilled,effnet-lite0] [--json]
    python bench/ingest.py --hd-only [--hd-sizes 720p,1080p] [--json]     # the HD part alone

Ingest: for each encoder, a fresh collection in a temporary folder, ``coll.add(reference_footage())``;
models are loaded and warmed (one batch) first, so model export/load is not counted. Best of
``--ingest-repeats`` runs (fresh collection each) by wall time. Per-file ``FileReport.timings``
(decode, encode, hash, store) are summed; ``other`` is wall minus their sum (index save, lock, listing).

Throughput: effnet-lite0 on ``--frames`` real frames decoded at 224x224 (1 fps from the reference
footage), batches of ``--batch``; best of ``--repeats`` timed passes after one warm-up pass; all variants
timed round-robin in each round so machine drift hits them alike; ratios are from the same run.

HD (``--no-hd`` leaves it out): ``vidsearch.evaluate.hd.hd_footage`` makes (once, cached) 720p and 1080p
H.264 from the sample footage (30 fps, key frame every 2 s, libx264 veryfast crf 20; ~83 s each, or
``--hd-seconds``). Per size, best of ``--hd-repeats`` by wall time, all in video-seconds per wall-second:
``video_s_per_wall_s`` = ``coll.add([file])`` into a fresh default (sscd) collection; ``decode_only`` =
every sampled frame at the encoder's input size, decoded as the pipeline decodes it (nothing else
running); ``encode_only`` = those frames through the encoder in batches of ``batch_size`` (no decoding).
The JSON's ``"hd"`` holds exactly these three per size; ``"hd_details"`` the rest: the pipeline with and
without the decode thread (``MediaEncoder(overlap=...)``), ONNX Runtime intra-op threads x decoder
threads, and each decoding technique with and without (``--hd-techniques``, decode only, round-robin):
every frame decoded (the decoder before this change), the exact default (only what the sampler takes),
no loop filter (non-reference / all frames), non-reference frames never decoded, key frames only,
decoder threads 1 / 2 / FFmpeg's choice, and sparse sampling (0.25 fps) with and without dropping groups
of pictures; for the approximate ones how far the pixels (mean absolute difference, 0-255), the times
and the SSCD vectors (cosine to the exact frames' vectors: 1st percentile, min, mean) move.

Across files (``--no-across-files`` leaves it out): ``MediaEncoder.encode_file`` over the footage one file at
a time (what ``Collection.add`` does) against two files in flight (a 2-thread pool, results in order), the
vectors checked equal.

Writes bench/results/ingest.json (``--hd-only``: bench/results/ingest-hd.json).
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
HD_SIZES = {"720p": 720, "1080p": 1080}
# decode techniques measured on the HD files: name -> (iter_frames keyword arguments, exact by construction)
HD_TECHNIQUES: dict[str, tuple[dict[str, Any], bool]] = {
    "all_frames": ({"skip_unsampled": False}, True),  # the decoder before issue #18
    "default": ({}, True),  # only what the sampler takes (exact)
    "loop_filter_nonref": ({"skip_loop_filter": "nonref"}, False),
    "loop_filter_all": ({"skip_loop_filter": "all"}, False),
    "skip_nonref": ({"skip_nonref": True}, False),
    "skip_nonref+loop_filter_all": ({"skip_nonref": True, "skip_loop_filter": "all"}, False),
    "keyframes_only": ({"keyframes_only": True}, False),
    "default_threads1": ({"threads": 1}, True),
    "default_threads2": ({"threads": 2}, True),
    "all_frames_threads1": ({"skip_unsampled": False, "threads": 1}, True),
    "sparse_0.25fps_all_frames": ({"fps": 0.25, "skip_unsampled": False}, True),
    "sparse_0.25fps_default": ({"fps": 0.25}, True),
}


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
    p.add_argument("--no-across-files", action="store_true",
                   help="skip timing encode_file over the footage one file at a time vs two in flight")
    p.add_argument("--hd-only", action="store_true", help="only the HD part (writes ingest-hd.json)")
    p.add_argument("--no-hd", action="store_true", help="leave the HD part out")
    p.add_argument("--hd-sizes", default="720p,1080p", help="comma-separated: 720p, 1080p")
    p.add_argument("--hd-seconds", type=float, default=None, help="length of the HD files (default: every source frame, ~83 s)")
    p.add_argument("--hd-repeats", type=int, default=2, help="timed runs per HD measurement (best of)")
    p.add_argument("--hd-techniques", default="all",
                   help="'all', 'none' or comma-separated decode technique names (see HD_TECHNIQUES)")
    p.add_argument("--hd-threads-grid", action=argparse.BooleanOptionalAction, default=True,
                   help="time the pipeline at ONNX Runtime threads x decoder threads")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    args.encoders = C.encoder_list(p, args.encoders, ENCODERS)
    args.hd_sizes = [x.strip() for x in args.hd_sizes.split(",") if x.strip()]
    bad = [x for x in args.hd_sizes if x not in HD_SIZES]
    if bad:
        p.error(f"--hd-sizes: unknown {bad}; expected some of {', '.join(HD_SIZES)}")
    names = list(HD_TECHNIQUES) if args.hd_techniques == "all" else [] if args.hd_techniques == "none" else [
        x.strip() for x in args.hd_techniques.split(",") if x.strip()]
    bad = [x for x in names if x not in HD_TECHNIQUES]
    if bad:
        p.error(f"--hd-techniques: unknown {bad}; expected 'all', 'none' or some of {', '.join(HD_TECHNIQUES)}")
    args.hd_techniques = names
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


def bench_across_files(files: list[Path], repeats: int) -> dict[str, Any]:
    """Default-configuration ``MediaEncoder.encode_file`` over ``files``: one file at a time (what ``Collection.add``
    does) against two files in flight (a pool of 2 threads, results in order: one file decodes while the other
    encodes; the encoder's lock keeps one ONNX Runtime run at a time). Best of ``repeats``, round-robin."""
    from concurrent.futures import ThreadPoolExecutor

    from vidsearch.config import CollectionConfig
    from vidsearch.encode.pipeline import MediaEncoder

    media = MediaEncoder(CollectionConfig())
    media.encode_file(files[0])  # warm
    walls: dict[str, list[float]] = {"one_at_a_time": [], "two_in_flight": []}
    duration = 0.0
    for _ in range(repeats):
        wall, out = C.time_call(lambda: [media.encode_file(p) for p in files])
        walls["one_at_a_time"].append(wall)
        duration = float(sum(m.info.duration for m in out))
        with ThreadPoolExecutor(max_workers=2) as pool:
            wall, out2 = C.time_call(lambda: list(pool.map(media.encode_file, files)))
        walls["two_in_flight"].append(wall)
        assert all(np.array_equal(a.frame_vectors, b.frame_vectors) for a, b in zip(out, out2))
    speed = {k: duration / min(v) for k, v in walls.items()}
    C.log(f"[across files] {len(files)} files, {duration:.1f} s of video: " + ", ".join(f"{k} {v:.1f} video-s/s" for k, v in speed.items()))
    return {"files": len(files), "video_seconds": duration, "walls_s": walls, "video_s_per_wall_s": speed,
            "ratio_two_in_flight/one_at_a_time": speed["two_in_flight"] / speed["one_at_a_time"]}


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


# ---------------------------------------------------------------------------------------- HD
def hd_files(sizes: list[str], seconds: float | None) -> tuple[dict[str, Path], dict[str, float]]:
    """The HD files (made once, cached) and the seconds each took to get (make or find)."""
    from vidsearch.evaluate.hd import hd_footage

    files, took = {}, {}
    for size in sizes:
        C.log(f"[hd] {size}: making or finding the HD footage")
        took[size], files[size] = C.time_call(lambda: hd_footage(HD_SIZES[size], seconds))
    return files, took


def _decode_all(path: Path, size: tuple[int, int], fps: float, kwargs: dict[str, Any]) -> tuple[list[Any], Any]:
    from vidsearch.decode import DecodeStats, iter_frames

    kw = dict(kwargs)
    stats = DecodeStats()
    frames = list(iter_frames(path, size, fps=kw.pop("fps", fps), stats=stats, **kw))
    return frames, stats


def _cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = (a * b).sum(axis=1)  # both L2-normalised by the encoder
    return {"p1": float(np.percentile(c, 1)), "min": float(c.min()), "mean": float(c.mean())}


def hd_techniques(path: Path, duration: float, names: list[str], repeats: int, encoder: Any) -> dict[str, Any]:
    """Decode-only speed of each technique (round-robin, best of ``repeats``) and, against the exact frames,
    how far the pixels, times and SSCD vectors move."""
    from vidsearch.config import DecodeConfig

    size = encoder.input_size
    fps = DecodeConfig().fps
    best: dict[str, float] = {}
    out: dict[str, Any] = {}
    frames: dict[str, list[Any]] = {}
    for rnd in range(repeats):
        for name in names:
            kwargs, _ = HD_TECHNIQUES[name]
            wall, (got, stats) = C.time_call(lambda: _decode_all(path, size, fps, kwargs))
            best[name] = min(best.get(name, wall), wall)
            if rnd == 0:
                frames[name] = got
                out[name] = {"kwargs": kwargs, "exact_by_construction": HD_TECHNIQUES[name][1],
                             "frames_sampled": len(got), "stats": stats.__dict__}
    exact_frames, _ = _decode_all(path, size, fps, {"skip_unsampled": False})
    exact_vectors = encoder.encode(np.stack([f.image for f in exact_frames]))
    sparse_exact = None
    for name in names:
        r = out[name]
        r["best_s"] = best[name]
        r["video_s_per_wall_s"] = duration / best[name]
        got = frames[name]
        ref = exact_frames
        if HD_TECHNIQUES[name][0].get("fps", fps) != fps:  # compare sparse sampling with sparse exact frames
            if sparse_exact is None:
                sparse_exact, _ = _decode_all(path, size, fps, {"fps": HD_TECHNIQUES[name][0]["fps"], "skip_unsampled": False})
            ref = sparse_exact
        n = min(len(got), len(ref))
        same = len(got) == len(ref) and all(g.time == e.time and np.array_equal(g.image, e.image) for g, e in zip(got, ref))
        r["identical_to_every_frame_decode"] = bool(same)
        r["frame_count_difference"] = len(got) - len(ref)
        if not same and n:
            diff = [float(np.abs(g.image.astype(np.int16) - e.image.astype(np.int16)).mean()) for g, e in zip(got[:n], ref[:n])]
            r["pixel_mean_abs_diff"] = {"mean": float(np.mean(diff)), "p99": float(np.percentile(diff, 99)), "max": max(diff)}
            shift = [abs(g.time - e.time) for g, e in zip(got[:n], ref[:n])]
            r["time_shift_s"] = {"mean": float(np.mean(shift)), "max": max(shift)}
            vectors = encoder.encode(np.stack([g.image for g in got[:n]]))
            ref_vectors = exact_vectors[:n] if ref is exact_frames else encoder.encode(np.stack([e.image for e in ref[:n]]))
            r["sscd_cosine_to_exact"] = _cosines(vectors, ref_vectors)
        elif same:
            r["sscd_cosine_to_exact"] = {"p1": 1.0, "min": 1.0, "mean": 1.0}
        C.log(f"[hd]   {name:28s} {r['video_s_per_wall_s']:7.1f} video-s/s  frames decoded "
              f"{r['stats']['frames_decoded']:5d}  identical {same}  cos p1 {r['sscd_cosine_to_exact']['p1']:.4f}")
    if "all_frames" in best and "default" in best:
        out["ratio_default/all_frames"] = best["all_frames"] / best["default"]
    return out


def _encode_only(encoder: Any, images: np.ndarray, batch: int) -> None:
    for i in range(0, len(images), batch):
        encoder.encode(images[i : i + batch])


# MediaEncoder.encode_file variants timed on the HD files: label -> MediaEncoder keyword arguments
ENCODE_FILE_VARIANTS: dict[str, dict[str, Any]] = {
    "encode_file_overlap": {},  # the default
    "encode_file_sequential": {"overlap": False},
    "encode_file_overlap_chunk8": {"encode_chunk": 8},
    "encode_file_overlap_chunk4": {"encode_chunk": 4},
}


def batch_invariance(encoder: Any, images: np.ndarray) -> dict[str, float]:
    """How far the vectors of one call over ``images`` are from those of calls over 8 and 4 of them."""
    whole = encoder.encode(images)
    out = {}
    for n in (8, 4):
        parts = np.concatenate([encoder.encode(images[i : i + n]) for i in range(0, len(images), n)])
        out[f"max_abs_diff_calls_of_{n}"] = float(np.abs(parts - whole).max())
        out[f"min_cosine_calls_of_{n}"] = float((parts * whole).sum(axis=1).min())
    return out


def bench_hd(sizes: list[str], seconds: float | None, repeats: int, techniques: list[str],
             threads_grid: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``hd`` summary: per size the three speeds, ``hd_details``: everything else measured)."""
    from vidsearch import Collection
    from vidsearch.config import CollectionConfig
    from vidsearch.decode import probe
    from vidsearch.encode import load_encoder, registry
    from vidsearch.encode.frame import OnnxFrameEncoder, default_threads
    from vidsearch.encode.pipeline import DECODE_THREADS, MediaEncoder

    config = CollectionConfig()  # the default configuration
    files, made_s = hd_files(sizes, seconds)
    encoder = load_encoder(config.encode.encoder)
    spec = registry.get(config.encode.encoder)
    batch = config.encode.batch_size
    media = MediaEncoder(config, encoder=encoder)
    summary: dict[str, Any] = {}
    details: dict[str, Any] = {"config": config.to_dict(), "made_or_found_s": made_s, "decode_threads": DECODE_THREADS,
                               "ort_threads": default_threads(), "files": {}}
    for size, path in files.items():
        info = probe(path)
        duration = info.duration
        C.log(f"[hd] {size}: {path.name}, {duration:.1f} s, {info.width}x{info.height}")
        frames = list(media.iter_frames(path, encoder.input_size))
        images = np.stack([f.image for f in frames])
        _encode_only(encoder, images[:batch], batch)  # warm-up
        details.setdefault("batch_invariance", batch_invariance(encoder, images[:batch]))
        walls: dict[str, list[float]] = {"pipeline_add": [], "decode_only": [], "encode_only": [],
                                         **{k: [] for k in ENCODE_FILE_VARIANTS}}
        cpu: dict[str, float] = {}
        reports = []
        for rnd in range(repeats):  # round-robin: drift hits every measurement alike
            with tempfile.TemporaryDirectory(prefix="vidsearch-bench-hd-") as tmp:
                coll = Collection.create(Path(tmp) / "coll", config)
                c0 = time.process_time()
                wall, rep = C.time_call(lambda: coll.add([path]))
                cpu["pipeline_add"] = time.process_time() - c0
                coll.close()
            if rep[0].status != "indexed":
                raise SystemExit(f"HD ingest failed: {rep[0].to_dict()}")
            walls["pipeline_add"].append(wall)
            reports.append(rep[0].to_dict())
            c0 = time.process_time()
            walls["decode_only"].append(C.time_call(lambda: list(media.iter_frames(path, encoder.input_size)))[0])
            cpu["decode_only"] = time.process_time() - c0
            walls["encode_only"].append(C.time_call(lambda: _encode_only(encoder, images, batch))[0])
            for label, kwargs in ENCODE_FILE_VARIANTS.items():
                m = MediaEncoder(config, encoder=encoder, **kwargs)
                wall, enc = C.time_call(lambda: m.encode_file(path))
                walls[label].append(wall)
                details.setdefault("files", {}).setdefault(size, {})[f"{label}_timings"] = enc.timings
            C.log(f"[hd] {size} round {rnd + 1}/{repeats}: " + ", ".join(f"{k} {duration / v[-1]:.1f}" for k, v in walls.items()))
        speed = {k: duration / min(v) for k, v in walls.items()}
        summary[size] = {"video_s_per_wall_s": speed["pipeline_add"], "decode_only": speed["decode_only"],
                         "encode_only": speed["encode_only"]}
        d: dict[str, Any] = details["files"].setdefault(size, {})
        d.update({"path": str(path), "duration_s": duration, "width": info.width, "height": info.height,
                  "frames_sampled": len(frames), "walls_s": walls, "video_s_per_wall_s": speed,
                  "process_cpu_s_last_round": cpu, "add_reports": reports,
                  "overlap_speedup": min(walls["encode_file_sequential"]) / min(walls["encode_file_overlap"]),
                  "bound": "encode" if speed["encode_only"] < speed["decode_only"] else "decode"})
        if threads_grid:
            grid: dict[str, float] = {}
            encoders = {t: (encoder if t == default_threads() else OnnxFrameEncoder(spec, encoder.model_path, threads=t))
                        for t in (1, 2)}
            for enc in encoders.values():  # warm each session (ONNX Runtime's first runs are slow)
                for _ in range(3):
                    _encode_only(enc, images[:batch], batch)
            for _ in range(repeats):
                for ort_t, enc in encoders.items():
                    for dec_t in (1, 2, 0):
                        m = MediaEncoder(config, encoder=enc, decode_threads=dec_t)
                        wall, _ = C.time_call(lambda: m.encode_file(path))
                        key = f"ort{ort_t}_dec{dec_t or 'auto'}"
                        grid[key] = max(grid.get(key, 0.0), duration / wall)
            d["threads_grid_video_s_per_wall_s"] = grid
            C.log(f"[hd] {size} ORT threads x decoder threads (video-s/s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in grid.items()))
        if techniques:
            C.log(f"[hd] {size}: decode techniques")
            d["techniques"] = hd_techniques(path, duration, techniques, repeats, encoder)
    return summary, details


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

    if not args.hd_only:
        payload["ingest"] = bench_ingest(args.encoders, files, args.ingest_repeats, args.batch)
        if "effnet-lite0" in args.encoders and not args.no_export_timing:
            C.log("[export] first-time effnet-lite0 export + int8 quantisation (temp folder)")
            payload["effnet_first_export"] = bench_export()
        if not args.no_throughput:
            payload["effnet_throughput"] = bench_throughput(files, args.frames, args.batch, args.repeats)
        if not args.no_across_files:
            payload["across_files"] = bench_across_files(files, args.ingest_repeats)
    if not args.no_hd:
        payload["hd"], payload["hd_details"] = bench_hd(args.hd_sizes, args.hd_seconds, args.hd_repeats,
                                                        args.hd_techniques, args.hd_threads_grid)

    payload["cpu_probe_end"] = C.cpu_probe()  # load at the end: payload["provenance"], completed by C.emit

    # ---- human-readable summary
    rows = []
    for name, r in payload.get("ingest", {}).items():
        b = r["best"]
        sh = b["stage_share_of_wall"]
        rows.append([name, b["video_seconds"], b["wall_s"], b["process_cpu_s"], b["video_s_per_wall_s"], b["frames_per_s"],
                     b["stages_s"]["decode"], b["stages_s"]["encode"], b["stages_s"]["store"],
                     f"{sh['decode']:.0%}/{sh['encode']:.0%}/{sh['store']:.0%}/{sh['hash'] + sh['other']:.0%}"])
    if rows:
        C.log("\nIngest (best of %d, %d files)" % (args.ingest_repeats, len(files)))
        C.log(C.table(["encoder", "video s", "wall s", "cpu s", "video s/s", "frames/s", "decode s", "encode s",
                       "store s", "dec/enc/store/rest"], rows))
    if "hd" in payload:
        C.log("\nHD ingest, default configuration (video-seconds per wall-second, best of %d)" % args.hd_repeats)
        C.log(C.table(["size", "pipeline (add)", "decode only", "encode only", "overlap / sequential", "bound"],
                      [[k, v["video_s_per_wall_s"], v["decode_only"], v["encode_only"],
                        payload["hd_details"]["files"][k]["overlap_speedup"], payload["hd_details"]["files"][k]["bound"]]
                       for k, v in payload["hd"].items()]))
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
    C.emit("ingest-hd" if args.hd_only else "ingest", payload, args.json)


if __name__ == "__main__":
    main()
