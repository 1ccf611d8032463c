"""A VSC 2022-style copy-detection data set built from real imagery that ships in packages.

**References** (``R000000.mp4`` ...): windows of the real sample footage (``samples.reference_footage``,
disjoint windows, so that look-alikes from one scene compete) and videos animated from real
photographs (Debian wallpaper packages when installed, plus a list of natural photographs in Debian
``opencv-doc``): each shot is a slow pan and zoom inside one cell of a photograph (cells without detail are
left out), a reference has 1 or 2 shots (a cut), and several references share a photograph (different cells of it).

**Queries** (``Q000000.mp4`` ...): unrelated footage (held-out sample videos and photographs that
no reference uses), into which, for about two thirds of the queries, 1-3 copied
segments of 2-15 s of distinct references are inserted at random offsets, each through a random
chain of edits: temporal (speed 0.5-2x, reversal, frame-rate change), per frame (crop and scale,
flip, rotation, brightness/contrast/gamma, saturation, blur, noise, text and shape overlays), and
a layout (full frame, picture-in-picture at 25-50 % of the width, side-by-side or vertical stacking
with the background). Each query is encoded at a random low bitrate.

**Ground truth**: one row per copied segment, ``query_id, ref_id, query_start, query_end,
ref_start, ref_end`` in seconds (VSC's names; ids ``Q%06d``/``R%06d`` as the reference scorer
expects). Every video is written at :data:`FPS` frames/s and :data:`WIDTH` x :data:`HEIGHT`, so
frame ``k`` is shown at ``k / FPS`` s; a reversed copy keeps the time ranges of its source.

**Source sides** (``VSCDataConfig.sources``): every sample video and every photograph family falls on a fixed
side, ``train`` (about a third) or ``test``, by a hash of its name (:func:`source_side`); a data set built with
``sources="train"`` shares no imagery (references, copies or unrelated footage) with one built with
``sources="test"``, whatever their seeds, so a model trained on the first is scored on imagery it never saw.
``"all"`` (the default, the benchmark's data sets) uses both sides.

Deterministic: the same :class:`VSCDataConfig` (size, seed, edits, the installed photographs)
gives the same bytes (x264 single-threaded, its assembly capped at AVX2 on an AVX-512 CPU:
``edits.x264_options``; every random draw from ``numpy``'s generator seeded
by (seed, kind, index)). The data set is cached under ``$VIDSEARCH_CACHE/vsc/<key>`` (see
:func:`build_dataset`) and rebuilt only if its manifest differs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError
from vidsearch.evaluate import edits, samples
from vidsearch.evaluate.samples import MissingDataError
from vidsearch.evaluate.vsc_metrics import Match, read_matches, write_matches

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

FPS = 10
"""Frame rate of every reference and query."""
WIDTH, HEIGHT = 320, 180
"""Frame size of every reference and query."""
FORMAT_VERSION = 1
"""Bumped whenever the same config would give different videos."""

WALLPAPER_ROOTS = ("/usr/share/backgrounds", "/usr/share/wallpapers")
"""Where Debian's wallpaper packages (gnome-, mate-backgrounds, ukui-, plasma-workspace-wallpapers) install."""
OPENCV_PHOTOS = ("aero1.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "Blender_Suzanne1.jpg",
                 "box_in_scene.png", "building.jpg", "butterfly.jpg", "ela_original.jpg", "fruits.jpg",
                 "graf1.png", "home.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "messi5.jpg",
                 "orange.jpg", "pca_test1.jpg", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg",
                 "starry_night.jpg", "stuff.jpg", "aloeL.jpg")
"""Natural photographs in opencv-doc's examples/data: one of each stereo or sequence pair, no synthetic images."""
EXCLUDED_FOOTAGE = ("carphone_distorted.mp4", "v2.m4v", "v2s.mov")
"""Sample videos that show what another shows (a distorted carphone; v2 and v2s, the skyline of v1 moments later)."""
MIN_PHOTO_SIDE = 300
SOURCE_SIDES = ("all", "train", "test")
"""Values of ``VSCDataConfig.sources``."""
TRAIN_SHARE = 1 / 3
"""About this share of the sample videos and photograph families is on the ``train`` side."""


