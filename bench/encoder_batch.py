"""Images/s of a frame encoder against batch size, through ONNX Runtime: the curve the server's batch
scheduler works from.

    python bench/encoder_batch.py [--encoder sscd] [--sizes 1,2,4,8,16,32] [--repeats 7] [--json]

Frames: real frames of the sample footage (``samples.reference_footage()``), decoded straight to the
encoder's input size, as the server hands them over. For every batch size, one untimed call (ONNX
Runtime's first call at a new shape allocates), then ``--repeats`` timed rounds; a round times every
size once, in a shuffled order (seeded), so a change in machine load spreads over all sizes instead of
landing on one. Reported per size: median and best call time, images/s at the median, and the ratio to
batch 1 in the same run (``speedup``); ``best_ratio`` is the largest of them, the bound issue #14 sets
for the server's throughput with batching against ``--max-batch 1``.

The encoder is the one ``vidsearch.encode.frame.load_encoder`` returns (the same session options the
engine and the server use: all cores, no spinning). Writes bench/results/encoder-batch.json (or
encoder-batch-ENCODER.json for an encoder other than the collection default).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

import numpy as np

import _common as C

from vidsearch.config import EncodeConfig
from vidsearch.encode.registry import encoder_names


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default=EncodeConfig().encoder, choices=encoder_names(),
                   help="frame encoder (default: the collection default, %(default)s)")
    p.add_argument("--sizes", default="1,2,4,8,16,32", help="batch sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (each times every size once)")
    p.add_argument("--seed", type=int, default=0, help="order of the sizes within a round")
    p.add_argument("--wait-quiet", type=float, default=120, metavar="SECONDS",
                   help="first wait up to this long for other CPU work to calm down (0: do not wait)")
    p.add_argument("--json", action="store_true", help="print the result object to stdout")
    args = p.parse_args()
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.sizes or args.sizes[0] < 1:
        p.error("--sizes must be positive")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def sample_frames(size: tuple[int, int], count: int) -> tuple[np.ndarray, list[str]]:
    """``count`` real frames (uint8, (count, h, w, 3)) at the encoder's input size, from the sample footage."""
    from vidsearch.decode import iter_frames
    from vidsearch.evaluate import samples

    frames: list[np.ndarray] = []
    used: list[str] = []
    for path in samples.reference_footage():
        got = [f.image for f, _ in zip(iter_frames(path, size, fps=1), range(8))]
        if got:
            frames += got
            used.append(path.name)
        if len(frames) >= count:
            break
    if not frames:
        raise SystemExit("no sample footage found; run `make samples`")
    while len(frames) < count:  # repeat the footage if there is too little of it
        frames += frames[: count - len(frames)]
    return np.stack(frames[:count]), used


def measure(encoder: Any, sizes: list[int], repeats: int, seed: int = 0) -> dict[str, Any]:
    """The curve: ``encoder``'s images/s at each of ``sizes`` (ascending) over ``repeats`` shuffled rounds, on
    real frames; ``best_ratio`` is the largest images/s over that of ``sizes[0]``. ``bench/serve.py`` runs
    this too, at the start of every sweep, so the image target is set on the machine and in the run it judges."""
    from vidsearch.encode.frame import default_threads

    frames, used = sample_frames(encoder.input_size, max(sizes))
    config = {"encoder": encoder.name, "input_size": list(encoder.input_size), "dim": encoder.dim,
              "intra_op_threads": default_threads(), "frames_from": used, "sizes": list(sizes), "repeats": repeats,
              "seed": seed}
    C.log(f"[encoder-batch] {encoder.name} {encoder.input_size}, sizes {sizes}, {repeats} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    for size in sizes:  # first call at each shape: untimed
        encoder.encode(frames[:size])
    times: dict[int, list[float]] = {s: [] for s in sizes}
    order_rng = random.Random(seed)
    loads: list[float] = []
    for rnd in range(repeats):
        order = list(sizes)
        order_rng.shuffle(order)
        for size in order:
            batch = frames[:size]
            t0 = time.perf_counter()
            encoder.encode(batch)
            times[size].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
        C.log(f"[encoder-batch] round {rnd + 1}/{repeats}, load {loads[-1]:.2f}")

    base = statistics.median(times[sizes[0]]) / sizes[0]  # seconds per image at the smallest size
    rows: dict[str, Any] = {}
    for size in sizes:
        med = statistics.median(times[size])
        rows[str(size)] = {
            "median_ms": med * 1000, "best_ms": min(times[size]) * 1000, "max_ms": max(times[size]) * 1000,
            "ms_per_image": med * 1000 / size, "images_per_s": size / med, "speedup": base * size / med,
            "samples_ms": [t * 1000 for t in times[size]],
        }
    best = max(sizes, key=lambda s: rows[str(s)]["speedup"])
    return {"config": config, "results": rows, "best_size": best, "best_ratio": rows[str(best)]["speedup"],
            "loadavg_1min_per_round": loads}


def main() -> None:
    args = parse_args()
    from vidsearch.encode.frame import load_encoder

    name = "encoder-batch" if args.encoder == EncodeConfig().encoder else f"encoder-batch-{args.encoder}"
    payload = C.header(name, {k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet")})
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["cpu_probe_start"] = C.cpu_probe()

    encoder = load_encoder(args.encoder)
    curve = measure(encoder, args.sizes, args.repeats, args.seed)
    payload["config"].update(curve["config"])
    payload["results"] = curve["results"]
    payload["best_size"] = curve["best_size"]
    payload["best_ratio"] = curve["best_ratio"]
    payload["loadavg_1min_per_round"] = curve["loadavg_1min_per_round"]
    payload["cpu_probe_end"] = C.cpu_probe()
    rows = curve["results"]
    C.log(C.table(["batch", "median ms", "ms/image", "images/s", "x batch 1"],
                  [[s, rows[str(s)]["median_ms"], rows[str(s)]["ms_per_image"], rows[str(s)]["images_per_s"],
                    rows[str(s)]["speedup"]] for s in args.sizes]))
    C.log(f"[encoder-batch] best: batch {curve['best_size']}, {curve['best_ratio']:.2f}x the images/s of batch "
          f"{args.sizes[0]}")
    C.emit(name, payload, args.json)


if __name__ == "__main__":
    main()
