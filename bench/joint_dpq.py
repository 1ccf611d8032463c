"""Differentiable PQ trained jointly with a temporal model against the two trained apart (issue #16, item 4).

    python bench/joint_dpq.py [--encoder sscd-distilled] [--train-clips 20] [--eval-clips 20] [--base-epochs 20]
                              [--epochs 10] [--M 16] [--json]

Data: Moving Fashion-MNIST (``vidsearch.evaluate.fashion``): 16-frame clips of a garment moving in one of 8
directions, 4 frames of each encoded by ``--encoder``; training clips from Fashion-MNIST's train split (seed 1,
``--train-clips`` per (item, motion): 80 classes), evaluation clips from its test split (seed 0, no image in
both). One LSTM is trained alone by InfoNCE for ``--base-epochs`` (``train.loop.train_temporal``); both arms
continue from it for ``--epochs`` over the same views and batches (``train.joint_pq.continue_training``):

- apart: the model alone, then ``LearnedPQ`` (default settings) fitted on its vectors of the training clips;
- joint: the model, the projection and the codebooks together, InfoNCE through the quantized database side.

Scored at ``--M`` bytes a segment (M sub-quantizers of 8 bits): every evaluation clip's clean vector encoded by
FAISS (``IndexPQ`` behind the projection); ``--views`` augmented views of each clip (temporal crop, speed,
dropped/repeated frames, a spliced frame, feature noise; seeded) as queries; recall@1 and @10 of the view's own
clip among all evaluation clips (``plain``), and among them and every clip played backwards
(``reversed_distractors``: look-alikes only the frame order tells apart), by ADC (before any re-rank) and with the
float vectors. Also the shared model with ``LearnedPQ`` and mean pooling with ``LearnedPQ``, for reference.

Quality figures are deterministic for the seed and data; the training seconds are as measured (load in the
provenance). Writes bench/results/joint-dpq.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import _common as C


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="sscd-distilled")
    p.add_argument("--train-clips", type=int, default=20, help="training clips per (item, motion) class (80 classes)")
    p.add_argument("--eval-clips", type=int, default=20, help="evaluation clips per (item, motion) class")
    p.add_argument("--base-epochs", type=int, default=20, help="epochs of the shared model, alone (InfoNCE)")
    p.add_argument("--epochs", type=int, default=10, help="further epochs of each arm")
    p.add_argument("--M", type=int, default=16, help="bytes a segment (sub-quantizers of 8 bits)")
    p.add_argument("--views", type=int, default=2, help="augmented query views per evaluation clip")
    p.add_argument("--lambda-rec", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--name", default="joint-dpq")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def main() -> None:
    from vidsearch.encode.temporal import l2_normalize
    from vidsearch.evaluate import fashion
    from vidsearch.train.joint_pq import ArmResult, JointConfig, continue_training, copy_recall, learned_pq_arm
    from vidsearch.train.loop import TrainConfig, embed, train_temporal

    args = parse_args()
    payload = C.header(args.name, {k: v for k, v in vars(args).items() if k not in ("json", "wait_quiet")})
    payload["quiet_wait"] = C.wait_for_quiet(args.wait_quiet)
    t = time.perf_counter()
    train = fashion.moving_training_set(fashion.encode_moving_clips(
        args.encoder, n_per_class=args.train_clips, seed=args.seed + 1, encode_frames=4, split="train"))
    test = fashion.moving_training_set(fashion.encode_moving_clips(
        args.encoder, n_per_class=args.eval_clips, seed=args.seed, encode_frames=4, split="test"))
    payload["data"] = {"train": train.source, "train_clips": len(train), "eval": test.source, "eval_clips": len(test),
                       "dim": train.dim, "seconds": round(time.perf_counter() - t, 1)}
    C.log(f"data: {len(train)} training clips, {len(test)} evaluation clips, dim {train.dim}")

    base = train_temporal(train, TrainConfig(model="lstm", loss="infonce", epochs=args.base_epochs, seed=args.seed),
                          progress=C.log)
    config = JointConfig(M=args.M, epochs=args.epochs, lambda_rec=args.lambda_rec, seed=args.seed)
    payload["config"].update(joint=config.to_dict(), base=base.config.to_dict(), base_seconds=round(base.seconds, 1),
                             base_history=[round(v, 4) for v in base.history])
    arms: dict[str, ArmResult] = {}
    for joint in (False, True):
        arm = continue_training(train, base.model, config, joint, progress=C.log)
        arms[arm.name] = arm

    # references: the shared model before either arm, and mean pooling, each with LearnedPQ fitted apart
    arms["shared model + LearnedPQ"] = learned_pq_arm("shared model + LearnedPQ", base.model,
                                                      embed(base.model, train.resampled(base.model.frames)), config)

    class MeanModel:  # mean pooling as a "model" for copy_recall (embed calls it on (N, frames, D) windows)
        frames = base.model.frames

        def eval(self) -> None:
            pass

        def __call__(self, x: Any) -> Any:
            import torch

            return torch.from_numpy(l2_normalize(x.numpy().mean(axis=1)))

    mean = MeanModel()
    arms["mean pooling + LearnedPQ"] = learned_pq_arm("mean pooling + LearnedPQ", mean,
                                                      l2_normalize(train.resampled(mean.frames).mean(axis=1)), config)
    rows = {}
    for name, arm in arms.items():
        rows[name] = {"plain": copy_recall(arm, test, ks=(1, 10), views=args.views, seed=args.seed),
                      "reversed_distractors": copy_recall(arm, test, ks=(1, 10), views=args.views, seed=args.seed,
                                                          reversed_distractors=True),
                      "train_seconds": round(arm.seconds, 1), "pq_seconds": round(arm.pq_seconds, 1),
                      "history": [round(v, 4) for v in arm.history]}
    payload["arms"] = rows
    payload["bytes_per_segment"] = args.M
    C.log(C.table(["arm", "R@10 ADC", "R@10 float", "R@1 ADC", "+reversed: R@1 ADC", "R@1 float", "train s", "PQ s"], [
        [n, r["plain"]["recall_pq@10"], r["plain"]["recall_float@10"], r["plain"]["recall_pq@1"],
         r["reversed_distractors"]["recall_pq@1"], r["reversed_distractors"]["recall_float@1"], r["train_seconds"],
         r["pq_seconds"]] for n, r in rows.items()]))
    C.emit(args.name, payload, args.json)


if __name__ == "__main__":
    main()
