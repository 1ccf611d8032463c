"""docs/RESULTS.md section 10's earlier image runs: the table bench/results_serve.py renders from their files (its
``--check`` is run by tests/bench/test_serve_bench.py), each file a clean run of what its row says."""

from __future__ import annotations

from benchload import load_bench
from results_doc import ROOT, result


def test_each_image_run_in_the_table_is_a_clean_run_of_what_its_row_says() -> None:
    renderer = load_bench("results_serve")
    doc = (ROOT / "docs" / "RESULTS.md").read_text()
    assert renderer.I_BEGIN in doc and renderer.I_END in doc
    block = doc.split(renderer.I_BEGIN, 1)[1].split(renderer.I_END, 1)[0]
    rows = [r.strip() for r in block.strip().splitlines()[2:] if r.startswith("|")]
    assert len(rows) == len(renderer.IMAGE_RUNS)
    summary = [r for r in block.strip().splitlines() if r.startswith("Over these runs")]
    ratios, none = [], 0
    headline = renderer.RESULT.stem  # the serving table's run, counted with the rows
    for name in [n for n, _ in renderer.IMAGE_RUNS] + [headline]:
        data = result(f"{name}.json")
        if "--light-encoder" in (data["config"].get("scheduler_args") or ""):
            continue
        a, b = data["per_mode"]["scheduler"]["image"], data["per_mode"]["max_batch_1"]["image"]
        if a["qps_at_limit"] and b["qps_at_limit"]:
            ratios.append(a["qps_at_limit"] / b["qps_at_limit"])
        else:
            none += 1
    target = result(f"{headline}.json")["summary"]["ratio_target"]
    ratios.sort()
    median = (ratios[(len(ratios) - 1) // 2] + ratios[len(ratios) // 2]) / 2
    assert summary == [f"Over these runs and the headline run above, with the same encoder on both servers "
                       f"({len(ratios)} sweeps): scheduler / `--max-batch 1` median {median:.2f}x, range "
                       f"{ratios[0]:.2f}x-{ratios[-1]:.2f}x; {sum(r >= target for r in ratios)} of {len(ratios)} at or "
                       f"above the {target:.2f}x target"
                       + (f"; in {none} more a server passed no rate (no ratio)." if none else ".")]
    assert none == 1  # serve-insets-default: no image rate passed on either server
    for (name, label), row in zip(renderer.IMAGE_RUNS, rows):
        data = result(f"{name}.json")
        assert not data["git"]["src_dirty"] and "image" in data["config"]["kinds"], name
        assert row.startswith(f"| {label} (`{name}.json`) | {data['git']['commit'][:7]} (False) |"), row
        light = "--light-encoder sscd-distilled" in (data["config"].get("scheduler_args") or "")
        assert light == ("light-encoder" in label), name
