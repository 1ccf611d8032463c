"""``vidsearch eval``: run a benchmark for several methods, write results.json and report.html."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidsearch.config import CollectionConfig, EncodeConfig
from vidsearch.errors import ConfigError
from vidsearch.evaluate.methods import FrameScanMethod, RetrievalMethod, VidsearchMethod
from vidsearch.store.manifest import atomic_write_text, library_versions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_METHODS = {
    "small": ["vidsearch-sscd"],
    "full": ["vidsearch-sscd", "vidsearch-sscd:exact", "vidsearch-sscd:par", "vidsearch-sscd:dtw", "vidsearch-sscd:bidtw",
             "vidsearch-sscd-distilled", "vidsearch-effnet-lite0", "exact-frame-scan-sscd", "peers"],
}


def make_method(name: str, collection: dict[str, Any] | None = None) -> RetrievalMethod:
    """A method from its name.

    ``vidsearch-<encoder>[@<quantizer><M>[/adc]][:<rerank>]``: a collection with that frame encoder;
    ``@pq32`` / ``@opq32`` / ``@learned32`` force the compressed index (IVF-PQ with M-byte codes of
    that quantizer, on the full segment vector) however small the collection, ``/adc`` scores hits by the codes alone (no exact
    re-rank: what the codes keep); ``:<rerank>`` is the re-rank mode (``par``, ``dtw``, ...); final
    flags: ``+crops`` also searches crops of the query frames (``SearchParams.crops``), ``+noinsets``
    does not search detected insets (``SearchParams.insets``, on by default), ``+nonorm`` does not
    normalise scores (``SearchParams.norm_beta``, on by default).
    ``exact-frame-scan-<encoder>``, or a peer's name. ``collection``: ``fps``, ``window``, ``stride``
    overriding the default collection configuration of every vidsearch method.
    """
    if name.startswith("vidsearch-"):
        import re

        from vidsearch.config import IndexConfig
        from vidsearch.search.results import SearchParams

        spec, *flags = name[len("vidsearch-"):].split("+")
        unknown = set(flags) - {"crops", "noinsets", "nonorm"}
        if unknown:
            raise ConfigError(f"{name}: unknown flag(s) {', '.join('+' + f for f in sorted(unknown))}; "
                              "expected +crops, +noinsets or +nonorm")
        head, _, mode = spec.partition(":")
        encoder, _, index_spec = head.partition("@")
        index = IndexConfig()
        rerank_depth = SearchParams().rerank_depth
        if index_spec:
            m = re.fullmatch(r"(pq|opq|learned)(\d+)(/adc)?", index_spec)
            if m is None:
                raise ConfigError(f"{name}: expected @<pq|opq|learned><M>[/adc] after the encoder, e.g. @opq32, "
                                  f"found @{index_spec}")
            # the quantizer codes the full segment vector (reduce=0): the comparison of quantizers at
            # equal bytes (the paper's Table 2), not the collection default's PCA projection
            index = IndexConfig(kind="ivfpq", quantizer=m.group(1), pq_m=int(m.group(2)), reduce=0)
            rerank_depth = 0 if m.group(3) else rerank_depth
        # no threshold inside the method: the harness calibrates one on half the queries (see neardup.score)
        from vidsearch.config import DecodeConfig, SegmentConfig

        over = collection or {}
        decode = DecodeConfig(**({"fps": over["fps"]} if over.get("fps") else {}))
        segment = SegmentConfig(**{k: over[k] for k in ("window", "stride") if over.get(k)})
        return VidsearchMethod(name, CollectionConfig(decode=decode, segment=segment,
                                                      encode=EncodeConfig(encoder=encoder), index=index),
                               SearchParams(rerank=mode or "none", par_threshold=-1.0 if mode == "par" else None,
                                            rerank_depth=rerank_depth, crops="crops" in flags,
                                            insets="noinsets" not in flags,
                                            norm_beta=0.0 if "nonorm" in flags else SearchParams().norm_beta))
    if name.startswith("exact-frame-scan-"):
        return FrameScanMethod(name, encoder=name[len("exact-frame-scan-"):])
    from vidsearch.evaluate import peers

    if name not in peers.PEERS:
        raise ConfigError(f"unknown method {name!r}; expected vidsearch-<encoder>[@<pq|opq|learned><M>[/adc]][:<rerank>]"
                          f"[+crops][+noinsets][+nonorm] (e.g. vidsearch-sscd:par), exact-frame-scan-<encoder>, 'peers', or a peer name "
                          f"({', '.join(sorted(peers.PEERS))})")
    return peers.make_peer(name)


def expand_methods(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Replace 'peers' by every available peer; return (methods, {unavailable peer: reason})."""
    out, skipped = [], {}
    for n in names:
        if n == "peers":
            try:
                from vidsearch.evaluate import peers

                for peer, reason in peers.available_peers().items():
                    if reason is None:
                        out.append(peer)
                    else:
                        skipped[peer] = reason
            except ImportError as exc:
                skipped["peers"] = f"peer wrappers not importable: {exc}"
        else:
            out.append(n)
    return out, skipped


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def check_methods(names: list[str], collection: dict[str, Any] | None = None) -> None:
    """Build and close every method once, so a misspelt name fails before the benchmark is rendered."""
    for name in names:
        make_method(name, collection).close()


