"""Peer methods: other open-source video-hashing libraries behind the ``RetrievalMethod`` interface,
so the benchmarks measure them in the same run as vidsearch.

Peers (name -> library):

- ``perception-tmkl2``: Thorn's ``perception`` (0.9.3), ``perception.hashers.TMKL2`` over its
  ``PHashF`` frame hasher (16x16 DCT, 15 fps). Scores are ``1 - TMKL2.compute_distance``, i.e. the
  TMK level-2 kernel score at time offset 0 (about 1 for the same video, near 0 for unrelated ones).
  ``PHashF`` returns None for a uniform (blank) frame, which makes TMKL2 crash; the wrapper's frame
  hasher gives such a frame an all-zero feature instead, so it adds nothing to the hash.
- ``tmkpy``: Meedan's SWIG bindings (0.1.1) of Facebook's TMK+PDQF C++ code. Each video is hashed
  by piping it through an ffmpeg binary; scores are TMK level-2 scores
  (``TMKFeatureVectors.computeLevel2Score``, 1.0 for the same video).
- ``videohash``: ``videohash`` (3.0.1): a 64-bit wavelet hash of a collage of 1 frame/s plus
  dominant colours. Scores are ``1 - hamming distance / 64``. It calls Pillow's removed
  ``Image.ANTIALIAS``; an alias to ``Image.LANCZOS`` is added before it is imported.

None of them localises: every ``Prediction`` has ``ref_range`` and ``query_range`` None. All three
score every reference against the query (an exact scan); ``query`` returns the best ``k``.

Installation. ``bash scripts/install-peers.sh .venv`` installs all three into the main venv
(none of them clashes with vidsearch's numpy 2.x or Pillow 13, so no separate venv or subprocess
worker is needed; they run in-process):

- perception: the Makefile already installs ``perception==0.9.3`` with ``--no-deps`` (it pins
  ``rich<14``, which vidsearch does not need); the script adds what ``perception.hashers`` imports:
  ``opencv-contrib-python-headless`` (4.x; perception requires <5), ``tqdm``, ``validators`` and
  ``PyWavelets`` (scipy, numpy and Pillow are already there). Videos are read by OpenCV's own
  bundled FFmpeg, no binary needed.
- tmkpy: built from its sdist; it needs ``g++``, ``make`` and SWIG. The script takes SWIG from
  PyPI's ``swig`` wheel, installed into a throw-away folder for the build only (no apt needed).
- ffmpeg binary for tmkpy and videohash: the one inside PyPI's ``imageio-ffmpeg``
  (``imageio_ffmpeg.get_ffmpeg_exe()``; ``IMAGEIO_FFMPEG_EXE`` overrides it); if that package is
  missing, an ``ffmpeg`` on ``PATH``. Nothing is ever downloaded at run time.
- videohash: installed with ``--no-deps`` plus ``ImageHash`` and ``imagedominantcolor``; its
  ``yt-dlp`` requirement is left out on purpose (it is only used to download URLs, never here).
  videohash finds ffmpeg with ``shutil.which``; the wrapper points those look-ups (in
  ``videohash.framesextractor`` and ``videohash.videoduration``) at the ffmpeg above.

No shell ever sees a file name. tmkpy and videohash run ffmpeg through a shell command line built
from the paths they are given (tmkpy's C++ ``popen``; videohash's ``Popen(..., shell=True)`` with
the name in double quotes, and the copy it hashes keeps the original's "extension", everything
after the last dot). So a file named ``x.mp4";touch pwned;"`` would run ``touch``. The wrappers
hand both libraries only generated names: a link (or copy) of the video called ``input.<ext>``
(``ext`` letters and digits only, else ``bin``) and a link to ffmpeg called ``ffmpeg``, inside a
private temporary folder whose path is checked to hold nothing a shell interprets.

``available_peers()`` says which peers can run here (and why not); ``make_peer(name)`` builds one.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, VidsearchError
from vidsearch.evaluate.methods import Prediction, Reference, RetrievalMethod

INSTALL_HINT = "run 'bash scripts/install-peers.sh .venv'"
LOG = logging.getLogger(__name__)


class PeerError(VidsearchError, RuntimeError):
    """A peer library is missing or failed on a video."""


# ---------------------------------------------------------------- shared helpers


def ffmpeg_exe() -> str | None:
    """The ffmpeg binary peers call: imageio-ffmpeg's bundled one (or its ``IMAGEIO_FFMPEG_EXE``),
    else ``ffmpeg`` on PATH; None if neither is an executable file."""
    candidates: list[str | None] = []
    try:
        import imageio_ffmpeg

        candidates.append(str(imageio_ffmpeg.get_ffmpeg_exe()))
    except Exception:  # noqa: BLE001 - not installed, or its binary is missing
        pass
    candidates.append(shutil.which("ffmpeg"))
    return next((c for c in candidates if c and shutil.which(c)), None)


@contextmanager
def _stderr_to_file() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 (C/C++ code and child processes write there) to a temp file for the
    duration; yields a function returning what was written so far."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.seek(0)
            return tmp.read().decode("utf-8", "replace")

        try:
            yield read
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# Characters a POSIX shell takes literally, inside or outside quotes.
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./+-]+")


class _ShellSafeNames:
    """A private temporary folder of links with generated, shell-inert names, for libraries that
    build shell command lines from the paths they are given."""

    def __init__(self, peer: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"vidsearch-peer-{peer}-")
        self.folder = Path(self._tmp.name)
        if not _SHELL_SAFE.fullmatch(str(self.folder)):
            self._tmp.cleanup()
            raise PeerError(f"{peer}: the temporary folder {self.folder} has characters a shell would interpret; "
                            "set TMPDIR to a plain path (letters, digits, _ . / + -)")
        self._count = 0

    def link(self, target: str | os.PathLike[str], name: str) -> Path:
        """``folder/name`` pointing at ``target`` (a symbolic link, else a hard link, else a copy)."""
        out = self.folder / name
        out.unlink(missing_ok=True)
        target = Path(target).resolve()
        try:
            out.symlink_to(target)
        except OSError:
            try:
                os.link(target, out)
            except OSError:
                shutil.copyfile(target, out)
        return out

    @contextmanager
    def video(self, path: Path) -> Iterator[Path]:
        """A shell-inert name for the video ``path``, removed afterwards."""
        ext = path.suffix[1:].lower()
        self._count += 1
        out = self.link(path, f"input-{self._count}.{ext if re.fullmatch(r'[a-z0-9]{1,8}', ext) else 'bin'}")
        try:
            yield out
        finally:
            out.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self._tmp.cleanup()


def _rank(ref_ids: list[str], scores: list[float], k: int) -> list[Prediction]:
    """The ``k`` best references, highest score first (ties keep indexing order)."""
    order = sorted(range(len(ref_ids)), key=lambda i: -scores[i])
    return [Prediction(ref_ids[i], float(scores[i])) for i in order[: max(k, 0)]]


class _HashPeer:
    """Common shape: one hash per reference, an exact scan of all of them per query."""

    name: str

    def __init__(self) -> None:
        self._ref_ids: list[str] = []
        self._hashes: list[Any] = []
        self.timings: dict[str, float] = {"index_seconds": 0.0, "query_seconds": 0.0}

    def _hash(self, path: Path) -> Any:
        raise NotImplementedError

    def _score(self, query_hash: Any, ref_hash: Any) -> float:
        raise NotImplementedError

    def _hash_checked(self, path: Path, role: str) -> Any:
        path = Path(path)
        if not path.is_file():
            raise PeerError(f"{self.name}: {role} {path} does not exist; expected a video file.")
        t0 = time.perf_counter()
        out = self._hash(path)
        LOG.debug("%s: hashed %s %s in %.2f s", self.name, role, path.name, time.perf_counter() - t0)
        return out

    def index(self, references: list[Reference]) -> None:
        t0 = time.perf_counter()
        for ref in references:
            self._hashes.append(self._hash_checked(ref.path, f"reference {ref.ref_id!r}"))
            self._ref_ids.append(ref.ref_id)
        self.timings["index_seconds"] += time.perf_counter() - t0

    def query(self, path: Path, k: int) -> list[Prediction]:
        if not self._hashes:
            raise PeerError(f"{self.name}: no reference indexed; call index() before query().")
        t0 = time.perf_counter()
        q = self._hash_checked(path, "query")
        scores = [self._score(q, h) for h in self._hashes]
        self.timings["query_seconds"] += time.perf_counter() - t0
        return _rank(self._ref_ids, scores, k)

    def close(self) -> None:
        self._ref_ids.clear()
        self._hashes.clear()


# ---------------------------------------------------------------- perception TMKL2


def _perception_tmkl2(frames_per_second: int) -> Any:
    """perception's TMKL2 with a PHashF frame hasher that maps a blank frame to a zero feature."""
    from perception.hashers import TMKL2
    from perception.hashers.image.phash import PHashF

    class BlankSafePHashF(PHashF):
        """PHashF whose uniform frames (all-zero DCT, where PHashF returns None) hash to zeros."""

        def _dct_to_hash(self, dct: NDArray[np.float64]) -> NDArray[np.float32]:
            vector = super()._dct_to_hash(dct)
            if vector is None:
                return np.zeros(self.hash_length, dtype=np.float32)
            return vector

    # TMKL2's own default frame hasher, made blank-safe.
    frame_hasher = BlankSafePHashF(hash_size=16, exclude_first_term=True, freq_shift=1)
    return TMKL2(frame_hasher=frame_hasher, frames_per_second=frames_per_second)


