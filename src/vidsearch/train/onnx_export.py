"""One export path for every trained model (temporal models, the comparator): torch -> ONNX in a scratch folder, the
description attached as JSON metadata, ONNX Runtime checked against torch, then one atomic write.

Nothing is written when the check fails, and a crash leaves the old file or the new one, never a part
(``vidsearch.atomic.atomic_write``: temp file, fsync, ``os.replace``, directory fsync).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vidsearch.atomic import atomic_write
from vidsearch.errors import EncoderError


def export_checked(module: Any, args: tuple[Any, ...], target: str | os.PathLike[str], *, input_names: Sequence[str],
                   output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]], metadata_key: str,
                   meta: Mapping[str, Any], check: Callable[[Any], float], atol: float, what: str) -> tuple[Path, float]:
    """Export ``module`` called on ``args`` to ``target`` (opset 17, the TorchScript exporter: ``dynamo=False``),
    with ``meta`` as JSON under ``metadata_key``; ``check(session)`` gets an ONNX Runtime session of the
    exported bytes and returns the largest absolute difference to torch.

    Returns:
        (the written path, that difference).

    Raises:
        EncoderError: the difference is above ``atol`` (nothing is written).
    """
    import onnx
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory(prefix="vidsearch-export-") as scratch, warnings.catch_warnings():
        # the TorchScript exporter is the one chosen on purpose (dynamo=False); an LSTM's states are sized by
        # the batch in the graph and the tracer's shape checks hold for any batch (the checks run other sizes)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*", category=UserWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
        # a pruned EfficientNet's static "same" padding exports as Slice nodes that cannot be constant-folded (harmless)
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*", category=UserWarning)
        exported = os.path.join(scratch, "model.onnx")  # scratch space only: the target is written once, below
        torch.onnx.export(module, args, exported, input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, opset_version=17, dynamo=False)
        proto = onnx.load(exported)
    entry = proto.metadata_props.add()
    entry.key, entry.value = metadata_key, json.dumps(meta, sort_keys=True)
    data = proto.SerializeToString()
    err = float(check(ort.InferenceSession(data, providers=["CPUExecutionProvider"])))
    if not err <= atol:  # NaN fails too
        raise EncoderError(f"the ONNX export of the {what} differs from torch by {err:.2e} (expected <= {atol:g}); "
                           "not written")
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return path, err
