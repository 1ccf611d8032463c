"""Temporal models: shapes, ONNX Runtime equals torch, determinism, a training run lowers its loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidsearch.encode.temporal import OnnxTemporalModel, read_model_info, resample_frames
from vidsearch.errors import ConfigError, ShapeError
from vidsearch.train.datasets import Augmentation, augment, class_batches, clip_set
from vidsearch.train.loop import TrainConfig, embed, export_onnx, train_temporal, weights_hash
from vidsearch.train.models import AttentionTemporal, DualStreamTemporal, LSTMTemporal, build_model


@pytest.mark.parametrize("kind", ["lstm", "attention", "seq2seq", "dual"])
def test_shapes_and_unit_norm(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, dim=24, hidden=16, frames=16).eval()
    x = torch.nn.functional.normalize(torch.randn(5, 16, 24), dim=-1)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (5, 24)
    assert torch.allclose(y.norm(dim=1), torch.ones(5), atol=1e-5)
    # order matters: the reversed window gives another vector (mean pooling would give the same)
    with torch.no_grad():
        assert not torch.allclose(model(x.flip(1)), y, atol=1e-4)


def test_dual_stream_motion_sees_only_what_changes_between_frames() -> None:
    """The motion stream's input is the frame-to-frame change: a still window gives it zeros, so its input
    weights cannot change the vector of a still window, and do change a moving one's."""
    torch.manual_seed(0)
    model = DualStreamTemporal(24, hidden=16, frames=16).eval()
    still = torch.nn.functional.normalize(torch.randn(1, 1, 24), dim=-1).repeat(1, 16, 1)
    moving = torch.nn.functional.normalize(torch.randn(1, 16, 24), dim=-1)
    with torch.no_grad():
        before = model(still), model(moving)
        model.motion_in.weight.mul_(3.0)
        after = model(still), model(moving)
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1], atol=1e-4)


def test_bad_model_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown temporal model 'gru'"):
        build_model("gru", 8)
    with pytest.raises(ConfigError, match="window"):
        AttentionTemporal(8, hidden=16, frames=10, window=4)
    with pytest.raises(ConfigError, match="even hidden"):
        LSTMTemporal(8, hidden=15)
    with pytest.raises(ConfigError, match="unknown loss 'mse'"):
        TrainConfig(loss="mse")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)


