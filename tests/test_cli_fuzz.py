"""The CLI under bad arguments and bad files: every failure is one ``error:`` line (or, with ``--json``,
one JSON error object), never a traceback, with the documented exit code (``vidsearch --help``):
1 operating-system or internal error, 2 refused (bad argument or unusable input), 3 partly done.

Most cases call ``vidsearch.cli.main`` in-process; a few run the installed ``vidsearch`` script to
check what a user's terminal shows.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vidsearch import cli

USAGE, REFUSED, PARTIAL, FAILED = 2, 2, 3, 1


@pytest.fixture(scope="module")
def coll(built_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One writable copy of the session's real collection for the whole module."""
    target = tmp_path_factory.mktemp("fuzz") / "coll"
    shutil.copytree(built_collection, target)
    return target


@pytest.fixture(scope="module")
def video_id(coll: Path) -> str:
    from vidsearch.collection import Collection

    with Collection.open(coll) as c:
        return next(v["id"] for v in c.videos() if Path(v["path"]).name == "bikes.mp4")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, footage: dict[str, Path]) -> dict[str, Path]:
    """Bad inputs, plus a real video under awkward names."""
    d = tmp_path_factory.mktemp("bad files")
    rng = __import__("random").Random(0)
    out = {
        "random": d / "random.bin",
        "text_mp4": d / "notes.mp4",
        "empty_mp4": d / "empty.mp4",
        "truncated": d / "truncated.mp4",
        "header_only": d / "header-only.mp4",
        "unicode": d / "vidéo 日本語 🎬.mp4",
        "markup": d / "x[" / "][bold]clip [red].mp4",  # the path holds "[/]": rich markup would choke on it
        "folder": d / "a folder.mp4",
        "bad_json": d / "results.json",
    }
    out["markup"].parent.mkdir()
    out["random"].write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    out["text_mp4"].write_text("this is not a video\n")
    out["empty_mp4"].write_bytes(b"")
    data = footage["bikes.mp4"].read_bytes()
    out["truncated"].write_bytes(data[: len(data) // 3])  # a download cut short (its moov atom is at the end)
    out["header_only"].write_bytes(data[:2048])
    shutil.copyfile(footage["carphone_pristine.mp4"], out["unicode"])
    shutil.copyfile(footage["carphone_pristine.mp4"], out["markup"])
    out["folder"].mkdir()
    out["bad_json"].write_bytes(bytes(rng.randrange(256) for _ in range(512)))
    return out


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error(argv: list[str], rc: int, out: str, err: str, codes: set[int]) -> dict:
    """The exit code is one of ``codes``; one error, no traceback. Returns the JSON error object (or {})."""
    assert rc in codes, (argv, rc, out, err)
    assert "Traceback" not in out + err, (argv, err)
    if "--json" in argv:
        obj = json.loads(out)
        assert set(obj) >= {"error", "message"}, obj
        assert obj["message"] and "\n" not in obj["message"], obj
        return obj
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, (argv, err)
    return {}


def check(argv: list[str], capsys, codes: set[int]) -> tuple[dict, str]:
    rc, out, err = run_main(argv, capsys)
    obj = assert_one_error(argv, rc, out, err, codes)
    return obj, obj.get("message") or err


# ---------------------------------------------------------------- collections that are not collections


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_bad_collection_paths(json_flag, tmp_path: Path, files, capsys) -> None:
    (tmp_path / "not a collection").mkdir()
    (tmp_path / "not a collection" / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "missing": "no such collection",
        tmp_path / "empty": "not a vidsearch collection",
        tmp_path / "not a collection": "not a vidsearch collection",
        files["random"]: "",  # a file instead of a directory
    }
    for path, says in cases.items():
        for command in (["search", "-c", str(path), str(files["unicode"])], ["info", "-c", str(path)],
                        ["remove", "-c", str(path), "abc"], ["calibrate", "-c", str(path), "--par-threshold", "0.5"]):
            _, message = check([*command, *json_flag], capsys, {REFUSED})
            assert says in message, (command, message)
    _, message = check(["index", "-c", str(files["random"]), str(files["unicode"]), *json_flag], capsys, {REFUSED})
    assert "random.bin" in message


def test_damaged_catalogue_is_one_error_for_every_command(coll: Path, tmp_path: Path, capsys) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(coll, damaged)
    (damaged / "catalog.sqlite").write_bytes(os.urandom(8192))
    for command in (["info"], ["info", "--videos"], ["remove", "0123abcd"], ["calibrate", "--par-threshold", "0.4"]):
        for json_flag in ([], ["--json"]):
            obj, message = check([command[0], "-c", str(damaged), *command[1:], *json_flag], capsys, {REFUSED})
            assert "catalog" in message, message
            assert obj.get("error", "CollectionError") == "CollectionError"


# ---------------------------------------------------------------- queries


def test_bad_query_files(coll: Path, files, capsys) -> None:
    expect = {
        "random": "not a readable video",
        "text_mp4": "not a readable video",
        "empty_mp4": "empty",
        "truncated": "truncated.mp4",
        "header_only": "header-only.mp4",
        "folder": "folder",
    }
    for name, says in expect.items():
        for json_flag in ([], ["--json"]):
            _, message = check(["search", "-c", str(coll), str(files[name]), *json_flag], capsys, {REFUSED})
            assert says in message, (name, message)


def test_awkward_names_of_real_videos_work(coll: Path, files, capsys) -> None:
    for name in ("unicode", "markup"):
        rc, out, err = run_main(["search", "-c", str(coll), "--json", str(files[name])], capsys)
        assert rc == 0, err
        result = json.loads(out)
        assert Path(result["results"][0]["path"]).name == "carphone_pristine.mp4"
        assert result["query"] == str(files[name])


def test_human_search_output_of_a_path_that_looks_like_markup(coll: Path, files, capsys) -> None:
    rc, out, err = run_main(["search", "-c", str(coll), str(files["markup"])], capsys)
    assert rc == 0, err
    assert files["markup"].name in out  # printed as it is, not read as markup
    assert re.search(r"│ 1 +│ [0-9a-f]{12} │ (1\.000|0\.9\d\d) │", out), out  # the top row: the source, near-perfect score


def test_missing_long_and_unicode_query_names(coll: Path, tmp_path: Path, capsys) -> None:
    _, message = check(["search", "-c", str(coll), str(tmp_path / "nope 🎬.mp4")], capsys, {REFUSED})
    assert "nope 🎬.mp4" in message and "neither an existing file" in message
    long_name = str(tmp_path / ("é" * 300 + ".mp4"))  # longer than a file name may be: the OS refuses it
    _, message = check(["search", "-c", str(coll), long_name], capsys, {REFUSED, FAILED})
    assert "too long" in message.lower(), message


@pytest.mark.parametrize("ref", ["abc@", "@1-2", "ffff@5-2", "ffff@nan-inf", "zzzz@1-2", "ffff@1-2", "@", "ID@5-2",
                                 "ID@1000-2000", "ID@-1-2"])
def test_malformed_video_references(ref: str, coll: Path, video_id: str, capsys) -> None:
    ref = ref.replace("ID", video_id)
    for json_flag in ([], ["--json"]):
        _, message = check(["search", "-c", str(coll), ref, *json_flag], capsys, {REFUSED})
        assert repr(ref) in message or ref in message or "no video" in message, message


@pytest.mark.parametrize("argv", [
    ["-k", "0"], ["-k", "-3"], ["-k", "ten"], ["-k", "1.5"], ["--segment-k", "0"], ["--nprobe", "0"],
    ["--rerank-depth", "-1"], ["--rerank-candidates", "0"], ["--min-similarity", "nan"], ["--min-similarity", "2"],
    ["--par-threshold", "inf"], ["--rerank", "magic"], ["--min-similarity", "-1.5"],
])
def test_bad_search_options(argv: list[str], coll: Path, files, capsys) -> None:
    for json_flag in ([], ["--json"]):
        check(["search", "-c", str(coll), *argv, str(files["unicode"]), *json_flag], capsys, {USAGE})


def test_huge_k_returns_every_video_once(coll: Path, files, capsys) -> None:
    rc, out, err = run_main(["search", "-c", str(coll), "-k", str(10**12), "--json", str(files["unicode"])], capsys)
    assert rc == 0, err
    ids = [r["video_id"] for r in json.loads(out)["results"]]
    assert len(ids) == len(set(ids)) and 1 <= len(ids) <= 5  # the collection holds five videos


def test_huge_segment_k_is_clamped_to_the_collection(coll: Path, files, capsys) -> None:
    rc, out, err = run_main(["search", "-c", str(coll), "--segment-k", str(10**12), "--rerank-depth", str(10**12),
                             "--nprobe", str(10**12), "--json", str(files["unicode"])], capsys)
    assert rc == 0, (out, err)  # was a MemoryError (an internal error) before the engine clamped it (7289887)
    assert Path(json.loads(out)["results"][0]["path"]).name == "carphone_pristine.mp4"


# ---------------------------------------------------------------- index


@pytest.mark.parametrize("option", ["--fps", "--window", "--stride"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", ""])
def test_bad_index_rates(option: str, value: str, tmp_path: Path, files, capsys) -> None:
    obj, message = check(["index", "-c", str(tmp_path / "new"), option, value, "--json", str(files["unicode"])],
                         capsys, {USAGE})
    assert option in message and obj["error"] == "UsageError"
    assert not (tmp_path / "new").exists()  # refused before creating anything


def test_inconsistent_index_options_and_nothing_to_index(tmp_path: Path, files, capsys) -> None:
    _, message = check(["index", "-c", str(tmp_path / "new"), "--window", "1", "--stride", "5", str(files["unicode"])],
                       capsys, {REFUSED})
    assert "stride" in message and "window" in message
    _, message = check(["index", "-c", str(tmp_path / "new")], capsys, {REFUSED})
    assert "nothing to index" in message
    check(["index", "-c", str(tmp_path / "new"), "--encoder", "resnet", str(files["unicode"])], capsys, {USAGE})


def test_indexing_bad_files_is_partial_and_names_each_one(coll: Path, files, tmp_path: Path, capsys) -> None:
    batch = [files[n] for n in ("random", "text_mp4", "empty_mp4", "truncated", "header_only")]
    batch.append(tmp_path / "missing.mp4")
    rc, out, err = run_main(["index", "-c", str(coll), "--json", *map(str, batch)], capsys)
    assert rc == PARTIAL and "Traceback" not in err
    report = json.loads(out)
    assert report["summary"]["failed"] == len(batch) and report["summary"]["indexed"] == 0
    for f in report["files"]:
        assert f["status"] == "failed" and Path(f["path"]).name in f["error"], f
    rc, out, err = run_main(["index", "-c", str(coll), *map(str, batch)], capsys)  # human output: one line per file
    assert rc == PARTIAL and "Traceback" not in err
    assert sum("failed" in line for line in err.splitlines()) >= len(batch)


def test_collection_path_that_looks_like_markup(tmp_path: Path, footage, capsys) -> None:
    target = tmp_path / "[bold]coll[" / "]"  # "[/]" in the path: rich markup would raise MarkupError
    for json_flag in ([], ["--json"]):
        rc, out, err = run_main(["index", "-c", str(target), *json_flag, str(footage["carphone_pristine.mp4"])], capsys)
        assert rc == 0 and "Traceback" not in err, err
    assert "skipped" in out  # the second run (JSON) found it indexed


@pytest.fixture(scope="module")
def latin1_named_video(tmp_path_factory: pytest.TempPathFactory, footage) -> Path:
    folder = tmp_path_factory.mktemp("latin1")
    raw = os.fsencode(folder) + b"/caf\xe9 [red]x.mp4"  # Latin-1 bytes: not valid UTF-8
    shutil.copyfile(footage["carphone_pristine.mp4"], raw)
    return Path(os.fsdecode(raw))


def test_a_file_name_that_is_not_utf8_is_indexed_and_found(latin1_named_video: Path, tmp_path: Path,
                                                                   capsys) -> None:
    rc, out, err = run_main(["index", "-c", str(tmp_path / "c"), "--json", str(latin1_named_video.parent)], capsys)
    assert rc == 0 and "Traceback" not in err, out
    report = json.loads(out)  # printable JSON even for an undecodable name
    assert report["summary"]["indexed"] == 1 and report["files"][0]["path"] == str(latin1_named_video)
    rc, out, err = run_main(["index", "-c", str(tmp_path / "c"), str(latin1_named_video)], capsys)  # human output
    assert rc == 0 and "skipped" in err and "Traceback" not in err, err
    rc, out, err = run_main(["info", "-c", str(tmp_path / "c"), "--videos"], capsys)  # the rich table prints it
    assert rc == 0 and "Traceback" not in err, err
    rc, out, err = run_main(["info", "-c", str(tmp_path / "c"), "--json"], capsys)
    assert rc == 0 and Path(json.loads(out)["video_list"][0]["path"]).name.startswith("caf"), out
    rc, out, err = run_main(["search", "-c", str(tmp_path / "c"), "--json", "--no-insets", "--norm-beta", "0",
                             str(latin1_named_video)], capsys)
    assert rc == 0 and json.loads(out)["results"][0]["score"] > 0.99, err


def test_log_lines_carry_no_traceback_without_v() -> None:
    import logging

    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("vidsearch.collection", logging.ERROR, __file__, 1, "unexpected error on %s",
                                   ("x.mp4",), sys.exc_info())
    line = cli._LogFormatter(verbose=False).format(record)
    assert line == ("ERROR vidsearch.collection: unexpected error on x.mp4 (ValueError: bad | value; rerun with -v "
                    "for the traceback)")
    assert "Traceback" in cli._LogFormatter(verbose=True).format(record)


# ---------------------------------------------------------------- calibrate, remove, eval


@pytest.mark.parametrize("content", [None, b"", b"\x00\xff garbage", b"[1, 2]", b'{"methods": 5}', b"{}",
                                     b'{"methods": {"other:par": {}}}', b'{"methods": {"vidsearch-sscd:par": {}}}',
                                     b'{"methods": {"vidsearch-sscd:par": {"calibrated_threshold": "high"}}}',
                                     b'{"methods": {"vidsearch-sscd:par": {"calibrated_threshold": 7}}}'])
def test_calibrate_from_bad_results_json(content, coll: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_bytes(content)
    for json_flag in ([], ["--json"]):
        _, message = check(["calibrate", "-c", str(coll), "--from-eval", str(path), *json_flag], capsys, {REFUSED})
        assert "results.json" in message or "cosine" in message, message


def test_calibrate_needs_exactly_one_source(coll: Path, capsys) -> None:
    check(["calibrate", "-c", str(coll)], capsys, {REFUSED})
    check(["calibrate", "-c", str(coll), "--par-threshold", "0.5", "--from-eval", "x.json"], capsys, {REFUSED})
    check(["calibrate", "-c", str(coll), "--par-threshold", "3"], capsys, {REFUSED})
    check(["calibrate", "-c", str(coll), "--par-threshold", "nan"], capsys, {USAGE})


@pytest.mark.parametrize("video", ["0123456789ab", "", "*", "%", "../etc/passwd", "nope.mp4"])
def test_remove_unknown_videos(video: str, coll: Path, capsys) -> None:
    for json_flag in ([], ["--json"]):
        _, message = check(["remove", "-c", str(coll), video, *json_flag], capsys, {REFUSED})
    rc, out, _ = run_main(["info", "-c", str(coll), "--json"], capsys)
    assert rc == 0 and json.loads(out)["videos"] == 5  # nothing was removed


@pytest.mark.parametrize("argv", [
    ["neardup", "--methods", "bogus"], ["neardup", "--methods", "vidsearch-resnet"],
    ["neardup", "--methods", "vidsearch-sscd:magic"], ["neardup", "--methods", "vidsearch-sscd@pq"],
    ["neardup", "--methods", "exact-frame-scan-nope"], ["neardup", "--methods", ","],
    ["fashion", "--methods", "bogus"], ["neardup", "--size", "huge"], ["imagenet"], ["neardup", "--fps", "0"],
])
def test_eval_with_unknown_methods_fails_before_rendering(argv: list[str], tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    for json_flag in ([], ["--json"]):
        check(["eval", *argv, "--out", str(out_dir), *json_flag], capsys, {USAGE, REFUSED})
    assert not (out_dir / "data-small-seed0").exists()  # nothing was rendered


# ---------------------------------------------------------------- unexpected exceptions


def test_an_internal_error_is_one_line_and_the_traceback_needs_v(monkeypatch, coll: Path, capsys) -> None:
    def boom(args):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "cmd_info", boom)
    rc, out, err = run_main(["info", "-c", str(coll)], capsys)
    assert rc == FAILED and "Traceback" not in err
    assert err.strip() == "error: internal error (RuntimeError): boom | second line; rerun with -v for the traceback"
    rc, out, err = run_main(["info", "-c", str(coll), "--json"], capsys)
    assert rc == FAILED and json.loads(out) == {
        "error": "InternalError", "exception": "RuntimeError",
        "message": "internal error (RuntimeError): boom | second line; rerun with -v for the traceback"}
    for argv in (["-v", "info", "-c", str(coll)], ["info", "-v", "-c", str(coll)]):
        rc, out, err = run_main(argv, capsys)
        assert rc == FAILED and "Traceback" in err and 'raise RuntimeError("boom' in err
        assert err.strip().splitlines()[-1].startswith("error: internal error (RuntimeError)")


def test_os_errors_and_interrupts(monkeypatch, coll: Path, capsys) -> None:
    def denied(args):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(cli, "cmd_info", denied)
    _, message = check(["info", "-c", str(coll)], capsys, {FAILED})
    assert "Permission denied: /some/where" in message

    def interrupted(args):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    rc, _, err = run_main(["info", "-c", str(coll)], capsys)
    assert rc == 130 and "Traceback" not in err


# ---------------------------------------------------------------- as a user runs it


def test_the_installed_script_shows_no_traceback(coll: Path, files, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("vidsearch")
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    damaged = tmp_path / "damaged"
    shutil.copytree(coll, damaged)
    (damaged / "catalog.sqlite").write_bytes(os.urandom(4096))
    cases = [  # each run is a fresh interpreter (~2-5 s): a few representative ones
        (["search", "-c", str(coll), str(files["random"])], REFUSED),
        (["info", "-c", str(damaged)], REFUSED),
        (["calibrate", "-c", str(coll), "--from-eval", str(files["bad_json"])], REFUSED),
        (["index", "-c", str(tmp_path / "new"), "--fps", "nan", str(files["unicode"])], USAGE),
    ]
    for argv, code in cases:
        proc = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert len([line for line in proc.stderr.splitlines() if "error:" in line]) == 1, proc.stderr