def run_eval(benchmark: str, out: Path, size: str = "small", methods: list[str] | None = None, seed: int = 0,
             data_dir: Path | None = None, progress: Callable[[str], None] | None = None,
             collection: dict[str, Any] | None = None, allow_partial: bool = False) -> dict[str, Any]:
    """Run ``methods`` on the benchmark; write ``out/results.json`` (after every method) and ``out/report.html``.

    ``collection``: ``fps`` / ``window`` / ``stride`` for every vidsearch method's collection.
    Decoded-and-encoded files are cached for the run (``MediaEncoder.cache``), so methods over the
    same configuration encode the references and queries once (their ``query_ms`` then leaves out
    decoding and encoding: compare latencies on the first method of a configuration only).
    results.json carries ``provenance`` (git commit, dirty ``src/``, UTC start/end, load at start
    and end; ``finished_utc`` is absent while the run is in progress) and ``partial``/``missing``.

    Raises:
        ConfigError: unknown benchmark, size or method (before anything is rendered).
        MissingDataError: footage or data of the benchmark is not installed and ``allow_partial``
            is False (see ``neardup.build_neardup``).
    """
    from vidsearch.encode.pipeline import MediaEncoder
    from vidsearch.evaluate import provenance

    record = provenance.start()
    if benchmark != "neardup":
        raise ConfigError(f"unknown benchmark {benchmark!r}; expected 'neardup'")
    if size not in ("small", "full"):
        raise ConfigError(f"size must be 'small' or 'full', got {size!r}")
    from vidsearch.evaluate.neardup import build_neardup, evaluate

    names, skipped = expand_methods(methods or DEFAULT_METHODS[size])
    if not names:
        raise ConfigError(f"no method to run: {', '.join(methods or [])} expanded to none "
                          f"(unavailable: {skipped or 'none'}); name at least one method")
    check_methods(names, collection)
    out.mkdir(parents=True, exist_ok=True)
    before = MediaEncoder.cache
    MediaEncoder.cache = {} if before is None else before
    try:
        t0 = time.perf_counter()
        bench = build_neardup(data_dir or (out / f"data-{size}-seed{seed}"), size, seed, allow_partial=allow_partial)
        build_s = time.perf_counter() - t0
        results: dict[str, Any] = {}
        doc = {
            "benchmark": benchmark, "size": size, "seed": seed, "build_s": round(build_s, 2),
            "partial": bench.partial, "missing": bench.missing,
            "references": len(bench.references), "queries": len(bench.queries),
            "git": provenance.git(record), "provenance": provenance.public(record),
            "machine": machine(), "versions": library_versions(), "unavailable": skipped,
            "config": {"default_collection": CollectionConfig().to_dict(), "collection_overrides": collection or {}, "k": 20},
            "methods": results,
        }
        for name in names:
            if progress:
                progress(f"evaluating {name} on {len(bench.queries)} queries")
            method = make_method(name, collection)
            try:
                results[name] = evaluate(bench, method)
            except Exception as exc:  # e.g. a peer that cannot index a reference: report it, go on
                skipped[name] = f"failed: {type(exc).__name__}: {exc}"[:500]
            finally:
                method.close()
            atomic_write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")  # partial results survive
        doc["provenance"] = provenance.public(provenance.finish(record))
        atomic_write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")
        atomic_write_text(out / "report.html", render_html(doc))
    finally:
        MediaEncoder.cache = before
    return doc


SUMMARY_KEYS = ["mAP", "mAP_by_video", "uAP", "P@1", "P@5", "P@10", "P@20", "R@5", "F1@5", "accuracy@1",
                "localization_tIoU", "best_f1", "best_f1_threshold", "nomatch_above_threshold", "calibrated_threshold",
                "nomatch_fp_rate", "true_match_recall_at_threshold", "query_ms_p50", "rerank_ms_mean", "index_s"]


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": doc["benchmark"], "size": doc["size"], "seed": doc["seed"], "queries": doc["queries"],
        "references": doc["references"], "unavailable": doc["unavailable"],
        "partial": doc.get("partial", False), "missing": doc.get("missing", {}),
        "methods": {m: {k: (round(v[k], 4) if isinstance(v[k], float) else v[k]) for k in SUMMARY_KEYS}
                    for m, v in doc["methods"].items()},
    }