class DatasetSize(str, Enum):
    """How big a data set to build."""

    TINY = "tiny"  # unit tests: seconds
    SMALL = "small"  # CI: a few minutes
    FULL = "full"  # the benchmark: >= 500 references


@dataclass(frozen=True)
class SizeSpec:
    """Counts and durations (seconds) of one size; ``query_seconds`` is the unrelated footage of a query,
    to which the copied segments are added."""

    references: int
    queries: int
    reference_seconds: tuple[float, float]
    query_seconds: tuple[float, float]


SIZES = {
    DatasetSize.TINY: SizeSpec(references=5, queries=5, reference_seconds=(4.0, 8.0), query_seconds=(6.0, 10.0)),
    DatasetSize.SMALL: SizeSpec(references=60, queries=45, reference_seconds=(6.0, 20.0),
                                query_seconds=(10.0, 30.0)),
    DatasetSize.FULL: SizeSpec(references=520, queries=400, reference_seconds=(6.0, 30.0),
                               query_seconds=(10.0, 45.0)),
}


@dataclass(frozen=True)
class VSCDataConfig:
    """What to build. ``max_edits=0`` inserts plain copies (no edit, full frame), for tests."""

    size: DatasetSize = DatasetSize.SMALL
    seed: int = 0
    max_edits: int = 3
    no_copy_fraction: float = 1 / 3
    photo_roots: tuple[str, ...] = WALLPAPER_ROOTS
    sources: str = "all"  # "all", or one side of the fixed split of the source imagery: "train" or "test"

    def __post_init__(self) -> None:
        if not isinstance(self.size, DatasetSize):
            raise ConfigError(f"VSCDataConfig.size must be a DatasetSize ({', '.join(s.value for s in DatasetSize)}), "
                              f"got {self.size!r}; use DatasetSize(value)")
        if not 0 <= self.max_edits <= 8:
            raise ConfigError(f"VSCDataConfig.max_edits must be in [0, 8], got {self.max_edits}")
        if not 0.0 <= self.no_copy_fraction < 1.0:
            raise ConfigError(f"VSCDataConfig.no_copy_fraction must be in [0, 1), got {self.no_copy_fraction}")
        if self.sources not in SOURCE_SIDES:
            raise ConfigError(f"VSCDataConfig.sources must be one of {', '.join(SOURCE_SIDES)}, got {self.sources!r}")


@dataclass(frozen=True)
class CopyInfo:
    """One copied segment of a query, with the edits it went through (for per-edit breakdowns)."""

    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    edits: tuple[str, ...]
    layout: str


@dataclass(frozen=True)
class VSCDataset:
    """A built data set: ``root/references/*.mp4``, ``root/queries/*.mp4``, ``root/ground_truth.csv``."""

    root: Path
    config: VSCDataConfig
    reference_ids: tuple[str, ...]
    query_ids: tuple[str, ...]
    ground_truth: tuple[Match, ...]
    copies: dict[str, tuple[CopyInfo, ...]] = field(repr=False)
    sources: dict[str, str] = field(repr=False)  # reference id -> where its imagery comes from

    def reference_path(self, ref_id: str) -> Path:
        return self.root / "references" / f"{ref_id}.mp4"

    def query_path(self, query_id: str) -> Path:
        return self.root / "queries" / f"{query_id}.mp4"


# --- source material ---------------------------------------------------------------------------

Frames = list[NDArray[np.uint8]]


@dataclass(frozen=True)
class _FootageWindow:
    path: str
    start: float
    end: float


@dataclass(frozen=True)
class _PhotoShot:
    path: str
    cell: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the photograph
    seconds: float


def _plasma_picture(path: Path) -> str | None:
    """The picture's folder of a plasma wallpaper (``<Picture>/contents/images/<WxH>.png``: its files are named by
    size), else None."""
    return path.parts[path.parts.index("contents") - 1] if "contents" in path.parts else None


def _photo_family(path: Path) -> str:
    """A key shared by resolution, light/dark and numbered variants of one picture."""
    picture = _plasma_picture(path)
    if picture is not None:
        return picture.lower()
    stem = path.stem.lower()
    return re.sub(r"([-_ ]?(\d+x\d+|\d+|light|dark|d|l|no-logo))+$", "", stem) or stem


