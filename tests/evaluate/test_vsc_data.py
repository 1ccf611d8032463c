"""The VSC-style data set builder on its tiny size: determinism, cache, ground truth consistent with
the written videos (plain copies compared pixel by pixel with their references), no-copy queries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from vidsearch.errors import ConfigError
from vidsearch.evaluate import edits
from vidsearch.evaluate.samples import MissingDataError
from vidsearch.evaluate.vsc_data import (
    FPS,
    HEIGHT,
    WIDTH,
    DatasetSize,
    VSCDataConfig,
    VSCDataset,
    _frame_rate_change,
    _photo_family,
    _PhotoShot,
    _place,
    _footage,
    _plan,
    _random_chain,
    _source_name,
    build_dataset,
    dataset_config,
    default_root,
    find_photos,
    load_dataset,
    source_side,
)
from vidsearch.evaluate.vsc_metrics import GROUND_TRUTH_COLUMNS

# Seed 3 of the tiny size has no-copy queries and queries with copies. Photographs from opencv-doc only
# (photo_roots=()), so that installing the wallpaper packages does not change these data sets.
SEED = 3


@pytest.fixture(scope="session")
def edited(vsc_tiny: VSCDataset) -> VSCDataset:
    assert vsc_tiny.config == VSCDataConfig(size=DatasetSize.TINY, seed=SEED, photo_roots=())
    return vsc_tiny


@pytest.fixture(scope="session")
def plain(tmp_path_factory: pytest.TempPathFactory) -> VSCDataset:
    """Copies inserted without any edit (full frame), so their pixels can be compared with the references'."""
    return build_dataset(VSCDataConfig(size=DatasetSize.TINY, seed=SEED, max_edits=0, photo_roots=()),
                         tmp_path_factory.mktemp("vsc") / "plain")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _frames(path: Path) -> list[np.ndarray]:
    frames, fps = edits.decode_rgb(path, max_width=WIDTH, max_fps=FPS)
    assert fps == FPS
    return frames


@pytest.mark.slow  # a third build of the tiny set: ~13 s unloaded, ~40 s on a busy machine
@pytest.mark.slow  # builds the tiny set a second time (~13 s)
def test_same_seed_gives_the_same_bytes(edited: VSCDataset, tmp_path: Path) -> None:
    again = build_dataset(edited.config, tmp_path / "again")
    first, second = _digest(edited.root), _digest(again.root)
    assert len(first) == 5 + 5 + 4  # videos + ground_truth.csv, copies.json, sources.json, manifest.json
    assert first == second
    assert again.ground_truth == edited.ground_truth


def test_a_built_data_set_is_loaded_not_rebuilt(edited: VSCDataset) -> None:
    before = {p: p.stat().st_mtime_ns for p in edited.root.rglob("*.mp4")}
    again = build_dataset(edited.config, edited.root)
    assert {p: p.stat().st_mtime_ns for p in edited.root.rglob("*.mp4")} == before
    assert again == load_dataset(edited.root)


def test_layout_and_ids(edited: VSCDataset) -> None:
    assert edited.reference_ids == tuple(f"R{i:06d}" for i in range(5))
    assert edited.query_ids == tuple(f"Q{i:06d}" for i in range(5))
    header = (edited.root / "ground_truth.csv").read_text().splitlines()[0]
    assert header == ",".join(GROUND_TRUTH_COLUMNS)
    first = _frames(edited.query_path("Q000000"))[0]
    assert first.shape == (HEIGHT, WIDTH, 3)


def test_ground_truth_is_consistent_with_the_files(edited: VSCDataset) -> None:
    rows_by_query: dict[str, list] = {q: [] for q in edited.query_ids}
    for row in edited.ground_truth:
        rows_by_query[row.query_id].append(row)
    no_copy = [q for q, rows in rows_by_query.items() if not rows]
    assert no_copy and len(no_copy) < len(edited.query_ids)  # both kinds occur
    for q in edited.query_ids:
        infos = edited.copies[q]
        rows = rows_by_query[q]
        # copies.json and ground_truth.csv agree, row for row; no-copy queries have no rows.
        assert [(c.ref_id, c.query_start, c.query_end, c.ref_start, c.ref_end) for c in infos] == \
            [(r.ref_id, r.query_start, r.query_end, r.ref_start, r.ref_end) for r in rows]
        q_seconds = len(_frames(edited.query_path(q))) / FPS
        spans = sorted((r.query_start, r.query_end) for r in rows)
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert e0 <= s1  # copies do not overlap in the query
        unrelated = q_seconds - sum(e - s for s, e in spans)
        assert unrelated >= 6.0  # at least the tiny size's minimum of unrelated footage
        for info in infos:
            assert 0 <= info.query_start < info.query_end <= q_seconds + 1e-9
            r_seconds = len(_frames(edited.reference_path(info.ref_id))) / FPS
            assert 0 <= info.ref_start < info.ref_end <= r_seconds + 1e-9
            assert 2.0 - 1e-9 <= info.ref_end - info.ref_start <= min(15.0, r_seconds) + 1e-9
            speed = [float(e[6:-1]) for e in info.edits if e.startswith("speed(")]
            expected = (info.ref_end - info.ref_start) / (speed[0] if speed else 1.0)
            assert info.query_end - info.query_start == pytest.approx(expected, abs=0.25)
    layouts = {c.layout.split("(")[0] for cs in edited.copies.values() for c in cs}
    assert layouts <= {"full", "pip", "hstack", "vstack"} and len(layouts) >= 2


