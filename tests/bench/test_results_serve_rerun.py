"""docs/RESULTS.md section 10's session-12 image re-runs must equal their result files."""

from __future__ import annotations

from results_doc import marked_rows, result

RUNS = {"serve-image-baseline.json": "image sweep, steps of >= 100 requests (as above)",
        "serve-image-300.json": "image sweep, steps of >= 300 requests (`--image-min-requests 300`)",
        "serve-light.json": "image sweep, the scheduler's server with `--light-encoder sscd-distilled`"}


def test_the_image_rerun_table_matches_its_result_files() -> None:
    want = []
    for name, label in RUNS.items():
        data = result(name)
        assert not data["git"]["src_dirty"] and data["config"]["kinds"] == ["image"]
        s = data["summary"]
        p503 = "-" if s["overload_503_p99_ms"] is None else f"{s['overload_503_p99_ms']:.1f}"
        want.append(f"| {label} | {s['image_qps_at_target_scheduler']:.1f} | {s['image_qps_at_target_max_batch_1']:.1f} | "
                    f"{s['ratio']:.2f}x | {s['overload_offered_rps']:.1f}, {s['admitted_p99_at_2x_ms']:.1f}, "
                    f"{s['overload_503_count']}, {p503} |")
    assert marked_rows("serve-image-rerun-table") == want
    assert "--light-encoder sscd-distilled" in result("serve-light.json")["config"]["scheduler_args"]