class PerceptionTMKL2(_HashPeer):
    """perception's TMK L2 video hash (PHashF frames at ``frames_per_second``); score =
    1 - the hasher's distance (its level-2 TMK score at offset 0)."""

    def __init__(self, name: str = "perception-tmkl2", frames_per_second: int = 15) -> None:
        super().__init__()
        self.name = name
        try:
            self._hasher = _perception_tmkl2(frames_per_second)
        except ImportError as exc:
            raise PeerError(f"{name}: perception cannot be imported ({exc}); {INSTALL_HINT}.") from exc

    def _hash(self, path: Path) -> NDArray[np.float32]:
        # use_queue=False: read in this thread, so a read error raises here instead of ending a
        # background thread (and the hash) early; OpenCV's warnings go to the error message.
        with _stderr_to_file() as stderr:
            try:
                vector = self._hasher.compute(str(path), hash_format="vector", use_queue=False)
            except Exception as exc:  # noqa: BLE001 - perception raises bare ValueError/OSError/cv2.error
                log = " ".join(stderr().split())
                raise PeerError(f"{self.name}: could not hash {path}: {exc} {log}".rstrip()) from exc
        if vector is None:
            raise PeerError(f"{self.name}: could not hash {path}: OpenCV read no frame from it.")
        return np.asarray(vector, dtype=np.float32)

    def _score(self, query_hash: NDArray[np.float32], ref_hash: NDArray[np.float32]) -> float:
        distance = self._hasher.compute_distance(query_hash, ref_hash)
        return 1.0 - float(np.ravel(distance)[0])