def markdown_tables(doc: dict[str, Any]) -> str:
    methods = list(doc["methods"])
    keys = ["mAP", "mAP_by_video", "uAP", "P@1", "P@5", "F1@5", "localization_tIoU", "nomatch_fp_rate",
            "true_match_recall_at_threshold", "query_ms_p50", "rerank_ms_mean"]
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m in methods:
        v = doc["methods"][m]
        lines.append(f"| {m} | " + " | ".join(f"{v[k]:.3f}" if isinstance(v[k], float) else str(v[k]) for k in keys) + " |")
    transforms = sorted({t for v in doc["methods"].values() for t in v["per_transform_mAP"]})
    lines += ["", "| transform | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for t in transforms:
        lines.append(f"| {t} | " + " | ".join(f"{doc['methods'][m]['per_transform_mAP'].get(t, float('nan')):.3f}" for m in methods) + " |")
    return "\n".join(lines)


def _figure_png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def render_html(doc: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = doc["methods"]
    images = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, v in methods.items():
        ax.plot([1, 5, 10, 20], [v[f"P@{k}"] for k in (1, 5, 10, 20)], marker="o", label=m)
    ax.set(xlabel="k", ylabel="precision@k", title="Precision at k (one true reference per query)")
    ax.legend(fontsize=7)
    images.append(("Precision at k", _figure_png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, v in methods.items():
        ax.plot(v["pr_curve"]["recall"], v["pr_curve"]["precision"], label=f"{m} (uAP {v['uAP']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="Pooled precision-recall (uAP)")
    ax.legend(fontsize=7)
    images.append(("Precision-recall", _figure_png(fig)))
    plt.close(fig)
    transforms = sorted({t for v in methods.values() for t in v["per_transform_mAP"]})
    fig, ax = plt.subplots(figsize=(max(6, len(transforms) * 0.5), 4))
    width = 0.8 / max(len(methods), 1)
    for i, (m, v) in enumerate(methods.items()):
        ax.bar(np.arange(len(transforms)) + i * width, [v["per_transform_mAP"].get(t, 0) for t in transforms], width, label=m)
    ax.set_xticks(np.arange(len(transforms)) + 0.4 - width / 2, transforms, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="mAP", title="mAP per transform", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    images.append(("mAP per transform", _figure_png(fig)))
    plt.close(fig)
    for m, v in methods.items():
        fig, ax = plt.subplots(figsize=(6, 3))
        bins = np.linspace(min(v["scores"]["false"] + v["scores"]["true"] + [0]), 1, 40).tolist()
        ax.hist(v["scores"]["false"], bins=bins, alpha=0.6, label="false pairs", density=True)
        ax.hist(v["scores"]["true"], bins=bins, alpha=0.6, label="true pairs", density=True)
        for s in v["scores"]["nomatch_top1"]:
            ax.axvline(s, color="k", lw=0.8, ls=":")
        ax.axvline(v["best_f1_threshold"], color="r", lw=1, label="best-F1 threshold")
        ax.set(title=f"{m}: score of true vs false matches (dotted: no-match queries' top-1)", xlabel="score")
        ax.legend(fontsize=7)
        images.append((f"Scores: {m}", _figure_png(fig)))
        plt.close(fig)
    table = markdown_tables(doc).replace("|---", "").splitlines()
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>"
                   for line in table if line.strip() and set(line.strip()) != {"|"})
    figs = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{b}'/>" for t, b in images)
    unavailable = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in doc["unavailable"].items())
    partial = ("<p style='color:#b00'><b>PARTIAL run</b>: built without "
               + "; ".join(f"{html.escape(k)} ({html.escape(str(v))})" for k, v in doc["missing"].items())
               + ". Its figures are not comparable to a complete run.</p>") if doc.get("partial") else ""
    prov = doc.get("provenance", {})
    prov_line = (f"<p>commit {html.escape(str(prov.get('git_commit')))}{' (src/ dirty)' if prov.get('src_dirty') else ''}, "
                 f"{html.escape(str(prov.get('started_utc')))} to {html.escape(str(prov.get('finished_utc')))} UTC, load "
                 f"{(prov.get('load_start') or {}).get('loadavg_1_5_15')} at start, "
                 f"{(prov.get('load_end') or {}).get('loadavg_1_5_15')} at end</p>") if prov else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>vidsearch eval {doc['benchmark']}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{padding:2px 8px;border-bottom:1px solid #ddd}</style>"
            f"</head><body><h1>{doc['benchmark']} ({doc['size']}, seed {doc['seed']})</h1>"
            f"{partial}<p>{doc['references']} references, {doc['queries']} queries; {doc['machine']['cpu']}, {doc['machine']['cores']} cores</p>{prov_line}"
            f"<table>{rows}</table>{'<h3>Unavailable peers</h3><ul>' + unavailable + '</ul>' if unavailable else ''}{figs}</body></html>")