def test_edit_chains_cover_every_edit_and_layouts_fill_the_frame() -> None:
    rng = np.random.default_rng(0)
    names: set[str] = set()
    layouts: set[str] = set()
    for _ in range(300):
        chain, layout = _random_chain(rng, 3, 0)
        assert 1 <= len([n for n, _ in chain if not n.startswith(("speed", "reverse", "frame_rate"))]) <= 3
        names |= {n.split("(")[0] for n, _ in chain}
        layouts.add(layout)
    assert names == {"speed", "reverse", "frame_rate", "crop", "hflip", "rotate", "photometric", "saturation", "blur",
                     "noise", "text", "shapes"}
    assert layouts == {"full", "pip", "hstack", "vstack"}
    assert _random_chain(rng, 0, 0) == ([], "full")
    copy = [np.full((120, 160, 3), 255, np.uint8)] * 4  # white copy over a black background
    background = [np.zeros((HEIGHT, WIDTH, 3), np.uint8)] * 4
    for layout in ("full", "pip", "hstack", "vstack"):
        placed, name = _place(copy, background, layout, np.random.default_rng(1))
        assert len(placed) == 4 and all(f.shape == (HEIGHT, WIDTH, 3) for f in placed)
        white = float(np.mean(placed[0] > 128))
        if layout == "full":
            assert white == 1.0
        elif layout == "pip":
            scale = float(name[4:-1])
            assert 0.25 <= scale <= 0.5
            assert white == pytest.approx(scale * WIDTH * round(scale * WIDTH * 120 / 160) / (WIDTH * HEIGHT), rel=0.05)
        elif layout == "hstack":  # 160 x 120 fits a 160 x 180 half as it is
            assert white == pytest.approx(160 * 120 / (WIDTH * HEIGHT), abs=0.01)
        else:  # and a 320 x 90 half at 120 x 90, not cropped
            assert white == pytest.approx(120 * 90 / (WIDTH * HEIGHT), abs=0.01)
    # Speed and reversal change the frames as their names say.
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(20)]
    assert len(edits.speed(2.0)(frames, FPS)[0]) == 10
    assert [int(f[0, 0, 0]) for f in edits.reverse()(frames, FPS)[0]] == list(range(19, -1, -1))
    assert len(_frame_rate_change(5.0)(frames, FPS)[0]) == 20


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def test_plain_copies_show_the_reference_frames_at_the_ground_truth_times(plain: VSCDataset) -> None:
    assert plain.ground_truth, "the plain tiny data set should contain copies"
    aligned, shifted, outside = [], [], []
    for row in plain.ground_truth:
        query = _frames(plain.query_path(row.query_id))
        ref = _frames(plain.reference_path(row.ref_id))
        q0, q1 = round(row.query_start * FPS), round(row.query_end * FPS)
        r0 = round(row.ref_start * FPS)
        assert q1 - q0 == round((row.ref_end - row.ref_start) * FPS)
        # Frame-exact: one frame later in the reference fits worse than the ground-truth frame.
        exact = np.mean([_mad(query[q0 + k], ref[r0 + k]) for k in range(q1 - q0 - 1)])
        one_off = np.mean([_mad(query[q0 + k], ref[r0 + k + 1]) for k in range(q1 - q0 - 1)])
        assert exact < one_off, (row, exact, one_off)
        for k in range(0, q1 - q0, 3):
            aligned.append(_mad(query[q0 + k], ref[r0 + k]))
            other = r0 + k + 10 if r0 + k + 10 < len(ref) else r0 + k - 10  # the reference 1 s off
            shifted.append(_mad(query[q0 + k], ref[other]))
        if q0 > 0:
            outside.append(_mad(query[q0 - 1], ref[r0]))  # the unrelated frame just before the copy
        if q1 < len(query):
            outside.append(_mad(query[q1], ref[min(r0 + q1 - q0, len(ref) - 1)]))
    assert max(aligned) < 4.0, aligned  # the same picture, through two lossy encodes (measured <= 2.1)
    assert float(np.median(shifted)) > 2 * float(np.median(aligned))
    assert outside and min(outside) > 2 * float(np.median(aligned))


