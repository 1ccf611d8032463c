"""Bad input never stops a batch, never loses what is already indexed, and always says what went wrong.

Every bad file is made in ``tmp_path`` from the real sample footage (or written with PyAV), then
indexed between two good files into a copy of an existing collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from vidsearch import Collection
from vidsearch.errors import CollectionError, CollectionLockedError, NotFoundError
from vidsearch.evaluate import samples
from vidsearch.store.files import iter_media_files

GOOD = ("rgb.m4v", "v2s.mov")  # short real videos that are not in ``built_collection``
REPORT_KEYS = {"path", "status", "video_id", "segments", "duration", "error", "timings_s"}
CLI = [sys.executable, "-m", "vidsearch.cli"]


# ---------------------------------------------------------------------------------------------- bad files
def _truncated(tmp: Path, footage: dict[str, Path]) -> Path:
    data = footage["v1.m4v"].read_bytes()  # its index (moov) is at the end: 30% has none
    out = tmp / "truncated.mp4"
    out.write_bytes(data[: int(len(data) * 0.3)])
    return out


def _zero_length(tmp: Path, footage: dict[str, Path]) -> Path:
    out = tmp / "empty.mp4"
    out.write_bytes(b"")
    return out


def _text(tmp: Path, footage: dict[str, Path]) -> Path:
    out = tmp / "notes.mp4"
    out.write_text("this is a shopping list, not a video\n" * 20, encoding="utf-8")
    return out


def _audio_only(tmp: Path, footage: dict[str, Path]) -> Path:
    import av

    out = tmp / "silence.mp4"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


def _mp3_renamed(tmp: Path, footage: dict[str, Path]) -> Path:
    d = samples._package_dir("iscc_samples")
    assert d is not None, "iscc-samples is a test dependency"
    out = tmp / "song.mp4"
    shutil.copyfile(d / "files" / "audio" / "demo.mp3", out)
    return out


def _no_frames(tmp: Path, footage: dict[str, Path]) -> Path:
    """A valid AVI with a video stream and not one frame in it."""
    import av

    out = tmp / "no_frames.avi"
    container = av.open(str(out), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return out


def _garbage_packets(tmp: Path, footage: dict[str, Path]) -> Path:
    """v1.m4v's stream and timing remuxed into Matroska with every packet's payload replaced by noise."""
    import av

    rng = random.Random(0)
    out = tmp / "garbage_packets.mkv"
    with av.open(str(footage["v1.m4v"])) as src, av.open(str(out), "w") as dst:
        ist = src.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        for packet in src.demux(ist):
            if packet.size == 0:
                continue
            noise = av.Packet(rng.randbytes(packet.size))
            noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base
            noise.is_keyframe = packet.is_keyframe
            noise.stream = ost
            dst.mux(noise)
    return out


def _unknown_codec(tmp: Path, footage: dict[str, Path]) -> Path:
    """v1.m4v with its sample entry's codec tag damaged: the container opens, the video stream has no codec."""
    data = footage["v1.m4v"].read_bytes()
    assert data.count(b"avc1") == 1
    out = tmp / "unknown_codec.mp4"
    out.write_bytes(data.replace(b"avc1", b"zzzz"))
    return out


def _fifo(tmp: Path, footage: dict[str, Path]) -> Path:
    """A named pipe called .mp4: reading it would block forever."""
    out = tmp / "pipe.mp4"
    os.mkfifo(out)
    return out


BAD: dict[str, tuple[Callable[[Path, dict[str, Path]], Path], str]] = {
    "truncated": (_truncated, r"not a readable video or image .*expected a common container"),
    "zero-length": (_zero_length, r"the file is empty \(0 bytes\); expected a video"),
    "text-named-mp4": (_text, r"not a readable video or image"),
    "audio-only": (_audio_only, r"no video stream \(found stream types: audio\)"),
    "mp3-renamed-mp4": (_mp3_renamed, r"no video stream \(found stream types: audio\)"),
    "no-frames": (_no_frames, r"no decodable video frame; the file may be truncated or corrupt"),
    "garbage-packets": (_garbage_packets, r"no decodable video frame \(\d+ packet errors, last: .*\); the file may be"),
    "unknown-codec": (_unknown_codec, r"the video stream has no known codec .*the file may be corrupt"),
    "named-pipe": (_fifo, r"no such file \(or not a regular file\)"),
}