def find_photos(roots: tuple[str, ...] = WALLPAPER_ROOTS) -> list[Path]:
    """Real photographs installed here: the largest file of each picture under ``roots``, plus opencv-doc's.

    Sorted by path, so the list (and the data set) depends only on what is installed.
    """
    from PIL import Image

    best: dict[str, tuple[int, Path]] = {}
    candidates: list[Path] = []
    for root in roots:
        if Path(root).is_dir():
            candidates += [p for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    data = samples.OPENCV_DOC / "examples" / "data"
    candidates += [data / name for name in OPENCV_PHOTOS if (data / name).is_file()]
    for p in sorted(candidates):
        try:
            with Image.open(p) as img:
                w, h = img.size
        except (OSError, ValueError):
            continue
        if min(w, h) < MIN_PHOTO_SIDE:
            continue
        key = _photo_family(p)
        if key not in best or w * h > best[key][0]:
            best[key] = (w * h, p)
    return sorted(p for _, p in best.values())


def source_side(key: str) -> str:
    """``"train"`` or ``"test"``: the fixed side of a sample video (its file name) or of a photograph family
    (:func:`_photo_family`), from a hash of the name, so it does not depend on what else is installed."""
    h = int(hashlib.sha256(f"vidsearch-vsc-sources:{key}".encode()).hexdigest()[:8], 16)
    return "train" if h < TRAIN_SHARE * 2**32 else "test"


def _on_side(sources: str, key: str) -> bool:
    return sources == "all" or source_side(key) == sources


def _footage() -> list[tuple[Path, float]]:
    """The sample footage with durations, copies of other samples left out."""
    import av

    out = []
    for p in samples.reference_footage():
        if p.name in EXCLUDED_FOOTAGE:
            continue
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            d = float(s.duration * s.time_base) if s.duration and s.time_base else (c.duration or 0) / 1e6
        out.append((p, d))
    return sorted(out, key=lambda x: x[0].name)


def _fit(frame: NDArray[np.uint8], width: int = WIDTH, height: int = HEIGHT) -> NDArray[np.uint8]:
    """Centre-crop to the aspect ratio of (width, height), then resize."""
    from PIL import Image

    h, w = frame.shape[:2]
    target = width / height
    if w / h > target:
        cw, ch = int(round(h * target)), h
    else:
        cw, ch = w, int(round(w / target))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    img = Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return np.asarray(img)


def _render_footage(win: _FootageWindow) -> Frames:
    frames, fps = edits.decode_rgb(win.path, win.start, win.end, max_width=640, max_fps=FPS)
    if not frames:
        raise MissingDataError(f"no frame decoded from {win.path} in [{win.start}, {win.end}) s; reinstall it "
                               f"({samples.install_hint(Path(win.path).name)})")
    frames, _ = edits.frame_rate(FPS)(frames, fps)
    return [_fit(f) for f in frames]


@functools.lru_cache(maxsize=32)
def _load_photo(path: str) -> PILImage:
    """A photograph as RGB, at most 1600 px wide or high (a few MB; the last 32 kept)."""
    from PIL import Image

    with Image.open(path) as src:
        src.draft("RGB", (1600, 1600))  # JPEG: decode at a reduced scale
        img = src.convert("RGB")
    img.thumbnail((1600, 1600))
    return img


def _render_photo_shot(shot: _PhotoShot, rng: np.random.Generator) -> Frames:
    """A pan and zoom inside one cell of a photograph."""
    from PIL import Image

    img = _load_photo(shot.path)
    x0, y0, x1, y1 = shot.cell
    cw, ch = (x1 - x0) * img.width, (y1 - y0) * img.height
    n = max(1, int(round(shot.seconds * FPS)))
    # Camera window: 16:9, 55-95 % of the cell's limiting side, moving and zooming linearly.
    aspect = WIDTH / HEIGHT
    full_w = min(cw, ch * aspect)
    z0, z1 = rng.uniform(0.55, 0.95, size=2)
    c0, c1 = rng.uniform(0, 1, size=2), rng.uniform(0, 1, size=2)
    out = []
    for i in range(n):
        a = i / max(1, n - 1)
        z = z0 + (z1 - z0) * a
        ww, wh = full_w * z, full_w * z / aspect
        cx = x0 * img.width + (cw - ww) * (c0[0] + (c1[0] - c0[0]) * a)
        cy = y0 * img.height + (ch - wh) * (c0[1] + (c1[1] - c0[1]) * a)
        box = (cx, cy, cx + ww, cy + wh)
        out.append(np.asarray(img.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR, box=box)))
    return out