def test_config_is_checked_and_missing_photographs_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DatasetSize"):
        VSCDataConfig(size="tiny")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_edits"):
        VSCDataConfig(max_edits=-1)
    with pytest.raises(MissingDataError, match="wallpaper"):  # opencv-doc's photographs alone cannot give 520
        build_dataset(VSCDataConfig(size=DatasetSize.FULL, photo_roots=()), tmp_path / "full")
    assert not (tmp_path / "full").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a data set")
    with pytest.raises(ConfigError, match="not a VSC data set"):
        build_dataset(VSCDataConfig(size=DatasetSize.TINY), tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").exists()


def test_photographs_are_named_apart_in_the_sources() -> None:
    # plasma's pictures all have files named by size: the name must keep the picture (siblings, shared imagery)
    a, b = (_PhotoShot(f"/w/{pic}/contents/images/1920x1080.jpg", (0.0, 0.0, 0.5, 0.5), 3.0) for pic in ("Autumn", "Kite"))
    assert _source_name([a]) == "Autumn/1920x1080.jpg#(0.0, 0.0, 0.5, 0.5)" != _source_name([b])
    assert _source_name([_PhotoShot("/d/baboon.jpg", (0.0, 0.0, 1.0, 1.0), 3.0)]) == "baboon.jpg#(0.0, 0.0, 1.0, 1.0)"


def test_photo_families_group_variants_of_one_picture() -> None:
    assert _photo_family(Path("/b/mate/Elephants_3840x2160.jpg")) == _photo_family(Path("/b/mate/Elephants.jpg"))
    assert _photo_family(Path("/b/gnome/adwaita-d.webp")) == _photo_family(Path("/b/gnome/adwaita-l.webp"))
    assert _photo_family(Path("/w/Autumn/contents/images/1920x1080.jpg")) == \
        _photo_family(Path("/w/Autumn/contents/images/5120x2880.jpg")) == "autumn"
    assert _photo_family(Path("/b/mate/Dune.jpg")) != _photo_family(Path("/b/mate/Storm.jpg"))


def _files_and_families(items: list) -> set[str]:
    return {Path(i.path).name if hasattr(i, "start") else "photo:" + _photo_family(Path(i.path)) for i in items}


def test_the_two_sides_of_the_source_split_share_no_imagery_whatever_the_seeds() -> None:
    photos, footage = find_photos(()), _footage()
    sides = {side: [] for side in ("train", "test")}
    for p, _ in footage:
        sides[source_side(p.name)].append(p.name)
    assert sides["train"] and sides["test"] and len(sides["train"]) < len(sides["test"])  # about a third on train
    used: dict[str, set[str]] = {}
    for side, seed in (("train", 1), ("test", 0), ("test", 4)):
        plan = _plan(VSCDataConfig(size=DatasetSize.TINY, seed=seed, photo_roots=(), sources=side), photos, footage)
        items = [i for _, its in plan.references for i in its] + plan.background
        names = _files_and_families(items)
        assert all(source_side(n.removeprefix("photo:")) == side for n in names), (side, names)
        used[side] = used.get(side, set()) | names
        everything = _plan(VSCDataConfig(size=DatasetSize.TINY, seed=seed, photo_roots=()), photos, footage)
        assert {source_side(n.removeprefix("photo:"))
                for n in _files_and_families([i for _, its in everything.references for i in its])} == {"train", "test"}
    assert used["train"] and used["test"] and not used["train"] & used["test"]


def test_the_source_split_keeps_the_benchmark_data_sets_and_their_cache_keys() -> None:
    # the keys of the cached data sets before the split existed: "all" must not rebuild an hour of footage
    assert default_root(dataset_config("small", 0)).name == "small-seed0-9fbbbd7bf9"
    assert default_root(dataset_config("full", 0)).name == "full-seed0-c602ebb186"
    train, test = dataset_config("small", 1, "train"), dataset_config("small", 1, "test")
    assert train.photo_roots and test.photo_roots  # opencv-doc's photographs alone are too few for one side
    assert len({default_root(c) for c in (train, test, dataset_config("small", 1))}) == 3
    with pytest.raises(ConfigError, match="sources must be one of all, train, test"):
        dataset_config("small", 0, "eval")
    with pytest.raises(ConfigError, match="VSCDataConfig.sources"):
        VSCDataConfig(sources="both")


@pytest.mark.slow  # builds a tiny data set (~13 s)
def test_a_data_set_of_one_side_records_it_and_uses_only_its_imagery(tmp_path: Path) -> None:
    config = VSCDataConfig(size=DatasetSize.TINY, seed=SEED, photo_roots=(), sources="test")
    built = build_dataset(config, tmp_path / "test-side")
    assert load_dataset(built.root).config == config
    sides = set()
    for text in built.sources.values():
        for part in text.split(" + "):  # "video.mp4@START-END" or "photo.jpg#(cell)"
            photo, hashmark, _ = part.partition("#")
            sides.add(source_side(_photo_family(Path(photo))) if hashmark else source_side(part.rpartition("@")[0]))
    assert sides == {"test"}