@pytest.fixture(scope="module", autouse=True)
def encode_good_files_once():
    """The good files and queries (real footage, never changed) are decoded and encoded once for the module
    (``MediaEncoder.cache``); every bad file is a new file in ``tmp_path`` and goes through the decoder."""
    from vidsearch.encode.pipeline import MediaEncoder

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MediaEncoder, "cache", {})
        yield


# ---------------------------------------------------------------------------------------------- helpers
def _state(coll: Collection) -> dict[str, tuple[str, int, int]]:
    """id -> (path, segments, frames) of every video."""
    return {v["id"]: (v["path"], v["segments"], v["n_frames"]) for v in coll.videos()}


def _top(coll: Collection, query: Path | str) -> str | None:
    results = coll.search(query, k=3).results
    return results[0].video_id if results else None


def _assert_nothing_lost(before: dict[str, tuple[str, int, int]], coll: Collection) -> None:
    after = _state(coll)
    assert {k: after.get(k) for k in before} == before, "an already indexed video changed or vanished"


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_in_a_mixed_batch_fails_alone(kind: str, collection_copy: Path, footage: dict[str, Path], tmp_path: Path):
    make, expected = BAD[kind]
    bad = make(tmp_path, footage)
    good = [footage[n] for n in GOOD]
    with Collection.open(collection_copy) as coll:
        before, info_before = _state(coll), coll.info()
        reports = coll.add([good[0], bad, good[1]])

        assert [r.status for r in reports] == ["indexed", "failed", "indexed"], [(r.path, r.error) for r in reports]
        failed = reports[1]
        assert failed.path == str(bad) and failed.video_id is None and failed.segments == 0
        assert failed.error and str(bad) in failed.error
        assert re.search(expected, failed.error), failed.error
        assert "Traceback" not in failed.error and "NoneType" not in failed.error

        # the good files went in whole, the bad one left nothing behind, nothing old was lost
        _assert_nothing_lost(before, coll)
        info = coll.info()
        assert info["videos"] == info_before["videos"] + 2
        assert info["segments"] == info_before["segments"] + reports[0].segments + reports[2].segments
        assert info["generation"] == info_before["generation"] + 2  # the failure committed nothing
        assert _top(coll, good[1]) == reports[2].video_id
    with Collection.open(collection_copy) as coll:  # and all of it survives a reopen
        assert set(_state(coll)) == set(before) | {reports[0].video_id, reports[2].video_id}
        assert _top(coll, footage["carphone_pristine.mp4"]) == next(
            k for k, v in before.items() if Path(v[0]).name == "carphone_pristine.mp4"
        )


