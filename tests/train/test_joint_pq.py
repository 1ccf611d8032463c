"""Joint differentiable PQ (train/joint_pq.py): both arms run, the joint one trains its quantizer through the
loss, results are deterministic, and the codes FAISS searches are the ones trained."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.errors import ConfigError


@pytest.fixture(scope="module")
def shared(make_directions):
    from vidsearch.train.loop import TrainConfig, train_temporal

    data = make_directions(n=320, dim=32, frames=4, seed=3)
    base = train_temporal(data, TrainConfig(model="lstm", loss="infonce", epochs=2, batch_size=32, hidden=16, frames=4))
    return data, base.model


def _config(**changes):
    from vidsearch.train.joint_pq import JointConfig

    return JointConfig(**{"M": 4, "nbits": 8, "epochs": 3, "batch_size": 32, "opq_niter": 5, **changes})


def test_joint_training_moves_the_codebooks_and_lowers_its_loss(shared):
    from vidsearch.compress import OPQ
    from vidsearch.train.joint_pq import continue_training
    from vidsearch.train.loop import embed

    data, model = shared
    arm = continue_training(data, model, _config(), joint=True)
    assert arm.name == "joint" and len(arm.history) == 3 and arm.history[-1] < arm.history[0]
    assert arm.codebooks.shape == (4, 256, 8) and arm.rotation.shape == (32, 32)
    np.testing.assert_allclose(arm.rotation @ arm.rotation.T, np.eye(32), atol=1e-4)  # still orthogonal
    start = OPQ(4, 8, niter=5).fit(embed(model, data.resampled(4)))
    assert np.abs(arm.codebooks - start.codebooks_).max() > 1e-3  # the loss reached the codebooks
    before = embed(model, data.resampled(4))
    assert np.abs(embed(arm.model, data.resampled(4)) - before).max() > 1e-4  # and the model
    assert np.array_equal(embed(model, data.resampled(4)), before)  # the shared model itself is untouched


def test_both_arms_are_deterministic_and_scored_by_faiss_codes(shared):
    from vidsearch.train.joint_pq import continue_training, copy_recall

    data, model = shared
    apart = continue_training(data, model, _config(epochs=1), joint=False)
    again = continue_training(data, model, _config(epochs=1), joint=False)
    assert apart.name == "apart" and apart.history == again.history
    assert np.array_equal(apart.codebooks, again.codebooks)
    joint = continue_training(data, model, _config(epochs=1), joint=True)
    assert joint.history == continue_training(data, model, _config(epochs=1), joint=True).history
    for arm in (apart, joint):
        scores = copy_recall(arm, data, ks=(1, 10), views=1, seed=0)
        assert scores["queries"] == scores["database"] == len(data)
        assert 0.0 < scores["recall_pq@1"] <= scores["recall_pq@10"] <= 1.0
        assert 0.0 < scores["recall_float@1"] <= scores["recall_float@10"] <= 1.0
        assert scores == copy_recall(arm, data, ks=(1, 10), views=1, seed=0)
        with_reversed = copy_recall(arm, data, ks=(1, 10), views=1, seed=0, reversed_distractors=True)
        assert with_reversed["database"] == 2 * len(data)
        assert with_reversed["recall_float@1"] <= scores["recall_float@1"]  # more to confuse it with, never less
    # codes with one centroid per sub-space cannot tell clips apart: recall falls to about chance (10 of 320)
    flat = type(joint)("flat", joint.model, joint.rotation, np.repeat(joint.codebooks[:, :1], 256, axis=1),
                       [], 0.0)
    assert copy_recall(flat, data, ks=(10,), views=1, seed=0)["recall_pq@10"] < 0.2


def test_bad_settings_and_too_few_clips_are_refused(shared, make_directions):
    from vidsearch.train.joint_pq import continue_training

    for bad in ({"M": 0}, {"batch_size": 2}, {"tau": 0.0}, {"temperature": (1.0, 0.0)}, {"lambda_rec": -1.0}):
        with pytest.raises(ConfigError):
            _config(**bad)
    _, model = shared
    with pytest.raises(ConfigError, match="256 centroids"):
        continue_training(make_directions(n=100, dim=32, frames=4), model, _config(), joint=True)
    with pytest.raises(ConfigError):
        continue_training(shared[0], model, _config(M=5), joint=True)  # 5 does not divide 32