MIN_CELL_DETAIL = 4.0
"""Least mean absolute gradient (grey levels per pixel, on a 64 x 64 thumbnail) of a usable photograph cell."""


def _cells(path: Path) -> list[tuple[float, float, float, float]]:
    """Disjoint cells of a photograph (k x k, k = short side / 300 px, from 2 to 6) that
    have detail: flat gradients and sky, which look alike from one wallpaper to the next, are left out."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        img.draft("L", (512, 512))
        grey = img.convert("L")
    k = max(2, min(6, min(w, h) // 300))
    out = []
    for j in range(k):
        for i in range(k):
            cell = (i / k, j / k, (i + 1) / k, (j + 1) / k)
            box = (cell[0] * grey.width, cell[1] * grey.height, cell[2] * grey.width, cell[3] * grey.height)
            g = np.asarray(grey.resize((64, 64), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
            detail = float(np.mean(np.abs(np.diff(g, axis=0))) + np.mean(np.abs(np.diff(g, axis=1))))
            if detail >= MIN_CELL_DETAIL:
                out.append(cell)
    return out


# --- edits not in edits.py ---------------------------------------------------------------------


def _rotate(angle: float) -> edits.Edit:
    from PIL import Image

    return edits._pil(lambda img: img.rotate(angle, resample=Image.Resampling.BILINEAR))


def _saturation(factor: float) -> edits.Edit:
    from PIL import ImageEnhance

    return edits._pil(lambda img: ImageEnhance.Color(img).enhance(factor))


def _shapes(rng: np.random.Generator) -> edits.Edit:
    """Two to five filled, half-transparent rectangles and ellipses at fixed places."""
    from PIL import Image, ImageDraw

    n = int(rng.integers(2, 6))
    specs = [(bool(rng.integers(2)), rng.uniform(0, 0.8, 2), rng.uniform(0.08, 0.3, 2),
              tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(120, 230)),)) for _ in range(n)]

    def fn(img: Image.Image) -> Image.Image:
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for ellipse, (fx, fy), (fw, fh), colour in specs:
            box = (fx * img.width, fy * img.height, (fx + fw) * img.width, (fy + fh) * img.height)
            (draw.ellipse if ellipse else draw.rectangle)(box, fill=colour)
        return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")

    return edits._pil(fn)


def _frame_rate_change(new_fps: float) -> edits.Edit:
    """Drop (or repeat) frames as a ``new_fps`` re-encode would, then back to the query's rate."""
    down, up = edits.frame_rate(new_fps), edits.frame_rate(FPS)

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        return up(*down(frames, fps))

    return edit


