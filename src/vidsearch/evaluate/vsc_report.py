"""``report.html`` of ``vidsearch eval vsc``: one self-contained page (inline CSS, figures as PNG data
URIs; nothing fetched), as ``report.render_html`` draws the near-duplicate benchmark's.

Tables (:func:`markdown_tables`, also what the CLI prints): the main figures per method, then segment and pair
micro-AP per layout, edit and copy length. Figures: segment and pair precision-recall curves, segment micro-AP per layout, per edit and per copy
length, and per method the pair-score histograms of true and false pairs (no-copy queries' top
scores dotted, the calibrated threshold in red).
"""

from __future__ import annotations

import html
from typing import Any

from vidsearch.evaluate.report import _figure_png

LAYOUT_NAMES = {"full": "full frame", "pip": "picture-in-picture", "hstack": "side by side", "vstack": "stacked"}


def markdown_tables(doc: dict[str, Any]) -> str:
    """The main figures per method, then segment micro-AP per layout, edit and copy length (Markdown)."""
    methods = list(doc["methods"])
    keys = ["segment_micro_ap", "pair_micro_ap", "segment_micro_ap_siblings_ignored", "pair_micro_ap_siblings_ignored",
            "true_pair_recall", "nomatch_fp_rate", "true_pair_recall_at_threshold", "query_ms_p50", "index_s"]

    def fmt(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else "-" if x is None else str(x)

    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(fmt(doc["methods"][m].get(k)) for k in keys) + " |")
    for key, title in (("per_layout", "layout"), ("per_edit", "edit"), ("per_copy_length", "copy length")):
        classes = sorted({c for v in doc["methods"].values() for c in v[key]})
        lines += ["", f"| segment / pair micro-AP by {title} | copies | " + " | ".join(methods) + " |",
                  "|---" * (len(methods) + 2) + "|"]
        for c in classes:
            copies = next((v[key][c]["copies"] for v in doc["methods"].values() if c in v[key]), 0)
            cells = [f"{v[key][c]['segment_micro_ap']:.3f} / {v[key][c]['pair_micro_ap']:.3f}" if c in v[key] else "-"
                     for v in (doc["methods"][m] for m in methods)]
            lines.append(f"| {LAYOUT_NAMES.get(c, c)} | {copies} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _bars(methods: dict[str, Any], key: str, title: str, names: dict[str, str] | None = None) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    classes = sorted({c for v in methods.values() for c in v[key]})
    fig, ax = plt.subplots(figsize=(max(6.0, len(classes) * 0.7), 4))
    width = 0.8 / max(len(methods), 1)
    for i, (m, v) in enumerate(methods.items()):
        ax.bar(np.arange(len(classes)) + i * width, [v[key].get(c, {}).get("segment_micro_ap", 0.0) for c in classes],
               width, label=m)
    copies = {c: next(v[key][c]["copies"] for v in methods.values() if c in v[key]) for c in classes}
    labels = [f"{(names or {}).get(c, c)} ({copies[c]})" for c in classes]
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, labels, rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="segment micro-AP", title=f"{title} (copies in brackets)", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    png = _figure_png(fig)
    plt.close(fig)
    return png


def render_html(doc: dict[str, Any]) -> str:
    """The page for a results.json document of ``vsc_run.run_vsc``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = doc["methods"]
    images: list[tuple[str, str]] = []
    curves = (("segment", "Segment micro-AP: precision-recall"), ("pair", "Pair micro-AP: precision-recall"))
    for kind, title in curves if methods else ():
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, v in methods.items():
            curve = v["pr_curves"][kind]
            ax.step(curve["recall"], curve["precision"], where="post", label=f"{m} ({v[kind + '_micro_ap']:.3f})")
        ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1.02), ylim=(0, 1.05))
        ax.legend(fontsize=7)
        images.append((title, _figure_png(fig)))
        plt.close(fig)
    if methods:
        images.append(("Per layout", _bars(methods, "per_layout", "Segment micro-AP per layout", LAYOUT_NAMES)))
        images.append(("Per edit", _bars(methods, "per_edit",
                                          "Segment micro-AP per edit (a copy counts in each of its edits)")))
        images.append(("Per copy length", _bars(methods, "per_copy_length", "Segment micro-AP per copied length")))
    for m, v in methods.items():
        fig, ax = plt.subplots(figsize=(6, 3))
        values = v["scores"]["true"] + v["scores"]["false"]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 40).tolist()
        for kind in ("false", "true"):
            if v["scores"][kind]:  # density of an empty list: 0 / 0
                ax.hist(v["scores"][kind], bins=bins, alpha=0.6, label=f"{kind} pairs ({len(v['scores'][kind])})",
                        density=True)
        for s in v["scores"]["nomatch_top"]:
            ax.axvline(s, color="k", lw=0.6, ls=":")
        if v.get("calibrated_threshold") is not None:
            ax.axvline(v["calibrated_threshold"], color="r", lw=1, label="calibrated threshold")
        ax.set(title=f"{m}: pair scores (dotted: top score of each no-copy query)", xlabel="score")
        ax.legend(fontsize=7)
        images.append((f"Scores: {m}", _figure_png(fig)))
        plt.close(fig)

    tables = []
    for block in markdown_tables(doc).split("\n\n"):
        rows = [line for line in block.splitlines() if not line.startswith("|---")]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
        tables.append(f"<table><tr>{head}</tr>{body}</table>")
    spans = [f"{html.escape(m)}: {html.escape(v['localization'])}" for m, v in methods.items()]
    unavailable = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in doc["unavailable"].items())
    partial = (f"<p class='bad'><b>PARTIAL run</b>: some methods did not run (below); the others' figures stand, "
               f"the comparison is incomplete.</p><ul>{unavailable}</ul>") if doc.get("partial") else ""
    ds = doc["dataset"]
    prov = doc.get("provenance", {})
    dirty = " (src/ dirty)" if prov.get("src_dirty") else ""
    prov_line = (f"<p>commit {html.escape(str(prov.get('git_commit')))}{dirty}, "
                 f"{html.escape(str(prov.get('started_utc')))} to {html.escape(str(prov.get('finished_utc')))} UTC, "
                 "load "
                 f"{(prov.get('load_start') or {}).get('loadavg_1_5_15')} at start, "
                 f"{(prov.get('load_end') or {}).get('loadavg_1_5_15')} at end</p>") if prov else ""
    figs = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{b}'/>" for t, b in images)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vidsearch eval vsc</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;text-align:left}th{max-width:9em;overflow-wrap:anywhere}table{margin:1em 0}"
        ".bad{color:#b00}</style></head><body>"
        f"<h1>VSC-style copy detection ({html.escape(doc['size'])}, seed {doc['seed']})</h1>{partial}"
        f"<p>{ds['references']} references, {ds['queries']} queries ({ds['nomatch_queries']} without a copy), "
        f"{ds['copies']} copied segments; data set {html.escape(ds['root'])} "
        f"({'cached' if ds['cached'] else 'built in %.0f s' % ds['build_s']}); "
        f"{html.escape(doc['machine']['cpu'])}, {doc['machine']['cores']} cores</p>{prov_line}"
        "<p>Segment micro-AP: VSC 2022 matching track; pair micro-AP: its descriptor track (vsc_metrics). "
        "Per-class figures score that class's copies against every false prediction. The threshold is the best-F1 "
        "pair score on the even-numbered queries; the no-copy false-positive rate and the recall at it are measured "
        "on the odd-numbered ones. The *_siblings_ignored figures leave out the predictions of references that share "
        "their imagery (a sample video, a photograph) with a true reference of the query: a diagnosis of how much "
        "look-alikes cost, not the benchmark's figure.</p>"
        "<p>Time ranges of the predictions: " + "; ".join(spans) + ". A method without ranges gets a prediction "
        "spanning the whole query and the whole reference: its segment micro-AP counts the unrelated footage of a "
        "query as predicted copy.</p>"
        + "".join(tables) + figs + "</body></html>")
