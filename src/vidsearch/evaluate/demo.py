"""The demo: index the real sample footage, query with transformed copies made on the fly, and
check that each copy finds its source at the right time range."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidsearch.config import CollectionConfig
from vidsearch.evaluate import samples
from vidsearch.evaluate.transforms import Transform, make_copy


@dataclass(frozen=True)
class DemoQuery:
    name: str
    source: str  # file name of the reference it was made from
    transform: Transform | None  # None: a still frame exported as PNG at ``frame_at``
    expect_start: float
    expect_end: float | None  # None: to the end of the source
    frame_at: float = 0.0


DEMO_QUERIES = [
    DemoQuery("re-encoded 320 px wide at 150 kb/s", "bikes.mp4", Transform(width=320, bitrate=150_000), 0.0, None),
    DemoQuery("centre crop 70%, 360 px wide", "Megamind.avi", Transform(crop=0.7, width=360), 0.0, None),
    DemoQuery("3-second excerpt 30-33 s", "vtest.avi", Transform(start=30, end=33), 30.0, 33.0),
    DemoQuery("excerpt 20-30 s, 96 px wide, mpeg4", "demo.mp4", Transform(start=20, end=30, width=96, codec="mpeg4"), 20.0, 30.0),
    DemoQuery("one frame at 3 s, as a PNG image", "bigbuckbunny.mp4", None, 3.0, 3.0, frame_at=3.0),
]


def _export_frame(src: Path, at: float, dst: Path) -> Path:
    from PIL import Image

    from vidsearch.decode import iter_frames

    import av

    with av.open(str(src)) as c:
        s = c.streams.video[0]
        size = (s.codec_context.width, s.codec_context.height)
    frame = next(f for f in iter_frames(src, size, fps=25) if f.time >= at - 1e-6)
    Image.fromarray(frame.image).save(dst)
    return dst


def make_queries(folder: Path, references: list[Path]) -> list[tuple[DemoQuery, Path]]:
    by_name = {p.name: p for p in references}
    out = []
    for i, q in enumerate(DEMO_QUERIES):
        src = by_name.get(q.source)
        if src is None:
            continue
        if q.transform is None:
            out.append((q, _export_frame(src, q.frame_at, folder / f"q{i}_{Path(q.source).stem}.png")))
        else:
            out.append((q, make_copy(src, folder / f"q{i}_{Path(q.source).stem}.mp4", q.transform)))
    return out


def run_demo(
    collection_dir: Path | None = None,
    config: CollectionConfig | None = None,
    on_file: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Index the sample footage into ``collection_dir`` (a temporary folder if None) and run the queries."""
    from vidsearch.collection import Collection

    references = samples.reference_footage()
    with tempfile.TemporaryDirectory(prefix="vidsearch-demo-") as tmp:
        folder = Path(tmp)
        target = collection_dir or folder / "collection"
        coll = Collection.open_or_create(target, config)
        t0 = time.perf_counter()
        reports = coll.add(references, on_file=on_file)
        index_s = time.perf_counter() - t0
        queries = make_queries(folder, references)
        engine = coll.engine()  # the reader every entry point searches through
        rows = []
        for q, path in queries:
            result = engine.search(path, k=3)
            top = result.results[0] if result.results else None
            source_ok = top is not None and Path(top.path).name == q.source
            match = top.matches[0] if top and top.matches else None
            expect_end = q.expect_end
            if expect_end is None and top is not None:
                expect_end = next(v["duration"] for v in coll.videos() if v["id"] == top.video_id)
            range_ok = bool(
                source_ok and match is not None and expect_end is not None
                and abs(match.ref_start - q.expect_start) <= 1.5 and abs(match.ref_end - expect_end) <= 2.5
            )
            rows.append({
                "query": q.name, "source": q.source, "expected_range": [q.expect_start, expect_end],
                "top1": Path(top.path).name if top else None, "score": round(top.score, 3) if top else None,
                "match": None if match is None else {
                    "query_start": match.query_start, "query_end": match.query_end,
                    "ref_start": match.ref_start, "ref_end": match.ref_end,
                },
                "runner_up_score": round(result.results[1].score, 3) if len(result.results) > 1 else None,
                "top1_correct": source_ok, "range_correct": range_ok,
                "latency_ms": round(result.timings_ms["total"], 1),
            })
        summary = {
            "collection": str(target),
            "encoder": coll.config.encode.encoder,
            "indexed": sum(r.status == "indexed" for r in reports),
            "skipped": sum(r.status == "skipped" for r in reports),
            "failed": [r.to_dict() for r in reports if r.status == "failed"],
            "video_seconds": round(sum(r.duration for r in reports if r.status == "indexed"), 1),
            "index_seconds": round(index_s, 2),
            "queries": rows,
            "top1_accuracy": sum(bool(r["top1_correct"]) for r in rows) / max(len(rows), 1),
            "range_accuracy": sum(bool(r["range_correct"]) for r in rows) / max(len(rows), 1),
        }
        coll.close()
        return summary