def _random_chain(rng: np.random.Generator, max_edits: int, seed: int) -> tuple[list[tuple[str, edits.Edit]], str]:
    """Temporal edits, then per-frame edits; and a layout name."""
    if max_edits == 0:
        return [], "full"
    chain: list[tuple[str, edits.Edit]] = []
    if rng.random() < 0.3:
        f = float(np.round(rng.uniform(0.5, 2.0), 2))
        chain.append((f"speed({f})", edits.speed(f)))
    if rng.random() < 0.15:
        chain.append(("reverse", edits.reverse()))
    if rng.random() < 0.15:
        new = float(rng.choice([3.0, 5.0, 7.5]))
        chain.append((f"frame_rate({new})", _frame_rate_change(new)))
    makers: list[Callable[[], tuple[str, edits.Edit]]] = [
        lambda: (lambda c, dx, dy: (f"crop({c:.2f})", edits.crop(c, dx, dy)))(
            rng.uniform(0.55, 0.9), rng.uniform(-1, 1), rng.uniform(-1, 1)),
        lambda: ("hflip", edits.hflip()),
        lambda: (lambda a: (f"rotate({a:.0f})", _rotate(a)))(float(rng.choice([-1, 1]) * rng.uniform(5, 25))),
        lambda: (lambda b, c, g: (f"photometric({b:.2f},{c:.2f},{g:.2f})", edits.photometric(b, c, g)))(
            rng.uniform(-0.2, 0.2), rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.6)),
        lambda: (lambda s: (f"saturation({s:.2f})", _saturation(s)))(rng.uniform(0.0, 2.0)),
        lambda: (lambda r: (f"blur({r:.1f})", edits.blur(r)))(rng.uniform(1.0, 4.0)),
        lambda: (lambda s: (f"noise({s:.0f})", edits.noise(s, seed)))(rng.uniform(5, 25)),
        lambda: ("text", edits.text_overlay(f"LIVE {int(rng.integers(1000, 9999))} news", rng.uniform(0.08, 0.15))),
        lambda: ("shapes", _shapes(rng)),
    ]
    k = int(rng.integers(1, max_edits + 1))
    for i in rng.choice(len(makers), size=min(k, len(makers)), replace=False):
        chain.append(makers[int(i)]())
    layout = str(rng.choice(["full", "full", "pip", "hstack", "vstack"]))
    return chain, layout


