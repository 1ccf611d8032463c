"""docs/RESULTS.md sections 1 and 14: the ingest tables must equal bench/results/ingest.json (the quiet run)."""

from __future__ import annotations

from typing import Any

from results_doc import marked_rows, result

LABELS = {"sscd": "sscd (default)", "effnet-lite0": "effnet-lite0 (int8, its default since session 11)"}
THROUGHPUT = {"ort_fp32": "ONNX Runtime fp32 (`--variant onnx`)",
              "ort_int8": "ONNX Runtime int8 (static QDQ, per-channel, stem in float: `onnx-int8`, the default)",
              "torch": "torch eager"}
TECHNIQUES = {"all_frames": "every frame decoded (before #18)", "default": "**default**: planned on packet times, "
              "unsampled non-reference frames and groups not decoded", "loop_filter_nonref": "+ no loop filter on "
              "non-reference frames", "loop_filter_all": "+ no loop filter at all", "skip_nonref": "+ every "
              "non-reference frame skipped", "skip_nonref+loop_filter_all": "+ both",
              "keyframes_only": "key frames only (one sample per 2 s group)"}


def ingest_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for name, run in data["ingest"].items():
        best, share = run["best"], run["best"]["stage_share_of_wall"]
        rows.append(f"| {LABELS.get(name, name)} | {best['video_s_per_wall_s']:.1f} | {share['decode'] * 100:.0f} % | "
                    f"{share['encode'] * 100:.0f} % | {share['store'] * 100:.0f} % |")
    return rows


def throughput_rows(data: dict[str, Any]) -> list[str]:
    v = data["effnet_throughput"]["variants"]
    return [f"| {label} | {v[k]['images_per_s']:.1f} | {v[k + '_1t']['images_per_s']:.1f} |" for k, label in THROUGHPUT.items()]


def hd_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for size, s in data["hd"].items():
        f = data["hd_details"]["files"][size]
        rows.append(f"| {size} ({f['width']}x{f['height']}, {f['duration_s']:.1f} s) | {s['video_s_per_wall_s']:.1f} | "
                    f"{s['decode_only']:.1f} | {s['encode_only']:.1f} | {f['overlap_speedup']:.2f} | {f['bound']} |")
    return rows


def technique_rows(data: dict[str, Any]) -> list[str]:
    files = data["hd_details"]["files"]
    rows = []
    for key, label in TECHNIQUES.items():
        cells = []
        for size in ("720p", "1080p"):
            t = files[size]["techniques"][key]
            same = "identical" if t["identical_to_every_frame_decode"] else f"cos p1 {t['sscd_cosine_to_exact']['p1']:.3f}"
            cells.append(f"{t['video_s_per_wall_s']:.1f} ({t['stats']['frames_decoded']} frames; {same})")
        rows.append(f"| {label} | {' | '.join(cells)} |")
    return rows


def test_the_ingest_tables_match_their_result_file() -> None:
    data = result("ingest.json")
    assert not data["partial"] and not data["git"]["src_dirty"]
    assert marked_rows("ingest-table") == ingest_rows(data)
    assert marked_rows("effnet-throughput-table") == throughput_rows(data)
    assert marked_rows("hd-table") == hd_rows(data)
    assert marked_rows("hd-techniques-table") == technique_rows(data)


LATENCY = {"clip": "10 s clip, 320 px (`clip`)", "clip720": "10 s clip, 720p H.264 (`clip720`)",
           "image": "PNG image 1280x720 (`image`)", "stored": "stored range `ID@20-30` (`stored`)"}


def latency_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in LATENCY.items():
        r = data["queries"][key]
        t, m = r["timings"], r["top1_match"]
        fmt = (lambda x: f"{x:.1f}") if key == "stored" else (lambda x: f"{x:.0f}")
        rows.append(f"| {label} | {r['top1']} {m['ref_start']:.1f}-{m['ref_end']:.1f} s | {fmt(t['total']['p50_ms'])} / "
                    f"{fmt(t['total']['p99_ms'])} | {fmt(t['decode']['p50_ms'])} | {fmt(t['encode']['p50_ms'])} | "
                    f"{t['search']['p50_ms']:.1f} |")
    return rows


def test_the_latency_table_matches_its_result_file() -> None:
    data = result("latency.json")
    assert not data["partial"] and not data["git"]["src_dirty"]
    assert marked_rows("latency-table") == latency_rows(data)


def test_the_light_query_encoder_latency_table_matches_its_result_file() -> None:
    data = result("latency-q-sscd-distilled.json")
    assert not data["partial"] and not data["git"]["src_dirty"]
    assert data["config"]["search_params"]["query_encoder"] == "sscd-distilled"
    assert marked_rows("latency-light-table") == latency_rows(data)
