"""The one export path of trained models: metadata attached, ONNX Runtime checked, written atomically or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidsearch.errors import EncoderError
from vidsearch.train.onnx_export import export_checked


def _export(target: Path, check, atol: float = 1e-5):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3).eval()
    x = torch.randn(2, 4)
    return export_checked(net, (x,), target, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}},
                          metadata_key="vidsearch.test", meta={"format": "t", "n": 1}, check=check, atol=atol,
                          what="test model"), net, x


def test_a_checked_export_carries_its_metadata_and_equals_torch(tmp_path: Path) -> None:
    import onnxruntime as ort

    def check(session) -> float:  # type: ignore[no-untyped-def]
        x = np.ones((5, 4), np.float32)
        return float(np.abs(session.run(None, {"x": x})[0] - net_ref(torch.from_numpy(x)).detach().numpy()).max())

    torch.manual_seed(0)
    net_ref = torch.nn.Linear(4, 3).eval()
    (path, err), _, _ = _export(tmp_path / "sub" / "m.onnx", check)
    assert path == tmp_path / "sub" / "m.onnx" and err <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["vidsearch.test"]) == {"format": "t", "n": 1}
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temp file left beside it


def test_a_failed_check_writes_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the old model")
    for bad in (1.0, float("nan")):
        with pytest.raises(EncoderError, match="differs from torch by .* not written"):
            _export(target, lambda _session, bad=bad: bad)
    assert target.read_bytes() == b"the old model" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
