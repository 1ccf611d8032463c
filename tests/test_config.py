"""config: choices are enums checked once; manifests keep (and old ones hold) plain strings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vidsearch.config import (
    Aggregator,
    CollectionConfig,
    DecodeConfig,
    EncodeConfig,
    IndexConfig,
    IndexKind,
    Quantizer,
    SegmentConfig,
)
from vidsearch.errors import CollectionError, ConfigError

# the "config" object of a manifest.json written before the enums (format_version 1)
OLD_MANIFEST_CONFIG = {
    "decode": {"fps": 1.0, "keyframes_only": False},
    "segment": {"window": 2.0, "stride": 1.0},
    "encode": {"encoder": "sscd-distilled", "aggregator": "mean", "batch_size": 32},
    "index": {"kind": "ivfpq", "pq_m": 32, "nlist": 0, "quantizer": "opq", "reduce": -1, "train_min": 20000, "seed": 0},
}


@pytest.mark.parametrize("config", [
    CollectionConfig(),
    CollectionConfig(encode=EncodeConfig(encoder="effnet-lite0"), index=IndexConfig(kind="ivfpq", quantizer="learned")),
    CollectionConfig(DecodeConfig(fps=2.0, keyframes_only=True), SegmentConfig(3.0, 1.5),
                     index=IndexConfig(kind=IndexKind.FLAT, quantizer=Quantizer.OPQ, pq_m=16, seed=3)),
])
def test_round_trip_through_json(config: CollectionConfig) -> None:
    plain = config.to_dict()
    assert CollectionConfig.from_dict(json.loads(json.dumps(plain))) == config
    assert CollectionConfig.from_dict(dataclasses.asdict(config)) == config
    # to_dict holds plain JSON types, as manifest.json does
    assert type(plain["index"]["kind"]) is str and type(plain["encode"]["aggregator"]) is str


def test_old_manifest_strings_load_as_members_that_still_compare_as_strings() -> None:
    config = CollectionConfig.from_dict(OLD_MANIFEST_CONFIG)
    assert config.index.kind is IndexKind.IVFPQ and config.index.quantizer is Quantizer.OPQ
    assert config.encode.aggregator is Aggregator.MEAN
    assert config.index.kind == "ivfpq" and config.index.quantizer in ("pq", "opq", "learned")
    assert f"{config.index.kind}/{config.index.quantizer}" == "ivfpq/opq"
    assert {"ivfpq": 1}[config.index.kind] == 1  # same hash as the string
    assert config.to_dict() == OLD_MANIFEST_CONFIG
    assert json.dumps(config.to_dict(), sort_keys=True) == json.dumps(OLD_MANIFEST_CONFIG, sort_keys=True)


def test_defaults_unchanged() -> None:
    index = IndexConfig()
    assert (index.kind, index.pq_m, index.nlist, index.quantizer, index.reduce, index.train_min, index.seed) == (
        "auto", 32, 0, "pq", -1, 20_000, 0)
    assert (EncodeConfig().encoder, EncodeConfig().aggregator, EncodeConfig().batch_size) == ("sscd", "mean", 32)


def test_bad_choices_say_what_is_expected() -> None:
    with pytest.raises(ConfigError, match="unknown index kind 'hnsw'; expected one of 'auto', 'flat', 'ivfpq', 'milvus'"):
        IndexConfig(kind="hnsw")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown quantizer 'rq'; expected one of 'pq', 'opq', 'learned'"):
        IndexConfig(quantizer="rq")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown temporal aggregator 'max'; expected one of 'mean'"):
        EncodeConfig(aggregator="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown encoder 'clip'"):
        CollectionConfig.from_dict({"encode": {"encoder": "clip"}})
    with pytest.raises(ConfigError, match="batch_size"):
        EncodeConfig(batch_size=0)
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        IndexConfig(kind="IVFPQ")  # type: ignore[arg-type]  # values are case-sensitive, as stored


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        IndexConfig().kind = IndexKind.FLAT  # type: ignore[misc]


def test_a_milvus_store_needs_its_uri_and_a_known_index_type() -> None:
    cfg = IndexConfig(kind="milvus", milvus_uri="milvus:segments.db", milvus_index="IVF_SQ8")
    assert CollectionConfig.from_dict(CollectionConfig(index=cfg).to_dict()).index == cfg
    for bad in (dict(kind="milvus"), dict(milvus_uri="milvus:x.db"), dict(kind="milvus", milvus_uri="/x.db"),
                dict(kind="milvus", milvus_uri="milvus:x.db", milvus_index="ANNOY")):
        with pytest.raises(ConfigError, match="milvus"):
            IndexConfig(**bad)  # type: ignore[arg-type]


def test_a_new_collection_pins_its_encoders_default_variant_and_old_manifests_keep_fp32(tmp_path):
    """effnet-lite0 defaults to int8: a new collection records it; a manifest without the field (made before it)
    stays on fp32 ('onnx'), and opening it with the same options does not ask for a change."""
    from vidsearch import Collection
    from vidsearch.config import resolve_variant, runtime_variant
    from vidsearch.encode import registry
    from vidsearch.errors import ConfigError

    assert registry.get("effnet-lite0").check_variant(None) == "onnx-int8"
    effnet = CollectionConfig(encode=EncodeConfig(encoder="effnet-lite0"))
    assert resolve_variant(effnet.encode).variant == "onnx-int8"
    assert resolve_variant(EncodeConfig()).variant == "" and runtime_variant(EncodeConfig()) == "onnx"
    assert "variant" not in CollectionConfig().to_dict()["encode"]  # an sscd manifest is the one it always was
    with Collection.create(tmp_path / "new", effnet) as coll:
        assert coll.config.encode.variant == "onnx-int8"
    assert json.loads((tmp_path / "new" / "manifest.json").read_text())["config"]["encode"]["variant"] == "onnx-int8"
    with Collection.open_or_create(tmp_path / "new", effnet) as coll:  # the same options: no change asked
        assert coll.config.encode.variant == "onnx-int8"
    fp32 = CollectionConfig(encode=EncodeConfig(encoder="effnet-lite0", variant="onnx"))
    with pytest.raises(CollectionError, match="cannot change"):
        Collection.open_or_create(tmp_path / "new", fp32)
    # a manifest written before the field: fp32, whatever the default is now
    old = CollectionConfig.from_dict({**effnet.to_dict(), "encode": {"encoder": "effnet-lite0", "aggregator": "mean",
                                                                      "batch_size": 32}})
    assert old.encode.variant == "" and runtime_variant(old.encode) == "onnx"
    with pytest.raises(ConfigError, match="has no variant 'onnx-int8'"):
        EncodeConfig(encoder="sscd", variant="onnx-int8")
