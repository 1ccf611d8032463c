"""Finding media files to index: folders expanded recursively, files identified by content hash."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from vidsearch.decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .asf .flv .f4v .3gp .3g2 .mpg .mpeg .m1v .m2v .vob .ts .mts .m2ts "
    ".ogv .ogg .rm .rmvb .swf .gif .mxf .dv .divx .y4m".split()
)
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


def iter_media_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Expand files and folders (recursively, following links but never a loop) into media files.

    Files named explicitly are always yielded (a bad one is reported later); files found in
    folders are yielded only when their ending is a known video or image ending.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            yield p
            continue
        stack = [p]
        while stack:
            d = stack.pop()
            try:
                st = d.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue  # symlink loop or a folder reached twice
            seen_dirs.add(key)
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as exc:
                log.warning("cannot list %s: %s", d, exc)
                continue
            subdirs = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=True):
                        subdirs.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=True) and Path(entry.name).suffix.lower() in MEDIA_EXTENSIONS:
                        yield Path(entry.path)
                except OSError:
                    continue
            stack.extend(reversed(subdirs))


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def path_text(path: str | os.PathLike[str]) -> str:
    """The absolute path as the catalogue stores it: text, with bytes that are not UTF-8 written as
    ``\\xNN`` escapes (SQLite text must be UTF-8; a Linux file name need not be). The same for a
    stored path and for a path given to look it up, so lookups by path keep working."""
    return os.fsencode(Path(path).resolve()).decode("utf-8", "backslashreplace")
