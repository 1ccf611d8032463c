"""The command line: one subcommand per use, each one library call. Heavy imports stay inside
functions so ``vidsearch --help`` starts fast.

Every failure is one line on stderr, ``error: <what was expected, what was found, what to do>``
(with ``--json``, an object ``{"error": <class>, "message": ...}`` on stdout instead), never a
traceback unless ``-v`` asks for it. Exit codes (see ``EXIT_CODES``): 0 done; 1 failed for a reason
other than the command line (an operating-system error such as a full disk or a permission, or
an internal error: a bug, which ``-v`` shows with its traceback); 2 the command was refused: a bad
argument, or an input it cannot use (a missing, damaged or locked collection, an unreadable query,
an unknown id or method, a value out of range); 3 partly done (``index``: some files failed, the
others are indexed); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

if TYPE_CHECKING:  # for annotations only: the CLI imports these inside functions, to start fast
    import logging

    from rich.console import Console

    from vidsearch.collection import Collection, FileReport
    from vidsearch.config import CollectionConfig, IndexConfig

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = """exit codes:
  0    done
  1    failed for a reason other than the command line: an operating-system error (disk full,
       permission denied) or an internal error (a bug: rerun with -v for the traceback)
  2    refused: a bad argument, or an input it cannot use (missing, damaged or locked collection,
       unreadable query file, unknown video id or method, value out of range); the message says
       what was expected, what was found and what to do
  3    partly done: 'index' indexed some files and reports the ones that failed
  130  interrupted
every error is one line on stderr starting with 'error:' (with --json: {"error", "message"} on stdout)"""


_T = TypeVar("_T")


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _safe(text: object) -> str:
    """``text`` for rich markup: square brackets in file names and messages are not markup."""
    from rich.markup import escape

    return escape(_printable(str(text)))


def _printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (lone surrogates) shown as ``\\udcXX`` escapes, so
    printing it cannot fail whatever the stream's encoding."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _emit(obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:  # a file name that is not valid UTF-8 (surrogate escapes) cannot be printed as is: \u-escape it
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(obj, indent=2, ensure_ascii=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _config_from_args(args: argparse.Namespace) -> CollectionConfig | None:
    from vidsearch.config import CollectionConfig, DecodeConfig, EncodeConfig, IndexConfig, SegmentConfig

    temporal = getattr(args, "temporal", None)
    store = getattr(args, "store", None)
    motion, depth = getattr(args, "motion", None), getattr(args, "depth", None)
    given = any(v is not None for v in (args.encoder, args.fps, args.window, args.stride, args.keyframes or None,
                                        args.index_kind, temporal, store, args.variant, motion, depth))
    if not given:
        return None
    base = CollectionConfig()
    model, weights = "", ""
    if temporal is not None:  # the model's path and the hash of its weights go into the manifest
        from vidsearch.encode.temporal import read_model_info

        from vidsearch.encode.streams import check_streams, fields, frame_dim
        from vidsearch.errors import ConfigError

        info = read_model_info(Path(temporal).resolve())
        model, weights = str(info.path), info.weights_hash
        if motion is not None or depth is not None:  # given with the model: they must be the model's
            check_streams(EncodeConfig(motion=motion or "", depth=depth or ""), info.streams, f"{temporal}: the model")
        streams = fields(info.streams)
        motion, depth = streams["motion"], streams["depth"]
        encoder = args.encoder or base.encode.encoder
        width = frame_dim(EncodeConfig(encoder=encoder, motion=motion, depth=depth))
        if info.dim != width:
            raise ConfigError(f"{temporal}: the temporal model takes {info.dim}-d frame vectors, the {encoder} encoder "
                              f"{'with ' + info.streams + ' ' if info.streams else ''}gives {width}-d; pass the "
                              f"--encoder it was trained on, or train one on a collection of {encoder}")

    def given_or(value: _T | None, default: _T) -> _T:  # 0 is a value, not "not given"
        return default if value is None else value

    return CollectionConfig(
        decode=DecodeConfig(fps=given_or(args.fps, base.decode.fps), keyframes_only=bool(args.keyframes)),
        segment=SegmentConfig(window=given_or(args.window, base.segment.window),
                              stride=given_or(args.stride, base.segment.stride)),
        encode=EncodeConfig(encoder=args.encoder or base.encode.encoder, temporal_model=model, temporal_hash=weights,
                            variant=args.variant or "", motion=motion or "", depth=depth or ""),
        index=IndexConfig(kind="milvus", milvus_uri=store, milvus_index=args.milvus_index) if store
        else IndexConfig(kind=args.index_kind or base.index.kind),
    )


def _index_change_from_args(args: argparse.Namespace) -> IndexConfig | None:
    """With ``--rebuild-index`` on an existing collection: the index ``--store``/``--milvus-index`` or ``--index``
    ask for (None when neither is given), so a collection can move its segment vectors to Milvus and back."""
    from vidsearch.config import IndexConfig
    from vidsearch.errors import ConfigError

    if args.store and args.index_kind:
        raise ConfigError(f"give either --store {args.store} (Milvus) or --index {args.index_kind} (FAISS), not both")
    if args.store:
        return IndexConfig(kind="milvus", milvus_uri=args.store, milvus_index=args.milvus_index)
    if args.index_kind:
        return IndexConfig(kind=args.index_kind)
    return None


def _progress_adder(coll: Collection, paths: Iterable[str | os.PathLike[str]], quiet: bool,
                    spark: str | None = None) -> list[FileReport]:
    """Run ``coll.add`` (or, with ``spark``, ``spark_index`` on that master) with a rich progress bar over the
    files (on stderr)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vidsearch.store.files import iter_media_files

    files = list(iter_media_files(paths))
    if spark is not None:
        from vidsearch.distributed.spark import spark_index

        if quiet:
            return spark_index(coll, files, master=spark)
        console = _console()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task(f"Spark tasks ({spark})", total=None)
            reports = spark_index(coll, files, master=spark,
                                  progress=lambda done, total: progress.update(task, completed=done, total=total))
        for report in reports:
            detail = f"{report.segments} segments" if report.status == "indexed" else _one_line(report.error or "")
            console.print(f"{report.status:8s} {_safe(report.path)}  {_safe(detail)}", highlight=False, soft_wrap=True)
        return reports
    if quiet:
        return coll.add(files)
    console = _console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("indexing", total=len(files))

        def on_file(report: FileReport) -> None:
            colour = {"indexed": "green", "skipped": "yellow", "failed": "red"}.get(report.status, "default")
            detail = f"{report.segments} segments" if report.status == "indexed" else _one_line(report.error or "")
            progress.console.print(f"[{colour}]{report.status:8s}[/] {_safe(report.path)}  {_safe(detail)}",
                                   markup=True, highlight=False, soft_wrap=True)
            progress.advance(task)

        return coll.add(files, on_file=on_file)


