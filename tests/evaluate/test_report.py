"""Method names of `vidsearch eval` map to the configurations they promise."""

import pytest

from vidsearch.errors import ConfigError
from vidsearch.evaluate.report import make_method


def test_compressed_variants_and_rerank_modes_parse() -> None:
    m = make_method("vidsearch-sscd@opq32/adc:par")
    try:
        assert m.config.encode.encoder == "sscd"
        idx = m.config.index
        assert (idx.kind, idx.quantizer, idx.pq_m) == ("ivfpq", "opq", 32)
        assert idx.reduce == 0  # quantizers compared on the full segment vector, not a PCA projection
        assert m.params.rerank_depth == 0 and m.params.rerank == "par"
    finally:
        m.close()
    m = make_method("vidsearch-effnet-lite0@learned64")
    try:
        assert m.config.encode.encoder == "effnet-lite0"
        assert (m.config.index.quantizer, m.config.index.pq_m) == ("learned", 64) and m.params.rerank_depth > 0
    finally:
        m.close()
    m = make_method("vidsearch-sscd-distilled")
    try:
        assert m.config.index.kind == "auto" and m.params.rerank == "none"
        assert m.config.index.reduce == -1  # the collection default projects wide vectors
    finally:
        m.close()


@pytest.mark.parametrize("bad", ["vidsearch-sscd@foo", "vidsearch-sscd@pq", "vidsearch-sscd@pq32/xyz"])
def test_bad_index_spec_says_what_is_expected(bad: str) -> None:
    with pytest.raises(ConfigError, match="expected @<pq|opq|learned><M>"):
        make_method(bad)


def test_collection_overrides_reach_every_vidsearch_method() -> None:
    m = make_method("vidsearch-sscd@pq16/adc", {"fps": 4.0, "window": 1.0, "stride": 0.25})
    try:
        cfg = m.config
        assert (cfg.decode.fps, cfg.segment.window, cfg.segment.stride) == (4.0, 1.0, 0.25)
        assert cfg.index.pq_m == 16
    finally:
        m.close()
    m = make_method("vidsearch-sscd", {"fps": None, "window": None, "stride": None})  # CLI defaults: unchanged
    try:
        assert (m.config.decode.fps, m.config.segment.window, m.config.segment.stride) == (1.0, 2.0, 1.0)
    finally:
        m.close()


@pytest.mark.parametrize("bad", ["bogus", "vidsearch-bogus", "exact-frame-scan-bogus", ""])
def test_unknown_method_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="expected"):
        make_method(bad)


def test_run_eval_checks_every_method_before_rendering_the_benchmark(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vidsearch.evaluate.report import run_eval

    with pytest.raises(ConfigError, match="unknown method 'vidsearch_sscd'"):
        run_eval("neardup", tmp_path, methods=["vidsearch-sscd", "vidsearch_sscd"])
    assert list(tmp_path.iterdir()) == []  # nothing rendered, nothing written


def test_method_flags_turn_each_search_improvement_on_or_off():
    default = make_method("vidsearch-sscd").params
    assert default.insets and default.norm_beta == 0.5 and default.norm_rank == 30 and not default.crops
    p = make_method("vidsearch-sscd:par+crops+noinsets+nonorm").params
    assert (p.rerank, p.crops, p.insets, p.norm_beta) == ("par", True, False, 0.0)
    with pytest.raises(ConfigError, match=r"\+nope"):
        make_method("vidsearch-sscd+nope")
