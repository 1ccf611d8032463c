"""docs/RESULTS.md section 14's int8 and query-encoder tables must equal bench/results/quant.json (the quiet run)."""

from __future__ import annotations

from typing import Any

from results_doc import marked_rows, result

INT8 = {"fp32": "fp32 (`--variant onnx`)", "int8": "**int8, the default**: per-channel, stem in float, bias corrected, "
        "calibrated on natural frames", "int8-no-bias-correction": "- bias correction",
        "int8-stem-quantised": "- stem in float", "int8-all-frames": "+ synthetic frames calibrated on",
        "int8-7bit": "+ 7-bit weights (reduce_range)", "int8-per-tensor": "per-tensor weights",
        "int8-percentile": "percentile calibration", "int8-no-stem-head": "+ head in float too",
        "int8-u8u8": "uint8 weights", "int8-old": "session <= 10's recipe", "int8-293bebc": "session 11's first recipe"}


def int8_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in INT8.items():
        v = data["effnet"]["variants"][key]
        c = v.get("cosine_to_fp32") or {"p1": 1.0, "min": 1.0}
        rows.append(f"| {label} | {c['p1']:.4f} | {c['min']:.4f} | {v['images_per_s_1t']:.0f} | {v['x_fp32_1t']:.2f}x | "
                    f"{v['x_fp32_2t']:.2f}x |")
    return rows


def vsc_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for name, m in data["vsc"]["methods"].items():
        layouts = m["per_layout"]
        rows.append(f"| {name} | {m['segment_micro_ap']:.4f} | {m['pair_micro_ap']:.4f} | "
                    f"{layouts['pip']['segment_micro_ap']:.3f} | {m['engine_ms_p50']['encode']:.0f} | "
                    f"{m['query_ms_p50']:.0f} |")
    return rows


def test_the_quantisation_tables_match_their_result_file() -> None:
    data = result("quant.json")
    assert not data["partial"] and not data["git"]["src_dirty"]
    assert marked_rows("int8-table") == int8_rows(data)
    assert marked_rows("query-encoder-table") == vsc_rows(data)
    default = data["effnet"]["variants"]["int8"]
    assert default["cosine_to_fp32"]["p1"] >= 0.98 and default["x_fp32_1t"] >= 1.8  # the int8 target


def test_the_index_encoder_table_matches_its_result_file() -> None:
    data = result("quant-vsc-sscd-distilled.json")
    assert not data["partial"] and not data["git"]["src_dirty"] and data["vsc"]["collection_encoder"] == "sscd-distilled"
    want = [f"| sscd-distilled | {name} | {m['segment_micro_ap']:.4f} | {m['pair_micro_ap']:.4f} | "
            f"{m['per_layout']['pip']['segment_micro_ap']:.3f} | {m['engine_ms_p50']['encode']:.0f} | {m['query_ms_p50']:.0f} |"
            for name, m in data["vsc"]["methods"].items()]
    assert marked_rows("index-encoder-table") == want


def test_the_distilled_seeds_table_matches_its_result_files() -> None:
    want = []
    for seed in (1, 2, 4):
        data = result(f"eval-vsc-small-seed{seed}-distilled/results.json")
        assert not data["partial"] and not data["provenance"]["src_dirty"] and data["seed"] == seed
        want += [f"| {seed} | {name} | {m['segment_micro_ap']:.4f} | {m['pair_micro_ap']:.4f} | {m['index_s']:.1f} | "
                 f"{m['query_ms_p50']:.0f} |" for name, m in data["methods"].items()]
    assert marked_rows("distilled-seeds-table") == want


def test_the_distilled_neardup_table_matches_its_result_file() -> None:
    data = result("eval-neardup-full-distilled/results.json")
    assert not data["partial"] and not data["provenance"]["src_dirty"] and data["size"] == "full"
    want = [f"| {name} | {m['mAP']:.3f} | {m['uAP']:.3f} | {min(m['per_transform_mAP'].values()):.3f} | "
            f"{m['nomatch_fp_rate']:.3f} | {m['true_match_recall_at_threshold']:.3f} | {m['localization_tIoU']:.3f} | "
            f"{m['query_ms_p50']:.0f} |" for name, m in data["methods"].items()]
    assert marked_rows("distilled-neardup-table") == want


def prune_rows(data: dict[str, Any]) -> list[str]:
    rows = []
    for name, v in data["variants"].items():
        c = v["cosine_to_teacher"]
        train = (f"{v['cosine_train_before']:.3f} -> {v['cosine_train_after']:.3f}" if "cosine_train_after" in v
                 else "-")
        rows.append(f"| {name} | {v['ratio']:.2f} | {v['macs'] / 1e6:.0f} | {c['p1']:.3f} | {c['mean']:.3f} | {train} | "
                    f"{v['images_per_s_1t']:.0f} | {v['x_teacher-int8_1t']:.2f}x | {v['x_teacher-int8_2t']:.2f}x |")
    return rows


def test_the_pruning_tables_match_their_result_file() -> None:
    data = result("prune.json")
    assert not data["partial"] and not data["git"]["src_dirty"] and data["config"]["vsc_seeds"] == [0]
    assert marked_rows("prune-table") == prune_rows(data)
    (vsc,) = data["vsc"]
    want = [f"| {name} | {m['segment_micro_ap']:.4f} | {m['pair_micro_ap']:.4f} | {m['true_pair_recall']:.3f} | "
            f"{m['query_ms_p50']:.0f} |" for name, m in vsc["methods"].items()]
    assert marked_rows("prune-vsc-table") == want
    # The prose's verdict: no pruned student is within 1 point of segment micro-AP of the teacher's queries.
    teacher = vsc["methods"]["teacher-int8"]["segment_micro_ap"]
    assert all(teacher - m["segment_micro_ap"] > 0.01 for name, m in vsc["methods"].items() if name.startswith("pruned"))
