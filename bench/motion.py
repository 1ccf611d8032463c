"""What the pixel-motion stream costs a collection (issue #16: temporal inference <= 10 % of frame encoding):
the packaged real footage (and, unless ``--no-hd``, 20 s of the 720p HD footage) decoded and encoded by
``MediaEncoder`` with ``EncodeConfig.motion`` "" (none, the default) and "flow", alternating file by file,
best of ``--repeats``, one process, the default encoder (sscd) at 1 sampled fps.

    python bench/motion.py --wait-quiet 120 --json

Writes bench/results/motion.json: per variant and footage set the summed wall time, decode wait, frame encoding
and flow seconds and the frames sampled; the ratios: flow seconds / frame-encoding seconds (the target), and the
whole pipeline's wall time with the stream / without it (the stream also decodes the frame before each sample
and converts two 64 px grey frames a sample).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as C

VARIANTS = ("", "flow")


def encode_set(files: list[Path], repeats: int) -> dict[str, Any]:
    from vidsearch.config import CollectionConfig, EncodeConfig
    from vidsearch.encode.pipeline import MediaEncoder

    encoders = {v: MediaEncoder(CollectionConfig(encode=EncodeConfig(motion=v))) for v in VARIANTS}
    encoders["flow"].encode_file(files[0])  # warm-up: models, OpenCV
    encoders[""].encode_file(files[0])
    best: dict[str, dict[str, dict[str, float]]] = {v: {} for v in VARIANTS}
    for r in range(repeats):
        for i, path in enumerate(files):
            order = VARIANTS if (i + r) % 2 == 0 else VARIANTS[::-1]
            for v in order:
                t = time.perf_counter()
                media = encoders[v].encode_file(path)
                wall = time.perf_counter() - t
                row = {"wall_s": wall, "decode_s": media.timings["decode"],
                       "frame_encode_s": media.timings["encode"] - media.timings.get("streams", 0.0),
                       "flow_s": media.timings.get("streams", 0.0), "frames": len(media.times),
                       "duration_s": media.info.duration}
                if str(path) not in best[v] or wall < best[v][str(path)]["wall_s"]:
                    best[v][str(path)] = row
    out: dict[str, Any] = {}
    for v in VARIANTS:
        rows = best[v].values()
        out[v or "none"] = {k: round(sum(r[k] for r in rows), 4) for k in
                            ("wall_s", "decode_s", "frame_encode_s", "flow_s", "frames", "duration_s")}
    flow, none = out["flow"], out["none"]
    out["flow_over_frame_encoding"] = round(flow["flow_s"] / flow["frame_encode_s"], 4)
    out["flow_ms_per_frame"] = round(1000 * flow["flow_s"] / flow["frames"], 3)
    out["wall_ratio_flow_over_none"] = round(flow["wall_s"] / none["wall_s"], 4)
    out["decode_ratio_flow_over_none"] = round(flow["decode_s"] / none["decode_s"], 4)
    out["files"] = len(files)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-hd", action="store_true", help="leave out the 720p footage")
    ap.add_argument("--hd-seconds", type=float, default=20.0)
    ap.add_argument("--wait-quiet", type=float, default=0.0)
    ap.add_argument("--name", default="motion")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from vidsearch.evaluate import samples

    files = samples.reference_footage()
    payload = C.header(args.name, vars(args), missing=samples.missing_footage(found=files))
    sets = {"sample footage": files}
    if not args.no_hd:
        from vidsearch.evaluate.hd import hd_footage

        sets["720p"] = [hd_footage(720, seconds=args.hd_seconds)]
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    payload["results"] = {}
    for name, group in sets.items():
        C.log(f"{name}: {len(group)} files, {args.repeats} repeats, motion none vs flow")
        payload["results"][name] = encode_set(group, args.repeats)
        r = payload["results"][name]
        C.log(f"  flow {r['flow']['flow_s']:.2f} s vs frame encoding {r['flow']['frame_encode_s']:.2f} s "
              f"({100 * r['flow_over_frame_encoding']:.1f} %), wall x{r['wall_ratio_flow_over_none']:.3f}")
    C.emit(args.name, payload, args.json)


if __name__ == "__main__":
    main()