# ---------------------------------------------------------------- tmkpy (TMK+PDQF)


class TmkpyTMK(_HashPeer):
    """Facebook's TMK+PDQF (C++, via tmkpy), hashed through an ffmpeg pipe at 15 fps;
    score = TMK level-2 score (1.0 for the same video)."""

    def __init__(self, name: str = "tmkpy", ffmpeg: str | None = None) -> None:
        super().__init__()
        self.name = name
        try:
            import tmkpy
        except ImportError as exc:
            raise PeerError(f"{name}: tmkpy cannot be imported ({exc}); {INSTALL_HINT}.") from exc
        self._tmkpy = tmkpy
        exe = ffmpeg or ffmpeg_exe()
        if exe is None:
            raise PeerError(f"{name}: no ffmpeg binary (pip 'imageio-ffmpeg' or ffmpeg on PATH); {INSTALL_HINT}.")
        self._names = _ShellSafeNames(name)
        self._ffmpeg = str(self._names.link(exe, "ffmpeg"))

    def _hash(self, path: Path) -> Any:
        # tmkpy builds a shell command line from both strings (popen): it only ever sees generated names
        # (quoted as well, which changes nothing for them).
        with self._names.video(path) as safe, _stderr_to_file() as stderr:
            fv = self._tmkpy.hashVideo(shlex.quote(str(safe)), shlex.quote(self._ffmpeg))
            log = stderr().replace(str(safe), str(path))
        # hashVideo drops the C++ return code; a failure shows as "pytmk: ..." lines or no frames.
        failed = [line for line in log.splitlines() if line.startswith("pytmk:") or "pclose" in line]
        if failed or fv.getFrameFeatureCount() == 0:
            last = log.strip().splitlines()[-1:]
            detail = "; ".join(failed or last) or "ffmpeg decoded no frame"
            raise PeerError(f"{self.name}: could not hash {path}: {detail}")
        return fv

    def _score(self, query_hash: Any, ref_hash: Any) -> float:
        return float(self._tmkpy.TMKFeatureVectors.computeLevel2Score(query_hash, ref_hash))

    def close(self) -> None:
        super().close()
        self._names.cleanup()