@pytest.mark.parametrize("kind", ["lstm", "attention", "dual"])
def test_onnx_runtime_equals_torch(kind: str, directions, tmp_path: Path) -> None:
    result = train_temporal(directions, TrainConfig(model=kind, loss="ce", epochs=1, hidden=16, batch_size=32))
    path = export_onnx(result, tmp_path / f"{kind}.onnx")
    model = OnnxTemporalModel(path)
    windows = directions.clips[:7] + [directions.clips[0][:1], np.repeat(directions.clips[1], 5, axis=0)]
    got = model.aggregate_many(windows)
    expected = embed(result.model, np.stack([resample_frames(w, 16) for w in windows]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(model.aggregate(windows[3]), expected[3], atol=1e-5)
    info = read_model_info(path)
    assert (info.kind, info.dim, info.frames) == (kind, 32, 16)
    assert info.weights_hash == weights_hash(result.model) == model.info.weights_hash
    assert info.meta["train"]["config"]["loss"] == "ce" and len(info.meta["train"]["history"]) == 1
    assert model.output_dim(32) == 32
    with pytest.raises(ShapeError, match="takes 32-d frame vectors"):
        model.output_dim(512)


def test_same_seed_same_weights_other_seed_other_weights(directions) -> None:
    config = TrainConfig(model="lstm", loss="infonce", epochs=2, hidden=16, batch_size=32, seed=3)
    first = train_temporal(directions, config)
    again = train_temporal(directions, config)
    other = train_temporal(directions, TrainConfig(model="lstm", loss="infonce", epochs=2, hidden=16, batch_size=32,
                                                   seed=4))
    assert first.weights_hash() == again.weights_hash()
    assert first.history == again.history
    assert other.weights_hash() != first.weights_hash()


@pytest.mark.parametrize("kind,loss", [("lstm", "ce"), ("attention", "triplet"), ("lstm", "infonce"), ("dual", "ce")])
def test_training_lowers_the_loss_and_learns_the_order(kind: str, loss: str, make_directions) -> None:
    data = make_directions(n=128)
    held_out = make_directions(n=64, seed=1)
    result = train_temporal(data, TrainConfig(model=kind, loss=loss, epochs=8, hidden=32, batch_size=32, lr=3e-3))
    assert result.history[-1] < 0.8 * result.history[0], result.history
    if loss != "infonce":  # supervised: the held-out clips' nearest neighbour has their direction
        vectors = embed(result.model, held_out.resampled(16))
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        assert held_out.labels is not None
        accuracy = float(np.mean(held_out.labels[similarity.argmax(1)] == held_out.labels))
        assert accuracy > 0.8  # mean pooling: chance (0.5), the two directions share their frames
    if loss == "triplet":
        assert set(result.hard) == {"wrong_before", "wrong_after"}


def test_supervised_loss_needs_labels_and_training_needs_two_clips() -> None:
    unlabelled = clip_set(np.ones((4, 3, 8), np.float32))
    with pytest.raises(ConfigError, match="needs labelled clips"):
        train_temporal(unlabelled, TrainConfig(loss="triplet", epochs=1, batch_size=4))
    with pytest.raises(ConfigError, match="at least 2 clips, got 1"):
        train_temporal(clip_set(np.ones((1, 3, 8), np.float32)), TrainConfig(epochs=1, batch_size=4))
    assert not torch.are_deterministic_algorithms_enabled()  # training restores the process's setting


def test_augment_keeps_shape_and_order_and_is_seeded() -> None:
    clip = np.eye(6, 10, dtype=np.float32)  # frame i points along axis i
    aug = Augmentation(noise=0.0, splice=0.0)
    views = [augment(clip, 16, np.random.default_rng(s), aug) for s in range(20)]
    for v in views:
        assert v.shape == (16, 10)
        order = v.argmax(axis=1)
        assert np.all(np.diff(order) >= 0)  # crops, speed changes, drops and repeats keep the order
    again = augment(clip, 16, np.random.default_rng(5), aug)
    np.testing.assert_array_equal(again, views[5])
    assert len({v.tobytes() for v in views}) > 5


def test_class_batches_and_hard_focus() -> None:
    labels = np.repeat(np.arange(6), 5)
    rng = np.random.default_rng(0)
    batches = class_batches(labels, batch_size=12, per_class=4, rng=rng)
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == len(seen)  # an epoch draws each clip once
    for b in batches:
        counts = np.bincount(labels[b])
        assert counts[counts > 0].min() >= 1 and (counts >= 2).sum() >= 2
    focus = np.array([0, 7, 29])
    focused = class_batches(labels, 12, 4, rng, focus=focus)
    assert sorted(set(np.concatenate(focused).tolist()) & set(focus.tolist())) == [0, 7, 29]
    with pytest.raises(ConfigError, match="at least two clips"):
        class_batches(np.arange(5), 4, 2, rng)


def test_seq2seq_reconstruction_pretraining_then_ce(make_directions, tmp_path: Path) -> None:
    data = make_directions(n=64)
    alone = train_temporal(data, TrainConfig(model="seq2seq", loss="reconstruct", epochs=12, hidden=32, batch_size=16,
                                             lr=1e-2))
    assert alone.history[-1] < 0.7 * alone.history[0], alone.history  # measured 1.03 -> 0.54
    both = train_temporal(data, TrainConfig(model="seq2seq", loss="ce", epochs=2, pretrain_epochs=3, hidden=16,
                                            batch_size=16))
    assert len(both.pretrain_history) == 3 and len(both.history) == 2
    assert both.pretrain_history[-1] < both.pretrain_history[0]
    path = export_onnx(both, tmp_path / "seq2seq.onnx")  # the encoder only: the decoder is not in the graph
    info = read_model_info(path)
    assert info.kind == "seq2seq" and len(info.meta["train"]["pretrain_history"]) == 3
    windows = data.clips[:3]
    np.testing.assert_allclose(OnnxTemporalModel(path).aggregate_many(windows),
                               embed(both.model, np.stack([resample_frames(w, 16) for w in windows])), atol=1e-5)
    assert path.stat().st_size < 200_000