def _place(copy: Frames, background: Frames, layout: str, rng: np.random.Generator) -> tuple[Frames, str]:
    """Put the edited copy over ``background`` (same length): full frame, PiP or stacked. Returns frames, layout."""
    from PIL import Image

    if layout == "full":
        return [_fit(f) for f in copy], "full"
    out = []
    if layout == "pip":
        scale = float(rng.uniform(0.25, 0.5))
        w = int(WIDTH * scale)
        h = min(HEIGHT, int(round(w * copy[0].shape[0] / copy[0].shape[1])))
        x, y = int(rng.integers(0, WIDTH - w + 1)), int(rng.integers(0, HEIGHT - h + 1))
        for f, bg in zip(copy, background):
            canvas = Image.fromarray(bg)
            canvas.paste(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR), (x, y))
            out.append(np.asarray(canvas))
        return out, f"pip({scale:.2f})"
    first = bool(rng.integers(2))  # copy on the left/top or right/bottom
    hw, hh = (WIDTH // 2, HEIGHT) if layout == "hstack" else (WIDTH, HEIGHT // 2)
    # The whole copy, scaled to fit its half (not cropped, black bars), the other footage in the other half.
    scale = min(hw / copy[0].shape[1], hh / copy[0].shape[0])
    w, h = max(2, int(copy[0].shape[1] * scale)), max(2, int(copy[0].shape[0] * scale))
    axis = 1 if layout == "hstack" else 0
    for f, bg in zip(copy, background):
        half = Image.new("RGB", (hw, hh))
        half.paste(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR), ((hw - w) // 2, (hh - h) // 2))
        a, b = np.asarray(half), _fit(bg, hw, hh)
        out.append(np.concatenate([a, b] if first else [b, a], axis=axis))
    return out, layout


# --- building ----------------------------------------------------------------------------------


def _rng(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, index])


@dataclass(frozen=True)
class _Plan:
    references: list[tuple[str, list[_FootageWindow | _PhotoShot]]]
    background: list[_FootageWindow | _PhotoShot]


def _plan(config: VSCDataConfig, photos: list[Path], footage: list[tuple[Path, float]]) -> _Plan:
    """Which material each reference uses, and the held-out background pool; no rendering."""
    spec = SIZES[config.size]
    rng = _rng(config.seed, 0, 0)
    lo, hi = spec.reference_seconds
    footage = [(p, d) for p, d in footage if _on_side(config.sources, p.name)]
    photos = [p for p in photos if _on_side(config.sources, _photo_family(p))]
    # Whole videos are held out for the queries' unrelated footage (windows of one video look alike: a
    # static camera), the others are cut into disjoint reference windows.
    videos = list(footage)
    rng.shuffle(videos)
    n_bg_videos = max(1, len(videos) // 5)
    windows: list[_FootageWindow] = []
    bg_windows: list[_FootageWindow] = []
    for v, (path, duration) in enumerate(videos):
        t = 0.0
        if v < n_bg_videos:  # background: pieces of up to 8 s, the last one shorter
            while t + 1.0 <= duration - 0.2:
                n = min(8.0, duration - 0.2 - t)
                bg_windows.append(_FootageWindow(str(path), round(t, 2), round(t + n, 2)))
                t += n
            continue
        while t + lo <= duration - 0.2:
            n = min(float(rng.uniform(lo, hi)), duration - 0.2 - t)
            windows.append(_FootageWindow(str(path), round(t, 2), round(t + n, 2)))
            t += n
    rng.shuffle(windows)
    ref_windows = windows
    order = list(photos)
    rng.shuffle(order)
    n_bg_photos = max(1, len(order) // 8)
    bg_photos, ref_photos = order[:n_bg_photos], order[n_bg_photos:]
    slots = [(str(p), c) for p in ref_photos for c in _cells(p)]
    rng.shuffle(slots)

    n_footage = min(len(ref_windows), max(1, spec.references // 3))
    items: list[list[_FootageWindow | _PhotoShot]] = [[w] for w in ref_windows[:n_footage]]
    while len(items) < spec.references:
        shots = int(rng.choice([1, 1, 1, 2]))
        if len(slots) < shots:
            raise MissingDataError(
                f"a {config.size.value} VSC data set needs {spec.references} references, but the installed photographs "
                f"give only {len(items)} (found {len(photos)} photographs"
                + ("" if config.sources == "all" else f" on the {config.sources!r} side of the source split")
                + "); install Debian's wallpaper packages "
                "('make vsc-data' as root, or apt-get install mate-backgrounds ukui-wallpapers "
                "plasma-workspace-wallpapers gnome-backgrounds) or use a smaller size")
        total = float(rng.uniform(lo, hi))
        items.append([_PhotoShot(*slots.pop(), seconds=round(total / shots, 2)) for _ in range(shots)])
    order_idx = rng.permutation(len(items))
    references = [(f"R{i:06d}", items[j]) for i, j in enumerate(order_idx)]
    background: list[_FootageWindow | _PhotoShot] = list(bg_windows)
    for p in bg_photos:
        background += [_PhotoShot(str(p), c, seconds=float(rng.uniform(3.0, 8.0))) for c in _cells(p)]
    if not background:
        raise MissingDataError("no footage or photograph is left for the queries' unrelated footage; install more "
                               "sample videos ('make install', 'make samples') or Debian's wallpaper packages")
    return _Plan(references=references, background=background)


def _render_items(items: list[_FootageWindow | _PhotoShot], rng: np.random.Generator) -> Frames:
    frames: Frames = []
    for item in items:
        frames += _render_footage(item) if isinstance(item, _FootageWindow) else _render_photo_shot(item, rng)
    return frames


def _background(plan: _Plan, n: int, rng: np.random.Generator) -> Frames:
    """``n`` frames of held-out footage and photographs, cut together."""
    frames: Frames = []
    while len(frames) < n:
        item = plan.background[int(rng.integers(len(plan.background)))]
        frames += _render_items([item], rng)
    return frames[:n]


def _photo_name(path: Path) -> str:
    """A photograph's name in ``sources.json``: its file name, with its picture's folder where the file name
    alone names a size (plasma: many pictures, one file name)."""
    picture = _plasma_picture(path)
    return path.name if picture is None else f"{picture}/{path.name}"


def _source_name(items: list[_FootageWindow | _PhotoShot]) -> str:
    return " + ".join(f"{Path(i.path).name}@{i.start}-{i.end}" if isinstance(i, _FootageWindow)
                      else f"{_photo_name(Path(i.path))}#{i.cell}" for i in items)


def _build_query(plan: _Plan, config: VSCDataConfig, index: int, ref_frames: Callable[[str], Frames],
                 ref_ids: list[str]) -> tuple[Frames, int, list[CopyInfo]]:
    spec = SIZES[config.size]
    rng = _rng(config.seed, 2, index)
    n_background = int(round(float(rng.uniform(*spec.query_seconds)) * FPS))
    bitrate = int(rng.integers(150_000, 500_000))
    frames = _background(plan, n_background, rng)
    n_copies = 0 if rng.random() < config.no_copy_fraction else int(rng.integers(1, 4))
    chosen = [ref_ids[int(i)] for i in rng.choice(len(ref_ids), size=min(n_copies, len(ref_ids)), replace=False)]
    pieces = []
    for ref_id in chosen:
        src = ref_frames(ref_id)
        n = min(len(src), int(round(float(rng.uniform(2.0, 15.0)) * FPS)))
        start = int(rng.integers(0, len(src) - n + 1))
        chain, layout = _random_chain(rng, config.max_edits, config.seed * 1000 + index)
        copy, fps = src[start : start + n], float(FPS)
        for _, edit in chain:
            copy, fps = edit(copy, fps)
        pieces.append((ref_id, start, n, copy, [name for name, _ in chain], layout))
    # The copies overwrite non-overlapping stretches of a background made longer by their length, so that
    # ``n_background`` frames of unrelated footage remain around them.
    room = n_background
    frames += _background(plan, sum(len(p[3]) for p in pieces), rng)
    gaps = sorted(int(c) for c in rng.integers(0, room + 1, size=len(pieces)))
    copies: list[CopyInfo] = []
    pos, prev = 0, 0
    for gap, (ref_id, start, n, copy, names, layout) in zip(gaps, pieces):
        pos += gap - prev
        prev = gap
        placed, layout_name = _place(copy, frames[pos : pos + len(copy)], layout, rng)
        frames[pos : pos + len(placed)] = placed
        copies.append(CopyInfo(ref_id=ref_id, query_start=pos / FPS, query_end=(pos + len(placed)) / FPS,
                               ref_start=start / FPS, ref_end=(start + n) / FPS, edits=tuple(names),
                               layout=layout_name))
        pos += len(placed)
    return frames, bitrate, copies


def default_root(config: VSCDataConfig) -> Path:
    """Where :func:`build_dataset` caches ``config``: ``$VIDSEARCH_CACHE/vsc/<size>-seed<seed>-<hash>``."""
    from vidsearch.encode.effnet import cache_dir

    key = hashlib.sha256(json.dumps(_manifest(config, []), sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir().parent / "vsc" / f"{config.size.value}-seed{config.seed}-{key}"


def _manifest(config: VSCDataConfig, photos: list[Path]) -> dict[str, object]:
    cfg = {**asdict(config), "size": config.size.value, "photo_roots": list(config.photo_roots)}
    if config.sources == "all":  # as before the split existed: the cached data sets (and their keys) stay valid
        del cfg["sources"]
    return {"format": "vidsearch-vsc-dataset", "format_version": FORMAT_VERSION, "config": cfg,
            "fps": FPS, "width": WIDTH, "height": HEIGHT, "photos": [str(p) for p in photos]}


def dataset_config(size: str, seed: int = 0, sources: str = "all") -> VSCDataConfig:
    """The data set of a size: tiny and small from opencv-doc's photographs only (so that installing
    the wallpaper packages does not change them), full from the wallpaper packages as well. One side of the
    source split (``sources`` "train" or "test") draws on the wallpapers at every size: opencv-doc's
    23 photographs, split in two, are too few for a small data set's 60 references.

    Raises:
        ConfigError: an unknown size or side.
    """
    names = tuple(s.value for s in DatasetSize)
    if size not in names:
        raise ConfigError(f"size must be one of {', '.join(names)}, got {size!r}")
    if sources not in SOURCE_SIDES:
        raise ConfigError(f"sources must be one of {', '.join(SOURCE_SIDES)}, got {sources!r}")
    ds = DatasetSize(size)
    wallpapers = ds is DatasetSize.FULL or sources != "all"
    return VSCDataConfig(size=ds, seed=seed, photo_roots=WALLPAPER_ROOTS if wallpapers else (), sources=sources)


def build_dataset(config: VSCDataConfig = VSCDataConfig(), root: str | os.PathLike[str] | None = None,
                  progress: Callable[[str], None] | None = None) -> VSCDataset:
    """Build the data set ``config`` describes into ``root`` (default :func:`default_root`), or load it if cached.

    The folder is written beside ``root`` and moved into place when complete, so an interrupted build
    leaves nothing that looks finished. A folder at ``root`` built from another config (or other
    installed photographs) is replaced.

    Raises:
        MissingDataError: the sample footage or too few photographs are installed for ``config.size``.
    """
    photos = find_photos(config.photo_roots)
    target = Path(root) if root is not None else default_root(config)
    manifest = _manifest(config, photos)
    if (target / "manifest.json").is_file():
        if json.loads((target / "manifest.json").read_text()) == manifest:
            return load_dataset(target)
    elif target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not a VSC data set (no manifest.json); pass an empty or new folder")
    footage = _footage()
    if not footage:
        raise MissingDataError(f"no sample footage installed; {samples.install_hint('')}")
    plan = _plan(config, photos, footage)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "references").mkdir(parents=True)
    (tmp / "queries").mkdir()
    sources = {}
    for i, (ref_id, items) in enumerate(plan.references):
        frames = _render_items(items, _rng(config.seed, 1, i))
        edits.encode_rgb(frames, FPS, tmp / "references" / f"{ref_id}.mp4", bitrate=500_000)
        sources[ref_id] = _source_name(items)
        if progress:
            progress(f"reference {i + 1}/{len(plan.references)}")
    ref_ids = [r for r, _ in plan.references]

    def ref_frames(ref_id: str) -> Frames:
        frames, _ = edits.decode_rgb(tmp / "references" / f"{ref_id}.mp4", max_width=WIDTH, max_fps=FPS)
        return frames

    truth: list[Match] = []
    copies: dict[str, list[dict[str, object]]] = {}
    for qi in range(SIZES[config.size].queries):
        query_id = f"Q{qi:06d}"
        frames, bitrate, infos = _build_query(plan, config, qi, ref_frames, ref_ids)
        edits.encode_rgb(frames, FPS, tmp / "queries" / f"{query_id}.mp4", bitrate=bitrate)
        copies[query_id] = [asdict(c) for c in infos]
        truth += [Match(query_id, c.ref_id, c.query_start, c.query_end, c.ref_start, c.ref_end) for c in infos]
        if progress:
            progress(f"query {qi + 1}/{SIZES[config.size].queries}")
    write_matches(tmp / "ground_truth.csv", truth, with_score=False)
    (tmp / "copies.json").write_text(json.dumps(copies, indent=1, sort_keys=True))
    (tmp / "sources.json").write_text(json.dumps(sources, indent=1, sort_keys=True))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return load_dataset(target)


def load_dataset(root: str | os.PathLike[str]) -> VSCDataset:
    """Open a data set :func:`build_dataset` wrote.

    Raises:
        MissingDataError: ``root`` has no manifest (not built, or interrupted).
    """
    root = Path(root)
    if not (root / "manifest.json").is_file():
        raise MissingDataError(f"{root} holds no VSC data set (no manifest.json); build it with build_dataset")
    manifest = json.loads((root / "manifest.json").read_text())
    cfg = dict(manifest["config"])
    config = VSCDataConfig(size=DatasetSize(cfg["size"]), seed=int(cfg["seed"]), max_edits=int(cfg["max_edits"]),
                           no_copy_fraction=float(cfg["no_copy_fraction"]), photo_roots=tuple(cfg["photo_roots"]),
                           sources=str(cfg.get("sources", "all")))
    raw = json.loads((root / "copies.json").read_text())
    copies = {q: tuple(CopyInfo(**{**c, "edits": tuple(c["edits"])}) for c in rows) for q, rows in raw.items()}
    return VSCDataset(
        root=root, config=config,
        reference_ids=tuple(sorted(p.stem for p in (root / "references").glob("R*.mp4"))),
        query_ids=tuple(sorted(p.stem for p in (root / "queries").glob("Q*.mp4"))),
        ground_truth=tuple(read_matches(root / "ground_truth.csv", ground_truth=True)),
        copies=copies, sources=json.loads((root / "sources.json").read_text()),
    )