def test_corrupt_bytes_index_or_fail_cleanly(collection_copy: Path, footage: dict[str, Path], tmp_path: Path):
    """Noise written over the middle of real mp4s: the decoder skips what it cannot read."""
    corrupt = []
    for seed, name in enumerate(["v1.m4v", "carphone_pristine.mp4", "v1.m4v"]):
        data = bytearray(footage[name].read_bytes())
        rng = random.Random(seed)
        start = len(data) // 2 - 4000
        data[start : start + 8000] = rng.randbytes(8000)
        out = tmp_path / f"corrupt{seed}_{name}"
        out.write_bytes(bytes(data))
        corrupt.append(out)
    rgb = footage["rgb.m4v"].read_bytes()  # index at the front: a truncated copy still has frames to read
    cut = tmp_path / "rgb_first_30_percent.m4v"
    cut.write_bytes(rgb[: int(len(rgb) * 0.3)])

    with Collection.open(collection_copy) as coll:
        before = _state(coll)
        batch = [footage["v2s.mov"], *corrupt, cut, footage["rgb.m4v"]]
        reports = coll.add(batch)
        assert [r.path for r in reports] == [str(p) for p in batch]
        assert reports[0].status == reports[-1].status == "indexed"
        for r in reports:
            assert r.status in ("indexed", "failed")
            assert (r.status == "failed") == bool(r.error)
        # mid-file damage in an h264 stream is concealed by the decoder: these still index
        assert [r.status for r in reports[1:4]] == ["indexed"] * 3, [r.error for r in reports[1:4]]
        assert reports[4].status == "indexed" and 0 < reports[4].segments < reports[-1].segments
        _assert_nothing_lost(before, coll)
        for r, path in zip(reports, batch):
            if r.status == "indexed":
                assert _top(coll, path) == r.video_id


