"""Fixtures shared by the VSC-style benchmark's tests: the tiny data set is built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from once import built_once

from vidsearch.evaluate.vsc_data import VSCDataset, build_dataset
from vidsearch.evaluate.vsc_run import dataset_config

VSC_TINY_SEED = 3  # the tiny size of seed 3 has queries with copies and without


@pytest.fixture(scope="session")
def vsc_tiny(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> VSCDataset:
    """``vidsearch eval vsc --size tiny --seed 3``'s data set, built once per run (shared by the xdist workers;
    read-only for the tests that share it)."""
    config = dataset_config("tiny", VSC_TINY_SEED)

    def build(path: Path) -> None:
        build_dataset(config, path)

    root = built_once(tmp_path_factory, worker_id, "vsc-tiny", build)
    return build_dataset(config, root)  # loads what was built (the manifest matches)
