"""docs/RESULTS.md section 12's PAR table must be what fashion_eval.par_table renders from its result file."""

from __future__ import annotations

from results_doc import marked_rows, result

from vidsearch.evaluate.fashion_eval import par_table


def test_the_par_table_matches_its_result_file() -> None:
    doc = result("fashion-temporal-par.json")
    assert doc["git"]["src_dirty"] is False and not doc["partial"]
    assert marked_rows("fashion-par-table") == [r.strip() for r in par_table(doc["moving"], 5).splitlines()[2:]]
    # the prose: PAR changes no learned model's F1@5 and costs mean pooling at most 0.002
    for name, r in doc["moving"].items():
        par = r["labels"]["motion_par"]
        change = par["par"]["f1@5"] - par["plain"]["f1@5"]
        assert (change == 0) if "+mean" not in name else (-0.002 <= change <= 0), name
