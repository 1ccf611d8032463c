"""Fixtures of the training tests: a small labelled clip set with an order-only distinction, and torch kept
to one thread (the machine is shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def direction_clips(n: int = 96, dim: int = 32, frames: int = 4, seed: int = 0):
    """``n`` clips, each from its own random point along one common direction (label 0) or back (label 1):
    a clip and its reverse hold the same frames, so the mean of a clip cannot tell the labels apart."""
    from vidsearch.train.datasets import clip_set

    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=dim)  # the same for every seed: held-out clips share it
    t = np.linspace(-1.0, 1.0, frames)[:, None]
    clips, labels = [], []
    for i in range(n):
        start = rng.normal(size=dim)
        path = start + t * direction
        clips.append(path if i % 2 == 0 else path[::-1])
        labels.append(i % 2)
    return clip_set(clips, labels, source="synthetic directions")


@pytest.fixture(scope="session")
def directions():
    return direction_clips()


@pytest.fixture(scope="session")
def make_directions():
    """:func:`direction_clips` itself, for tests that need other sizes or seeds."""
    return direction_clips


@pytest.fixture(scope="session")
def trained_models(built_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LSTM models trained (InfoNCE, 2 epochs) on the built collection's windows with different seeds,
    through the CLI."""
    from vidsearch.cli import main

    folder = tmp_path_factory.mktemp("models")
    out = {}
    for seed in (0, 1):
        path = folder / f"lstm-{seed}.onnx"
        assert main(["train", "--collection", str(built_collection), "--model", "lstm", "--loss", "infonce",
                     "--epochs", "2", "--seed", str(seed), "--out", str(path), "--json"]) == 0
        out[f"seed{seed}"] = path
    return out
