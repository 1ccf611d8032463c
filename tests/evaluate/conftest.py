"""Fixtures shared by the VSC-style benchmark's tests: the tiny data set is built once per session."""

from __future__ import annotations

import pytest

from vidsearch.evaluate.vsc_data import VSCDataset, build_dataset
from vidsearch.evaluate.vsc_run import dataset_config

VSC_TINY_SEED = 3  # the tiny size of seed 3 has queries with copies and without


@pytest.fixture(scope="session")
def vsc_tiny(tmp_path_factory: pytest.TempPathFactory) -> VSCDataset:
    """``vidsearch eval vsc --size tiny --seed 3``'s data set (read-only for the tests that share it)."""
    return build_dataset(dataset_config("tiny", VSC_TINY_SEED), tmp_path_factory.mktemp("vsc") / "tiny")