# ---------------------------------------------------------------- videohash


def _import_videohash(ffmpeg: str) -> Any:
    """Import videohash with its two run-time fixes: Pillow's ``Image.ANTIALIAS`` alias and its
    ``which('ffmpeg')`` look-ups pointed at ``ffmpeg``."""
    from PIL import Image

    if not hasattr(Image, "ANTIALIAS"):
        Image.ANTIALIAS = Image.LANCZOS  # type: ignore[attr-defined]  # removed in Pillow 10
    import videohash
    import videohash.framesextractor
    import videohash.videoduration

    def which(cmd: str, *args: Any, **kwargs: Any) -> str | None:
        return ffmpeg if cmd == "ffmpeg" else shutil.which(cmd, *args, **kwargs)

    videohash.framesextractor.which = which
    videohash.videoduration.which = which
    return videohash


class VideoHashPeer(_HashPeer):
    """videohash's 64-bit collage hash (1 frame/s); score = 1 - hamming distance / 64."""

    def __init__(self, name: str = "videohash", ffmpeg: str | None = None, frame_interval: float = 1) -> None:
        super().__init__()
        self.name = name
        ffmpeg = ffmpeg or ffmpeg_exe()
        if ffmpeg is None:
            raise PeerError(f"{name}: no ffmpeg binary (pip 'imageio-ffmpeg' or ffmpeg on PATH); {INSTALL_HINT}.")
        self._names = _ShellSafeNames(name)
        try:
            self._videohash = _import_videohash(str(self._names.link(ffmpeg, "ffmpeg")))
        except ImportError as exc:
            self._names.cleanup()
            raise PeerError(f"{name}: videohash cannot be imported ({exc}); {INSTALL_HINT}.") from exc
        self.frame_interval = frame_interval

    def _hash(self, path: Path) -> NDArray[np.bool_]:
        # videohash copies the video, its frames and collage under storage_path (a path ending in
        # a separator, or it says the folder does not exist); each call gets its own, removed after.
        # It runs ffmpeg through a shell with the copy's path (whose "extension" it takes from the
        # name it is given): it only ever sees a generated name in a checked folder.
        work = tempfile.mkdtemp(dir=self._names.folder, prefix="work-")
        try:
            # imagedominantcolor calls Image.getdata, deprecated in Pillow 13 (removed in 14).
            with self._names.video(path) as safe, _stderr_to_file(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                vh = self._videohash.VideoHash(
                    path=str(safe), storage_path=work + os.sep, frame_interval=self.frame_interval
                )
            return np.array([bool(b) for b in vh.bitlist], dtype=bool)
        except Exception as exc:  # noqa: BLE001 - videohash raises its own tree and bare errors
            detail = " ".join(str(exc).split())[:500]
            raise PeerError(f"{self.name}: could not hash {path}: {detail}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _score(self, query_hash: NDArray[np.bool_], ref_hash: NDArray[np.bool_]) -> float:
        return 1.0 - float(np.count_nonzero(query_hash != ref_hash)) / query_hash.size

    def close(self) -> None:
        super().close()
        self._names.cleanup()


# ---------------------------------------------------------------- registry

PEERS: dict[str, type[_HashPeer]] = {
    "perception-tmkl2": PerceptionTMKL2,
    "tmkpy": TmkpyTMK,
    "videohash": VideoHashPeer,
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _why_unavailable(name: str) -> str | None:
    try:
        if name == "perception-tmkl2":
            _perception_tmkl2(15)
        elif name == "tmkpy":
            import tmkpy  # noqa: F401
        elif name == "videohash":
            import imagedominantcolor  # noqa: F401
            import imagehash  # noqa: F401
            import videohash  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        return f"{_first_line(exc)} ({INSTALL_HINT})"
    if name in ("tmkpy", "videohash") and ffmpeg_exe() is None:
        return f"no ffmpeg binary: pip 'imageio-ffmpeg' or ffmpeg on PATH ({INSTALL_HINT})"
    return None


def available_peers() -> dict[str, str | None]:
    """Every peer's name -> None if it can run here, else a one-line reason why not."""
    return {name: _why_unavailable(name) for name in PEERS}


def make_peer(name: str, **kwargs: Any) -> RetrievalMethod:
    """A new, empty peer by name (see ``PEERS``); keyword arguments go to its constructor."""
    if name not in PEERS:
        raise ConfigError(f"Unknown peer {name!r}; expected one of {sorted(PEERS)}.")
    return PEERS[name](**kwargs)