def test_huge_resolution_indexes_with_bounded_memory(tmp_path: Path, footage: dict[str, Path]):
    """A 2-frame 7680x4320 video: frames are scaled down as they are decoded, never kept at full size."""
    import av

    huge = tmp_path / "8k.mp4"
    w, h = 7680, 4320
    with av.open(str(huge), "w") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        planar = np.full((h * 3 // 2, w), 128, np.uint8)  # yuv420p: Y plane then U and V
        planar[: h // 2, : w // 2] = 220
        planar[h // 2 : h, w // 2 :] = 30
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)

    script = r"""
import json, resource, sys
from vidsearch import Collection
coll = Collection.create(sys.argv[1])
coll.add([sys.argv[2]])  # warm up: models loaded, a small video decoded
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
[r] = coll.add([sys.argv[3]])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"status": r.status, "error": r.error, "video_id": r.video_id, "growth_kb": after - before}))
"""
    coll_dir = tmp_path / "coll"
    proc = subprocess.run([sys.executable, "-c", script, str(coll_dir), str(footage["carphone_pristine.mp4"]), str(huge)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "indexed", out["error"]
    assert out["growth_kb"] * 1024 < 1.5e9, f"peak RSS grew by {out['growth_kb'] / 1024:.0f} MB on an 8K video"
    with Collection.open(coll_dir) as coll:
        [video] = [v for v in coll.videos() if v["id"] == out["video_id"]]
        assert (video["width"], video["height"]) == (w, h) and video["segments"] >= 1
        assert _top(coll, huge) == out["video_id"]


def test_unicode_and_spaces_in_paths(tmp_path: Path, footage: dict[str, Path]):
    folder = tmp_path / "dossier é 東京"
    folder.mkdir()
    clip = folder / "vidéo 東京 clip.mp4"
    spaced = folder / "my clip (copy 1).m4v"
    shutil.copyfile(footage["v2s.mov"], clip)
    shutil.copyfile(footage["v1.m4v"], spaced)
    with Collection.create(tmp_path / "coll é") as coll:
        reports = coll.add([folder])  # found by walking the folder
        assert sorted((Path(r.path).name, r.status) for r in reports) == [
            ("my clip (copy 1).m4v", "indexed"), ("vidéo 東京 clip.mp4", "indexed")]
        by_name = {Path(r.path).name: r.video_id for r in reports}
        paths = {v["id"]: v["path"] for v in coll.videos()}
        assert paths[by_name[clip.name]] == str(clip.resolve())
        hits = coll.search(str(clip), k=2).results
        assert hits[0].video_id == by_name[clip.name] and hits[0].path == str(clip.resolve())
        removed = coll.remove(str(clip))  # remove by its unicode path
        assert removed["video_id"] == by_name[clip.name]
        with pytest.raises(NotFoundError):
            coll.remove(str(clip))
    with Collection.open(tmp_path / "coll é") as coll:
        assert set(_state(coll)) == {by_name[spaced.name]}


def test_folder_with_symlink_loop_indexes_each_video_once(tmp_path: Path, footage: dict[str, Path]):
    folder = tmp_path / "library"
    (folder / "sub").mkdir(parents=True)
    shutil.copyfile(footage["v1.m4v"], folder / "a.m4v")
    shutil.copyfile(footage["v2s.mov"], folder / "sub" / "b.mov")
    (folder / "readme.txt").write_text("not media")
    os.symlink(folder, folder / "loop")  # library/loop -> library
    os.symlink(folder, folder / "sub" / "up")  # library/sub/up -> library
    os.symlink(folder / "a.m4v", folder / "sub" / "same_as_a.m4v")  # a second name for a real video

    listed = list(islice(iter_media_files([folder]), 100))  # a loop would never end; cut it off
    assert sorted(p.relative_to(folder).as_posix() for p in listed) == ["a.m4v", "sub/b.mov", "sub/same_as_a.m4v"]
    with Collection.create(tmp_path / "coll") as coll:
        reports = coll.add([folder])
        status = {Path(r.path).relative_to(folder).as_posix(): r.status for r in reports}
        assert status == {"a.m4v": "indexed", "sub/b.mov": "indexed", "sub/same_as_a.m4v": "skipped"}
        assert coll.info()["videos"] == 2
        again = coll.add([folder, folder / "loop"])  # the same folder twice, once through the loop
        assert len(again) == 3 and {r.status for r in again} == {"skipped"}


def test_same_file_twice_in_one_call(tmp_path: Path, footage: dict[str, Path]):
    copy = tmp_path / "renamed copy.m4v"
    shutil.copyfile(footage["v1.m4v"], copy)
    with Collection.create(tmp_path / "coll") as coll:
        first, second, third = coll.add([footage["v1.m4v"], footage["v1.m4v"], copy])
        assert (first.status, second.status, third.status) == ("indexed", "skipped", "skipped")
        assert second.video_id == third.video_id == first.video_id
        assert "already indexed as " + first.video_id in (second.error or "")
        info = coll.info()
        assert (info["videos"], info["segments"], info["generation"]) == (1, first.segments, 1)


LOCK_HOLDER = r"""
import sys
from pathlib import Path
from vidsearch.store.lock import WriterLock
with WriterLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes our stdin
"""


def test_second_writer_is_refused_while_the_first_holds_the_lock(collection_copy: Path, footage: dict[str, Path]):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(collection_copy)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with Collection.open(collection_copy) as coll:
            before = _state(coll)
            with pytest.raises(CollectionLockedError, match=rf"locked by another writer \(pid {holder.pid}\)"):
                coll.add([footage["rgb.m4v"]])
            with pytest.raises(CollectionLockedError, match="locked"):
                coll.remove(next(iter(before)))
            assert isinstance(CollectionLockedError("x"), CollectionError)
            assert _top(coll, footage["v1.m4v"]) is not None  # searching needs no lock
            assert _state(coll) == before
        cli = subprocess.run([*CLI, "index", "--collection", str(collection_copy), "--json", str(footage["rgb.m4v"])],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2, cli.stderr
        err = json.loads(cli.stdout)
        assert err["error"] == "CollectionLockedError" and "locked" in err["message"]
    finally:
        holder.communicate(input="", timeout=30)  # release
    assert holder.returncode == 0
    with Collection.open(collection_copy) as coll:  # the lock is free again
        [r] = coll.add([footage["rgb.m4v"]])
        assert r.status == "indexed"


def test_remove_with_an_empty_or_wildcard_id_removes_nothing(collection_copy: Path):
    with Collection.open(collection_copy) as coll:
        before = _state(coll)
        video_id = sorted(before)[0]
        for bad in ["", "%", "_", video_id[:3] + "_", video_id[:2] + "%" + video_id[3:]]:
            with pytest.raises(NotFoundError, match="no video"):
                coll.remove(bad)
        assert _state(coll) == before
        assert coll.remove(video_id[:5])["video_id"] == video_id  # a real prefix still works
        assert set(_state(coll)) == set(before) - {video_id}


def test_directory_that_is_not_a_collection(tmp_path: Path):
    plain = tmp_path / "holiday videos"
    plain.mkdir()
    (plain / "clip.mp4").write_bytes(b"\x00" * 16)
    listing = sorted(os.listdir(plain))
    with pytest.raises(CollectionError, match=r"is not a vidsearch collection \(no manifest.json\)"):
        Collection.open(plain)
    with pytest.raises(CollectionError, match="no such collection directory"):
        Collection.open(tmp_path / "missing")
    with pytest.raises(CollectionError, match="it is not empty"):
        Collection.create(plain)
    assert sorted(os.listdir(plain)) == listing, "a failed open/create must not write into the directory"
    assert not (tmp_path / "missing").exists()


def test_manifest_from_a_newer_format_is_refused(collection_copy: Path):
    manifest = collection_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(CollectionError, match=r"collection format 99, newer than this vidsearch reads \(1\); upgrade"):
        Collection.open(collection_copy)
    with pytest.raises(CollectionError, match="newer"):
        Collection.open_or_create(collection_copy)
    assert json.loads(manifest.read_text())["format_version"] == 99  # left as found


def test_cli_index_json_reports_a_mixed_batch(collection_copy: Path, footage: dict[str, Path], tmp_path: Path):
    unicode_clip = tmp_path / "vidéo 東京 clip.mp4"
    shutil.copyfile(footage["v2s.mov"], unicode_clip)
    empty = _zero_length(tmp_path, footage)
    text = _text(tmp_path, footage)
    missing = tmp_path / "missing.mp4"
    batch = [footage["rgb.m4v"], text, unicode_clip, empty, missing, footage["v1.m4v"]]
    with Collection.open(collection_copy) as coll:
        before = _state(coll)
    v1_id = next(k for k, v in before.items() if Path(v[0]).name == "v1.m4v")

    proc = subprocess.run([*CLI, "index", "--collection", str(collection_copy), "--json", *map(str, batch)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr  # partial success
    doc = json.loads(proc.stdout)
    assert doc["collection"] == str(collection_copy)
    files = doc["files"]
    assert [f["path"] for f in files] == [str(p) for p in batch]
    assert all(set(f) == REPORT_KEYS for f in files)
    assert [f["status"] for f in files] == ["indexed", "failed", "indexed", "failed", "failed", "skipped"]
    assert doc["summary"] == {"indexed": 2, "skipped": 1, "failed": 3}
    for f in files:
        if f["status"] == "indexed":
            # the id is the first 12 hex digits of the file's SHA-256 (Collection._commit: digest[:12])
            assert re.fullmatch(r"[0-9a-f]{12}", f["video_id"]), f["video_id"]
            assert f["video_id"] == hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest()[:12]
            assert f["segments"] > 0 and f["duration"] > 0 and f["error"] is None
        elif f["status"] == "failed":
            assert f["video_id"] is None and f["segments"] == 0 and f["path"] in f["error"]
        else:
            assert f["video_id"] == v1_id and "already indexed" in f["error"]
    assert "not a readable video" in files[1]["error"]
    assert "empty (0 bytes)" in files[3]["error"]
    assert "no such file" in files[4]["error"]

    search = subprocess.run([*CLI, "search", "--collection", str(collection_copy), "--json", str(unicode_clip)],
                            capture_output=True, text=True, timeout=120)
    assert search.returncode == 0, search.stderr
    top = json.loads(search.stdout)["results"][0]
    assert top["video_id"] == files[2]["video_id"] and top["path"] == str(unicode_clip.resolve())
    with Collection.open(collection_copy) as coll:
        _assert_nothing_lost(before, coll)
        assert len(coll.videos()) == len(before) + 2