def cmd_index(args: argparse.Namespace) -> int:
    from vidsearch.collection import Collection

    if not args.paths and not args.rebuild_index:
        from vidsearch.errors import QueryError

        raise QueryError("nothing to index: give files or folders (or --rebuild-index)")
    new_index = None
    if args.rebuild_index and (Path(args.collection) / "manifest.json").exists():
        new_index = _index_change_from_args(args)  # an existing collection may move to another index
        if new_index is not None:
            args.store = args.index_kind = None  # the rest of the options must match the collection as before
    with Collection.open_or_create(args.collection, _config_from_args(args)) as coll:
        if args.rebuild_index:
            rebuilt = coll.rebuild_index(new_index)
            if not args.paths:
                _emit(rebuilt) if args.json else _console().print(f"rebuilt the index: {_safe(rebuilt)}", highlight=False)
                return EXIT_OK
        reports = _progress_adder(coll, args.paths, quiet=args.json, spark=args.spark)
    counts = {s: sum(r.status == s for r in reports) for s in ("indexed", "skipped", "failed")}
    if args.json:
        _emit({"collection": str(args.collection), "files": [r.to_dict() for r in reports], "summary": counts})
    else:
        _console().print(f"{counts['indexed']} indexed, {counts['skipped']} skipped, {counts['failed']} failed "
                         f"-> {_safe(args.collection)}", highlight=False, soft_wrap=True)
    return EXIT_PARTIAL if counts["failed"] else EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """``vidsearch train``: a temporal model trained on a collection's stored frame vectors, or the learned
    comparator on VSC-style data sets, written as ONNX."""
    from vidsearch.train.loop import require_torch

    from vidsearch.errors import ConfigError

    require_torch()
    # each kind of model takes its own options; one given to the other kind is refused, never ignored
    temporal_only = {"--loss": args.loss, "--pretrain-epochs": args.pretrain_epochs, "--max-clips": args.max_clips}
    comparator_only = {"--vsc-size": args.vsc_size, "--vsc-seeds": args.vsc_seeds, "--vsc-sources": args.vsc_sources,
                       "--background-rank": args.background_rank}
    stray = [k for k, v in (temporal_only if args.model == "comparator" else comparator_only).items() if v is not None]
    if stray:
        raise ConfigError(f"{', '.join(stray)} do not apply to --model {args.model}; drop them (see vidsearch train --help)")
    if args.model == "comparator":
        return _train_comparator(args)
    from vidsearch.train.datasets import collection_clips
    from vidsearch.train.loop import TrainConfig, export_onnx, train_temporal

    args.loss = args.loss or "infonce"
    args.max_clips = args.max_clips or 20_000
    if args.collection is None or args.out is None:
        raise ConfigError(f"--model {args.model} trains on a collection's stored frame vectors and writes a model file: "
                          "give --collection DIR and --out MODEL.onnx")
    pretrain = args.pretrain_epochs
    if pretrain is None:
        pretrain = 10 if args.model == "seq2seq" and args.loss != "reconstruct" else 0
    config = TrainConfig(model=args.model, loss=args.loss, epochs=args.epochs, seed=args.seed, pretrain_epochs=pretrain)
    data = collection_clips(args.collection, max_clips=args.max_clips, seed=args.seed)
    console = None if args.json else _console()
    if console is not None:
        console.print(f"training {args.model} ({args.loss}, {args.epochs} epochs, seed {args.seed}) on "
                      f"{_safe(data.source)}", highlight=False, soft_wrap=True)

    def progress(line: str) -> None:
        if console is not None:
            console.print(_safe(line), highlight=False)

    result = train_temporal(data, config, progress=progress)
    sample = data.resampled(config.frames)[:64]
    from vidsearch.config import CollectionConfig
    from vidsearch.encode.streams import describe
    from vidsearch.store.manifest import read_manifest

    streams = describe(CollectionConfig.from_dict(read_manifest(Path(args.collection))["config"]).encode)
    path = export_onnx(result, args.out, sample=sample, extra={"collection": str(Path(args.collection).resolve())},
                       streams=streams)
    out = {"model": str(path), "kind": args.model, "loss": args.loss, "weights_sha256": result.weights_hash(),
           "epochs": args.epochs, "seed": args.seed, "clips": len(data), "source": data.source,
           "seconds": round(result.seconds, 2), "history": [round(v, 5) for v in result.history]}
    if args.json:
        _emit(out)
    else:
        _console().print(f"wrote {_safe(path)} (weights {out['weights_sha256'][:12]}, loss {result.history[0]:.4f} -> "
                         f"{result.history[-1]:.4f}, {out['seconds']} s); index with it: vidsearch index --collection "
                         f"NEW_DIR --temporal {_safe(path)} FILES", highlight=False, soft_wrap=True)
    return EXIT_OK


