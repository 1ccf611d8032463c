"""The temporal-network localiser on hand-made similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.errors import ConfigError
from vidsearch.search.tn import TNParams, temporal_network


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_two_copies_one_at_double_speed_are_found_with_their_ranges() -> None:
    rng = np.random.default_rng(0)
    ref = _unit(rng.normal(size=(120, 256)))
    query = _unit(rng.normal(size=(40, 256)))
    query[10:25] = _unit(ref[50:65] + 0.3 * _unit(rng.normal(size=(15, 256))))  # query 10-24 = ref 50-64
    query[30:36] = _unit(ref[100:112:2] + 0.3 * _unit(rng.normal(size=(6, 256))))  # 2x: ref 100-110
    sims = query @ ref.T
    # the default min_sim (0.1) is for normalised similarities: on raw ones chance paths follow the copies
    loose = temporal_network(sims)
    assert {(m.q0, m.r0) for m in loose[:2]} == {(10, 50), (30, 100)} and all(m.score < 0.3 for m in loose[2:])
    found = temporal_network(sims, TNParams(min_sim=0.3))
    assert len(found) == 2  # unrelated 256-d segments (cosine ~0.06) never reach min_sim 0.3
    assert found[0].score >= found[1].score  # best first
    a, b = sorted(found, key=lambda m: m.q0)
    assert (a.q0, a.q1, a.r0, a.r1) == (10, 24, 50, 64) and a.score > 0.9 and a.nodes == 15
    assert (b.q0, b.q1, b.r0, b.r1) == (30, 35, 100, 110) and b.nodes == 6


def test_backwards_runs_gaps_and_parameters() -> None:
    eye = np.eye(12, dtype=np.float32)
    assert [(m.q0, m.q1, m.r0, m.r1) for m in temporal_network(eye)] == [(0, 11, 0, 11)]
    # reversed playback is not a forward path: only single nodes, shorter than min_length 1
    assert temporal_network(eye[::-1]) == []
    gap = eye.copy()
    gap[5] = 0.0  # a lost segment: the path steps over it (max_step 5)
    assert [(m.q0, m.q1) for m in temporal_network(gap)] == [(0, 11)]
    jump = np.zeros((12, 40), np.float32)
    jump[np.arange(12), np.r_[0:6, 20:26]] = 1.0  # a cut to another part of the reference
    assert sorted((m.q0, m.q1, m.r0, m.r1) for m in temporal_network(jump)) == [(0, 5, 0, 5), (6, 11, 20, 25)]
    assert temporal_network(np.zeros((0, 5))) == []
    assert temporal_network(eye, TNParams(min_length=20)) == []
    with pytest.raises(ConfigError):
        TNParams(max_step=1)
    with pytest.raises(ConfigError):
        temporal_network(np.zeros(5))