def _train_comparator(args: argparse.Namespace) -> int:
    """``vidsearch train --model comparator``: the learned comparator of ``--rerank learned``, trained on the
    VSC-style data sets of ``--vsc-seeds`` (built and indexed first, cached), written to ``--out`` (default: where
    ``--rerank learned`` looks)."""
    from vidsearch.errors import ConfigError
    from vidsearch.evaluate.vsc_methods import train_vsc_comparator
    from vidsearch.search.comparator import default_path
    from vidsearch.train.comparator import ComparatorConfig

    args.vsc_size, args.vsc_sources = args.vsc_size or "small", args.vsc_sources or "all"
    args.background_rank = args.background_rank or 10
    args.vsc_seeds = args.vsc_seeds or "1,2,3"
    try:
        seeds = [int(s) for s in args.vsc_seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--vsc-seeds must be comma-separated integers, e.g. 1,2,3; got {args.vsc_seeds!r}") from None
    if 0 in seeds:
        raise ConfigError("--vsc-seeds must not hold 0: seed 0 is the data set `vidsearch eval vsc` evaluates on")
    if args.collection is not None:
        raise ConfigError("--model comparator trains on VSC-style data sets (--vsc-size, --vsc-seeds), not a collection; "
                          "drop --collection")
    from vidsearch.encode.effnet import cache_dir

    work = cache_dir().parent / "vsc-comparator"  # in the cache (the bench's folder too: prepared sets shared)
    config = ComparatorConfig(epochs=args.epochs, seed=args.seed, background_rank=args.background_rank)
    console = None if args.json else _console()

    def progress(line: str) -> None:
        if console is not None:
            console.print(_safe(line), highlight=False)

    t0 = time.perf_counter()
    path = train_vsc_comparator(work, args.out or default_path(), size=args.vsc_size, seed=seeds, config=config,
                                progress=progress, sources=args.vsc_sources)
    from vidsearch.search.comparator import OnnxComparator

    info = OnnxComparator(path).info
    out = {"model": str(path), "kind": "comparator", "weights_sha256": info.weights_hash, "epochs": args.epochs,
           "seed": args.seed, "vsc_size": args.vsc_size, "vsc_seeds": seeds, "vsc_sources": args.vsc_sources,
           "background_rank": args.background_rank, "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        _emit(out)
    else:
        _console().print(f"wrote {_safe(path)} (weights {info.weights_hash[:12]}, {out['seconds']} s); use it: vidsearch "
                         f"search --rerank learned --comparator {_safe(path)} ...", highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    with Engine.open(args.collection) as engine:
        result = engine.search(args.query, k=args.k, params=SearchParams(
            segment_k=args.segment_k, min_similarity=args.min_similarity, nprobe=args.nprobe,
            rerank_depth=args.rerank_depth, rerank=args.rerank, rerank_candidates=args.rerank_candidates,
            par_threshold=args.par_threshold, comparator=args.comparator, crops=args.crops, insets=not args.no_insets,
            norm_beta=args.norm_beta, query_encoder=args.query_encoder))
    if args.json:
        _emit(result.to_dict())
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"{_safe(args.query)}  ({result.timings_ms['total']:.0f} ms)")
    for col in ("rank", "video", "score", "query s", "reference s", "path"):
        table.add_column(col)
    for r in result.results:
        m = r.matches[0] if r.matches else None
        table.add_row(str(r.rank), r.video_id, f"{r.score:.3f}",
                      f"{m.query_start:.1f}-{m.query_end:.1f}" if m else "", f"{m.ref_start:.1f}-{m.ref_end:.1f}" if m else "",
                      _safe(r.path))
    from rich.console import Console

    Console(width=max(Console().width, 130)).print(table)
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from vidsearch.errors import ConfigError
    from vidsearch.collection import Collection

    if (args.par_threshold is None) == (args.from_eval is None):
        raise ConfigError("pass exactly one of --par-threshold X or --from-eval RESULTS.json")
    with Collection.open(args.collection) as coll:
        return _calibrate(args, coll)


def _calibrate(args: argparse.Namespace, coll: Collection) -> int:
    from vidsearch.errors import ConfigError

    encoder = coll.config.encode.encoder
    if (args.par_threshold is None) == (args.from_eval is None):
        raise ConfigError("pass exactly one of --par-threshold X or --from-eval RESULTS.json")
    if args.par_threshold is not None:
        threshold, source = float(args.par_threshold), "set by hand (vidsearch calibrate --par-threshold)"
    else:
        try:
            doc = json.loads(Path(args.from_eval).read_text(encoding="utf-8"))
            methods = doc["methods"]
            if not isinstance(methods, dict):
                raise TypeError(f"'methods' is a {type(methods).__name__}, not an object of method name -> figures")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{args.from_eval}: expected the results.json of 'vidsearch eval neardup', "
                              f"could not read it ({type(exc).__name__}: {exc})") from exc
        name = args.method or f"vidsearch-{encoder}:par"
        if name not in methods:
            raise ConfigError(f"{args.from_eval} has no method {name!r} (it has {', '.join(methods)}); run "
                              f"'vidsearch eval neardup --methods {name}' or pass --method")
        if not name.startswith("vidsearch-"):
            raise ConfigError(f"{name} is not a vidsearch method; pass --method vidsearch-<encoder>:par")
        from vidsearch.evaluate.methods import VidsearchMethod
        from vidsearch.evaluate.report import make_method

        method = cast(VidsearchMethod, make_method(name))  # as 'vidsearch eval' parses it: a vidsearch-* name
        method_encoder = method.config.encode.encoder
        method.close()
        if method_encoder != encoder:
            raise ConfigError(f"{name} was measured with encoder {method_encoder}, but this collection uses {encoder}: "
                              "scores of different encoders are not comparable")
        try:
            threshold = float(methods[name]["calibrated_threshold"])
            if not math.isfinite(threshold):
                raise ValueError(f"not finite: {threshold}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{args.from_eval}: method {name} has no usable calibrated_threshold "
                              f"({type(exc).__name__}: {exc}); expected a number, as 'vidsearch eval neardup' writes") from exc
        source = (f"{args.from_eval}: {name}, best-F1 threshold on the calibration half of {doc.get('benchmark')} "
                  f"{doc.get('size')} seed {doc.get('seed')}")
    coll.calibrate(threshold, source)
    out = coll.search_defaults()
    if args.json:
        _emit(out)
    else:
        _console().print(f"par_threshold {out['par_threshold']:.4f} stored in {_safe(coll.path)} ({_safe(source)})",
                         highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from vidsearch.collection import Collection

    coll = Collection.open(args.collection)
    info = coll.info()
    if args.videos or args.json:
        info["video_list"] = coll.videos()
    if args.json:
        _emit(info)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{_safe(info['path'])}[/]: {info['videos']} videos, {info['segments']} segments, "
                  f"{info['duration_s']:.0f} s of video, {info['disk_bytes'] / 1e6:.1f} MB on disk")
    console.print(f"encoder {info['config']['encode']['encoder']}, {info['config']['decode']['fps']} fps, "
                  f"window {info['config']['segment']['window']} s / stride {info['config']['segment']['stride']} s, "
                  f"index {info['config']['index']['kind']}")
    ix = info["index"]
    line = f"index in use: {ix['kind']}, {ix['vectors']} vectors, {ix['memory_bytes'] / 1e6:.1f} MB in RAM"
    if ix.get("state") != "current":  # a reader's view: the last saved index + an exact scan, or exact only
        line += f" [yellow]({ix['state']}: {_safe(ix.get('reason') or '')}; {ix['exact_rows']} rows scanned exactly)[/]"
    if ix["kind"] == "ivfpq":
        line += (f" ({ix['memory_bytes_per_vector']} B/vector: {ix['lists']} lists, {ix['pq_bytes']} B "
                 f"{ix['quantizer']} codes of {ix['code_dim']}-d, of {ix['dim']}-d vectors)")
    console.print(line)
    if ix.get("advice"):
        console.print(f"[yellow]{_safe(ix['advice'])}[/]")
    if args.videos:
        table = Table()
        for col in ("id", "duration", "size", "segments", "path"):
            table.add_column(col)
        for v in info["video_list"]:
            table.add_row(v["id"], f"{v['duration']:.1f}", f"{v['width']}x{v['height']}", str(v["segments"]), _safe(v["path"]))
        console.print(table)
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from vidsearch.collection import Collection
    from vidsearch.errors import NotFoundError

    with Collection.open(args.collection) as coll:
        out, failed = [], []
        for video in args.videos:  # an unknown id does not stop the others
            try:
                out.append(coll.remove(video))
            except NotFoundError as exc:
                failed.append({"video": video, "error": str(exc)})
    if failed and not out:
        raise NotFoundError("; ".join(f["error"] for f in failed))
    if args.json:
        _emit({"removed": out, "failed": failed})
    else:
        for o in out:
            _console().print(f"removed {o['video_id']} ({_safe(o['path'])}), {o['segments_removed']} segments",
                             highlight=False, soft_wrap=True)
        for f in failed:
            _fail(args, "NotFoundError", f["error"])
    return EXIT_PARTIAL if failed else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from vidsearch.config import CollectionConfig, EncodeConfig
    from vidsearch.evaluate.demo import run_demo

    config = CollectionConfig(encode=EncodeConfig(encoder=args.encoder)) if args.encoder else None
    console = _console()
    if not args.json:
        console.print("[bold]vidsearch demo[/]: indexing the real sample footage, then querying with transformed copies")

    def on_file(r: FileReport) -> None:
        if not args.json:
            console.print(f"  {r.status:8s} {_safe(Path(r.path).name):40s} {r.segments:4d} segments", highlight=False)

    summary = run_demo(Path(args.collection) if args.collection else None, config, on_file=on_file)
    if args.json:
        _emit(summary)
    else:
        from rich.console import Console
        from rich.table import Table

        console.print(f"indexed {summary['indexed']} videos ({summary['video_seconds']} s of video) "
                      f"in {summary['index_seconds']} s with {summary['encoder']}")
        table = Table(title="transformed copies -> their source")
        for col in ("query", "expected", "top-1 result", "score", "2nd score", "matched ref s", "expected s", "ok"):
            table.add_column(col)
        for r in summary["queries"]:
            m = r["match"]
            exp = r["expected_range"]
            ok = "[green]yes[/]" if r["top1_correct"] and r["range_correct"] else "[red]no[/]"
            table.add_row(r["query"], r["source"], r["top1"] or "-", f"{r['score']:.3f}" if r["score"] is not None else "-",
                          f"{r['runner_up_score']:.3f}" if r["runner_up_score"] is not None else "-",
                          f"{m['ref_start']:.1f}-{m['ref_end']:.1f}" if m else "-", f"{exp[0]:.1f}-{exp[1]:.1f}", ok)
        out = Console(width=max(Console().width, 130))
        out.print(table)
        out.print(f"top-1 source accuracy {summary['top1_accuracy']:.0%}, time range accuracy {summary['range_accuracy']:.0%}")
    return EXIT_OK if summary["top1_accuracy"] == 1.0 else EXIT_ERROR


def cmd_eval(args: argparse.Namespace) -> int:
    from vidsearch.evaluate.report import markdown_tables, run_eval, summary

    console = _console()

    def progress(msg: str) -> None:
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    if args.benchmark == "vsc":
        return _eval_vsc(args, methods, progress)
    if args.sources != "all":
        from vidsearch.errors import ConfigError

        raise ConfigError(f"--sources is for 'eval vsc' only; {args.benchmark} has no source split (drop --sources)")
    if args.benchmark == "rgbd":
        return _eval_rgbd(args, methods, progress)
    if args.size == "tiny":
        from vidsearch.errors import ConfigError

        raise ConfigError(f"--size tiny is for 'eval vsc' and 'eval rgbd' only; {args.benchmark} has the sizes "
                          "small and full")
    if args.benchmark == "fashion":
        from vidsearch.evaluate import fashion_eval

        temporal = [t.strip() for t in args.temporal.split(",") if t.strip()] if args.temporal else None
        doc = fashion_eval.run_fashion_eval(Path(args.out), size=args.size, encoders=methods, seed=args.seed,
                                            temporal=temporal, seen_only=args.temporal_seen_only,
                                            progress=None if args.json else progress)
        if args.json:
            _emit(fashion_eval.summary(doc))
        else:
            console.print(fashion_eval.markdown_tables(doc), markup=False, highlight=False)
            progress(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")
        return EXIT_OK
    doc = run_eval(args.benchmark, Path(args.out), size=args.size, methods=methods, seed=args.seed,
                   data_dir=Path(args.data) if args.data else None,
                   collection={"fps": args.fps, "window": args.window, "stride": args.stride},
                   progress=None if args.json else progress, allow_partial=args.allow_partial)
    if args.json:
        _emit(summary(doc))
    else:
        from rich.console import Console

        Console(width=max(Console().width, 160)).print(markdown_tables(doc), markup=False, highlight=False)
        if doc.get("partial"):
            progress(f"PARTIAL: footage or data missing, figures not comparable to a complete run: {doc['missing']}")
        progress(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")
    return EXIT_OK


def _eval_rgbd(args: argparse.Namespace, methods: list[str] | None, progress: Callable[[str], None]) -> int:
    """``vidsearch eval rgbd``: the synthetic RGB-D benchmark (evaluate/rgbd.py); --methods names the encoder."""
    from vidsearch.errors import ConfigError
    from vidsearch.evaluate import rgbd

    if args.size == "full":
        raise ConfigError("eval rgbd has the sizes tiny and small, got full")
    if methods and len(methods) != 1:
        raise ConfigError(f"eval rgbd takes one frame encoder in --methods (the colour stream), got {methods}")
    doc = rgbd.run_rgbd(Path(args.out), size=args.size, seed=args.seed,
                        encoder=methods[0] if methods else "sscd-distilled", progress=None if args.json else progress)
    if args.json:
        _emit(rgbd.summary(doc))
    else:
        _console().print(rgbd.markdown_table(doc), markup=False, highlight=False)
        progress(f"wrote {Path(args.out) / 'results.json'}")
    return EXIT_OK


def _eval_vsc(args: argparse.Namespace, methods: list[str] | None, progress: Callable[[str], None]) -> int:
    """``vidsearch eval vsc``: the VSC-style copy-detection benchmark (evaluate/vsc_run.py)."""
    from vidsearch.evaluate.vsc_report import markdown_tables
    from vidsearch.evaluate.vsc_run import run_vsc, summary

    if args.allow_partial:
        from vidsearch.errors import ConfigError

        raise ConfigError("--allow-partial is for 'eval neardup'; 'eval vsc' always runs the methods that can run "
                          "and says which could not (\"partial\": true)")
    doc = run_vsc(Path(args.out), size=args.size, methods=methods, seed=args.seed, sources=args.sources,
                  data_root=Path(args.data) if args.data else None,
                  collection={"fps": args.fps, "window": args.window, "stride": args.stride}, progress=progress)
    if args.json:
        _emit(summary(doc))
    else:
        from rich.console import Console

        Console(width=max(Console().width, 160)).print(markdown_tables(doc), markup=False, highlight=False)
    if doc["partial"]:
        progress("PARTIAL: these methods did not run: " + "; ".join(f"{k} ({v})" for k, v in doc["unavailable"].items()))
    progress(f"wrote {Path(args.out) / 'ground_truth.csv'}, predictions/, results.json and report.html")
    return EXIT_OK


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def cmd_serve(args: argparse.Namespace) -> int:
    import socket
    import threading

    # OpenMP threads that spin while waiting (libgomp's default) made a FAISS call for 2 queries 10-30x slower
    # than for 1 on this 2-core machine with the encoder and decoder threads busy (1 query 0.7 ms, 2 queries
    # 9-20 ms; PASSIVE: 1.2-1.8 ms). Read when FAISS loads, so set before the engine is imported; a user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.workers > 1:  # metrics summed over the worker processes: set before prometheus_client is imported
        from vidsearch.serve.workers import prepare_metrics_dir

        prepare_metrics_dir()
    import uvicorn

    from vidsearch.serve.app import create_app
    from vidsearch.serve.settings import ServeSettings
    from vidsearch.store import catalog
    from vidsearch.store.manifest import read_manifest

    token = args.token if args.token is not None else (os.environ.get("VIDSEARCH_TOKEN") or None)
    if args.host not in LOOPBACK_HOSTS and token is None:
        _console().print(f"[yellow]warning:[/] serving on {_safe(args.host)} without a token: anyone who can reach "
                         "this port can search, index and delete; pass --token or set VIDSEARCH_TOKEN",
                         highlight=False, soft_wrap=True)
    # a missing or damaged collection: one line now, not a traceback from the app's start-up
    read_manifest(args.collection)
    catalog.open_existing(Path(args.collection) / "catalog.sqlite").close()
    settings = ServeSettings(
        host=args.host, port=args.port, token=token, allow_roots=tuple(args.allow_root or ()),
        max_upload_mb=args.max_upload_mb, latency_target_ms=args.latency_target_ms,
        memory_budget_mb=args.memory_budget_mb, max_batch=args.max_batch, max_query_seconds=args.max_query_seconds,
        ref_latency_target_ms=args.ref_latency_target_ms, encode_workers=args.encode_workers, workers=args.workers,
        light_encoder=args.light_encoder, admission_headroom=args.admission_headroom)
    family, kind, proto, _, address = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    port = sock.getsockname()[1]
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown_host}:{port}"

    def make_server(role: Any = None) -> Any:
        return uvicorn.Server(uvicorn.Config(
            create_app(args.collection, settings, role), log_level="info" if args.verbose else "warning",
            access_log=bool(args.verbose), lifespan="on", timeout_graceful_shutdown=10))

    def when_started(server: Any, then: Any) -> None:  # once the engine is open and warm, and the socket accepts
        def wait() -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                then()
        threading.Thread(target=wait, name="announce", daemon=True).start()

    def announce() -> None:
        if args.json:
            _emit({"url": url, "collection": str(args.collection), "docs": f"{url}/docs", "pid": os.getpid(),
                   "workers": args.workers})
        else:
            _console().print(f"serving {_safe(args.collection)} at {url}/ (API docs at {url}/docs"
                             f"{f'; {args.workers} worker processes' if args.workers > 1 else ''}); Ctrl-C stops",
                             highlight=False, soft_wrap=True)

    if args.workers > 1:  # forked after binding: the workers share the socket (serve/workers.py)
        from vidsearch.serve.workers import run_workers

        def serve_one(role: Any, sockets: list[socket.socket], ready: Any) -> int:
            worker = make_server(role)
            when_started(worker, ready)
            worker.run(sockets=sockets)
            return 0 if worker.started else 1

        if run_workers(args.workers, sock, serve_one, announce) != 0:
            _fail(args, "StartupError", f"vidsearch serve could not start its {args.workers} workers on {url}; the "
                  "log above says why")
            return EXIT_ERROR
        return EXIT_OK
    server = make_server()
    when_started(server, announce)
    server.run(sockets=[sock])
    if not server.started:  # the app failed to start (uvicorn logged why)
        _fail(args, "StartupError", f"vidsearch serve could not start on {url}; the log above says why")
        return EXIT_ERROR
    return EXIT_OK


# ---------------------------------------------------------------- argument types (argparse: exit 2 with the message)


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, found {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, found {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors also as a JSON object on stdout when ``--json`` was given."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            _emit({"error": "UsageError", "message": f"{self.prog}: {message}"})
        super().error(message)  # usage and "PROG: error: MESSAGE" on stderr, exit 2


def build_parser() -> argparse.ArgumentParser:
    from vidsearch.encode import registry  # names only: loads no model

    parser = _Parser(prog="vidsearch", description="Content-based video retrieval.", epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log details to stderr, and show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, collection: bool = True) -> None:
        if collection:
            p.add_argument("--collection", "-c", required=True, type=Path, help="collection directory")
        p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="as vidsearch -v")

    p = sub.add_parser("index", help="index video/image files and folders (creates the collection if absent)")
    common(p)
    p.add_argument("--encoder", choices=list(registry.ENCODERS), help="frame encoder (new collections)")
    p.add_argument("--variant", help="the encoder's runtime for a new collection, e.g. onnx (fp32) or onnx-int8 "
                                     "(default: the encoder's default, recorded in the collection)")
    p.add_argument("--fps", type=_positive, help="frames sampled per second (default 1)")
    p.add_argument("--keyframes", action="store_true", help="decode key frames only (fast, coarse)")
    p.add_argument("--window", type=_positive, help="segment window in seconds (default 2)")
    p.add_argument("--stride", type=_positive, help="segment stride in seconds (default 1)")
    p.add_argument("--index", dest="index_kind", choices=["auto", "flat", "ivfpq"],
                   help="index kind (new collections; default auto: exact, then compressed from 20K segments)")
    p.add_argument("--rebuild-index", action="store_true", help="rebuild and retrain the index from the stored vectors; "
                   "with --store or --index, move an existing collection to that index (e.g. into Milvus)")
    p.add_argument("--temporal", metavar="MODEL", help="a learned temporal model (ONNX from 'vidsearch train') instead "
                   "of mean pooling (new collections; the manifest records it and the hash of its weights; a +flow model "
                   "turns --motion flow on)")
    p.add_argument("--motion", choices=["flow"], help="fuse a pixel-motion stream with each frame vector (new "
                   "collections): flow = optical flow from the frame before, at 64 px (what +flow temporal models "
                   "take; with mean pooling, a collection to train one on with 'vidsearch train')")
    p.add_argument("--depth", choices=["early"], help="fuse each frame vector with the depth of an RGB-D file's "
                   "depth stream (new collections; early fusion, what rgbd-early models take; colour-only files get "
                   "a zero depth part)")
    p.add_argument("--spark", metavar="MASTER", nargs="?", const="local[*]",
                   help="decode and encode on Spark executors, commit here (default master local[*]; "
                        "spark://HOST:7077 or any master; needs the [spark] extra and Java 17)")
    p.add_argument("--store", metavar="URI", help="keep the segment vectors in Milvus (new collections): "
                   "milvus:PATH.db (Milvus Lite, a file; relative to the collection) or milvus://HOST:PORT (a server; "
                   "token from MILVUS_TOKEN); needs the [milvus] extra")
    from vidsearch.config import MILVUS_INDEX_TYPES

    p.add_argument("--milvus-index", default="HNSW", choices=list(MILVUS_INDEX_TYPES),
                   help="Milvus index type with --store (Milvus Lite: no IVF_PQ; default HNSW)")
    p.add_argument("paths", nargs="*", help="files or folders (recursive)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="find videos containing a clip, a frame/image, or VIDEO_ID@START-END")
    common(p)
    p.add_argument("-k", type=_count(1), default=10, help="videos to return (default 10)")
    p.add_argument("--segment-k", type=_count(1), default=100, help="segment neighbours per query segment (default 100)")
    p.add_argument("--min-similarity", type=_number, default=0.0, help="segment hits below this cosine do not vote")
    p.add_argument("--nprobe", type=_count(1), default=16, help="IVF lists scanned (compressed index; default 16)")
    p.add_argument("--rerank-depth", type=_count(0), default=128,
                   help="segment candidates re-scored exactly (compressed index; default 128)")
    p.add_argument("--rerank", choices=["none", "exact", "par", "dtw", "bidtw", "tn", "learned"], default="none",
                   help="re-rank the top videos: exact re-score, proximal-affinity filter, (bi-directional) DTW, "
                        "the temporal network (tn: the copied runs as matched ranges), the learned comparator "
                        "(--comparator)")
    p.add_argument("--comparator", metavar="ONNX",
                   help="the learned comparator of --rerank learned (default: $VIDSEARCH_COMPARATOR, else the cache's "
                        "models/comparator.onnx)")
    p.add_argument("--rerank-candidates", type=_count(1), default=20, help="videos the re-ranker looks at (default 20)")
    p.add_argument("--par-threshold", type=_number, help="score threshold for par (default: the calibrated one)")
    p.add_argument("--crops", action="store_true",
                   help="also search five crops of each query frame: finds picture-in-picture (6x query encoding)")
    p.add_argument("--no-insets", action="store_true",
                   help="do not search the insets found in the query (picture-in-picture, split screens; on by default)")
    p.add_argument("--norm-beta", type=_number, default=0.5,
                   help="score normalisation: each hit minus this times its query segment's background similarity "
                        "(default 0.5; 0: raw cosine similarity)")
    p.add_argument("--query-encoder", choices=registry.encoder_names(),
                   help="encode the query with this encoder instead of the collection's, where its vectors live in "
                        "that encoder's space (sscd-distilled for sscd collections: about 2x faster, -0.1 point "
                        "of segment micro-AP on the VSC-style benchmark); the answer names it")
    p.add_argument("query", help="video file, image file, or VIDEO_ID@START-END")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("calibrate", help="store the PAR threshold used by 'search --rerank par' in the collection")
    common(p)
    p.add_argument("--par-threshold", type=_number, help="the threshold (cosine) to store")
    p.add_argument("--from-eval", metavar="RESULTS_JSON", help="take the threshold 'vidsearch eval neardup' calibrated")
    p.add_argument("--method", help="method of that results.json (default vidsearch-<the collection's encoder>:par)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("info", help="describe a collection")
    common(p)
    p.add_argument("--videos", action="store_true", help="list the videos")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("remove", help="remove videos by id or path")
    common(p)
    p.add_argument("videos", nargs="+")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("eval", help="run a benchmark for several methods; write results.json and report.html")
    common(p, collection=False)
    p.add_argument("benchmark", choices=["neardup", "fashion", "vsc", "rgbd"],
                   help="neardup: transformed copies of real footage, with peers; fashion: Fashion-MNIST labels; "
                        "vsc: copies hidden in other footage, VSC 2022 segment and pair micro-AP, with peers; "
                        "rgbd: synthetic colour + depth clips whose classes only depth tells apart (trains 3 LSTMs)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", choices=["tiny", "small", "full"], default="small",
                   help="small (default) or full; vsc also tiny (tests); rgbd: tiny or small")
    p.add_argument("--methods", help="neardup, comma-separated: vidsearch-<encoder>[@<pq|opq|learned><M>[/adc]]"
                   "[:<rerank>], exact-frame-scan-<encoder>, peers, or a peer name; fashion: encoder names; "
                   "vsc: vidsearch (today's defaults), exact-frame-scan, peers and the neardup names "
                   "(default vidsearch,exact-frame-scan,peers); rgbd: the colour stream's encoder (default "
                   "sscd-distilled)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", choices=["all", "train", "test"], default="all",
                   help="vsc: all the source imagery (default, the benchmark), or one side of a fixed split of it "
                        "(train ~1/3, test ~2/3; the two share no video or photograph; both need the wallpaper "
                        "packages, make vsc-data): train a model on one, score it on the other")
    p.add_argument("--data", help="folder for the rendered benchmark videos (default: OUT/data-SIZE-seedN; "
                                  "vsc: the cache, ~/.cache/vidsearch/vsc/...)")
    p.add_argument("--fps", type=_positive, help="neardup, vsc: frames per second of every vidsearch collection (default 1)")
    p.add_argument("--window", type=_positive, help="neardup, vsc: segment window in seconds (default 2)")
    p.add_argument("--stride", type=_positive, help="neardup, vsc: segment stride in seconds (default 1)")
    p.add_argument("--allow-partial", action="store_true",
                   help="neardup: run even if some footage or data is missing (results.json is then marked "
                        "\"partial\": true with what is missing); by default a missing source is an error")
    p.add_argument("--temporal", help="fashion, comma-separated: temporal models to compare on Moving Fashion-MNIST, "
                   "mean|lstm|attention|seq2seq|dual[+flow][:infonce|triplet|ce|reconstruct] (+flow: the frame vectors fused "
                   "with optical flow from the decoded pixels; learned ones are trained on clips "
                   "of the train split "
                   "first, a few minutes each); each reported as ENCODER+MODEL")
    p.add_argument("--temporal-seen-only", action="store_true",
                   help="fashion, with --temporal: train on the seen item classes only (0-6) and report the moving "
                        "figures of seen and unseen items (7-9) apart")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a learned temporal model on a collection's stored frame vectors, or the "
                                     "learned comparator on VSC-style data; write it as ONNX (needs pip install "
                                     "'vidsearch[train]')")
    common(p, collection=False)
    p.add_argument("--collection", "-c", type=Path, help="collection directory (temporal models)")
    p.add_argument("--model", choices=["lstm", "attention", "seq2seq", "dual", "comparator"], required=True,
                   help="lstm: LSTM over 16 sampled frames; attention: hierarchical windowed temporal attention; "
                        "seq2seq: the encoder of an LSTM autoencoder; dual: appearance and motion (frame-vector "
                        "differences) streams, fused; comparator: the learned comparator of --rerank learned, trained "
                        "on VSC-style data sets (--vsc-*; no collection)")
    p.add_argument("--vsc-size", choices=["tiny", "small", "full"],
                   help="comparator: the VSC-style data sets' size (default small)")
    p.add_argument("--vsc-seeds",
                   help="comparator: the data sets' seeds, comma-separated, never 0 (the evaluated one; default 1,2,3)")
    p.add_argument("--vsc-sources", choices=["all", "train"],
                   help="comparator: train keeps the imagery of --sources test data sets out (needs make vsc-data; "
                        "default all)")
    p.add_argument("--background-rank", type=_count(1),
                   help="comparator: rank of the background cosine among its features (default 10, chosen on held-out "
                        "training queries: docs/RESULTS.md section 12)")
    p.add_argument("--loss", choices=["infonce", "reconstruct", "triplet", "ce"],
                   help="infonce (default; self-supervised: augmented views, reversed and other-time look-alikes); "
                        "reconstruct (self-supervised seq2seq autoencoding); triplet and ce need labelled clips "
                        "(a collection's windows have none)")
    p.add_argument("--pretrain-epochs", type=_count(0),
                   help="epochs of reconstruction pretraining before the loss (default: 10 for seq2seq, else 0)")
    p.add_argument("--out", type=Path, help="the model file to write (.onnx; required but for the comparator, whose "
                   "default is where --rerank learned looks)")
    p.add_argument("--epochs", type=_count(1), default=30, help="passes over the windows (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, batches and augmentations (default 0)")
    p.add_argument("--max-clips", type=_count(2),
                   help="train on at most this many windows, drawn at random (default 20000)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve", help="serve the collection over HTTP: search API, index jobs, web page",
                       epilog="Binds 127.0.0.1 unless --host says otherwise. With a token (--token or the "
                              "VIDSEARCH_TOKEN environment variable) every route but /health and the page shell "
                              "needs 'Authorization: Bearer TOKEN'.")
    common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_count(0), default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $VIDSEARCH_TOKEN, else none)")
    p.add_argument("--allow-root", action="append", type=Path, metavar="DIR",
                   help="folder under which POST /videos may index files by path (repeatable; default none)")
    p.add_argument("--latency-target-ms", type=_positive, default=500.0,
                   help="batch schedulers' latency target per request (default 500)")
    p.add_argument("--memory-budget-mb", type=_positive, default=1024.0,
                   help="memory the encoder's batches may use (default 1024)")
    p.add_argument("--max-batch", type=_count(1), default=32,
                   help="largest batch: frames per encoder call, queries per index call (default 32; 1: no batching)")
    p.add_argument("--ref-latency-target-ms", type=_positive, default=50.0,
                   help="latency target of stored-range (ref) queries, which only search (default 50)")
    p.add_argument("--encode-workers", type=_count(1), default=1,
                   help="encoder batches run at once, each on its own ONNX Runtime session (default 1)")
    p.add_argument("--workers", type=_count(1), default=1,
                   help="server processes sharing the port, each with its own engine over the same files; worker 0 "
                        "alone runs index jobs (default 1)")
    p.add_argument("--light-encoder", choices=registry.encoder_names(),
                   help="under load, encode file queries with this cheaper encoder in the collection encoder's space "
                        "(sscd-distilled for sscd collections) instead of refusing them; the answer names it")
    p.add_argument("--admission-headroom", type=float, default=0.2, metavar="FRACTION",
                   help="admit file queries predicted within (1 - FRACTION) of the latency target, for the time a "
                        "client waits that the server cannot see (default 0.2; 0 admits up to the target)")
    p.add_argument("--max-upload-mb", type=_positive, default=512.0, help="largest upload accepted (default 512)")
    p.add_argument("--max-query-seconds", type=_positive, default=120.0,
                   help="longest query video accepted (default 120)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="index the real sample footage and query it with transformed copies")
    common(p, collection=False)
    p.add_argument("--collection", "-c", type=Path, help="keep the demo collection here (default: a temp folder)")
    p.add_argument("--encoder", choices=list(registry.ENCODERS))
    p.set_defaults(func=cmd_demo)
    return parser


def _version() -> str:
    from vidsearch import __version__

    return f"vidsearch {__version__}"


def _one_line(text: str) -> str:
    """``text`` on one line (FFmpeg and SQLite messages may span several)."""
    return _printable(re.sub(r"\s*\n\s*", " | ", str(text).strip()))


def _fail(args: argparse.Namespace, kind: str, message: str, extra: dict[str, Any] | None = None) -> None:
    """One error: a JSON object on stdout with ``--json``, else one ``error:`` line on stderr."""
    message = _one_line(message)
    if getattr(args, "json", False):
        _emit({"error": kind, "message": message, **(extra or {})})
    else:
        from rich.text import Text

        _console().print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


class _LogFormatter:
    """Log lines for the terminal: one line each; an exception's traceback only with ``-v`` (else its
    type and message on the same line)."""

    def __init__(self, verbose: bool) -> None:
        import logging

        self.verbose = verbose
        self._plain = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return self._plain.format(record)
        line = f"{record.levelname} {record.name}: {_one_line(record.getMessage())}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f" ({type(exc).__name__}: {_one_line(str(exc))}; rerun with -v for the traceback)"
        return line


def _configure_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # ours (basicConfig's), not a test runner's capture
            handler.setFormatter(_LogFormatter(verbose))  # type: ignore[arg-type]  # duck-typed Formatter: no logging import at start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _Parser.json_errors = "--json" in argv
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    from vidsearch.errors import VidsearchError

    try:
        return int(args.func(args))
    except VidsearchError as exc:  # refused: the message names what was expected, what was found, the fix
        _fail(args, type(exc).__name__, str(exc))
        return EXIT_USAGE
    except sqlite3.DatabaseError as exc:  # a damaged catalogue found mid-read
        _fail(args, "CollectionError", f"the collection's catalog.sqlite is damaged ({exc}); restore it from a "
                                       "backup or re-index")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _fail(args, "Interrupted", "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `vidsearch ... | head`: the reader left; nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush does not fail
        except OSError:
            pass
        return EXIT_ERROR
    except OSError as exc:  # the environment, not the command line: permissions, disk full, ...
        if args.verbose:
            import traceback

            traceback.print_exc()
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _fail(args, type(exc).__name__, f"{exc.strerror or exc}{where}; check the path, its permissions and "
                                        "the free disk space")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback only with -v
        if args.verbose:
            import traceback

            traceback.print_exc()
        _fail(args, "InternalError", f"internal error ({type(exc).__name__}): {exc}; rerun with -v for the "
                                     "traceback" + (" (above)" if args.verbose else ""),
              {"exception": type(exc).__name__})
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
