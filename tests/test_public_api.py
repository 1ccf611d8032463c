"""The package's public names: every error class and every configuration choice is exported."""

from __future__ import annotations

import inspect

import vidsearch
from vidsearch import config, errors


def test_every_error_class_is_exported() -> None:
    classes = {name for name, obj in vars(errors).items()
               if inspect.isclass(obj) and issubclass(obj, errors.VidsearchError)}
    assert classes <= set(vidsearch.__all__), sorted(classes - set(vidsearch.__all__))
    for name in classes:
        assert getattr(vidsearch, name) is getattr(errors, name)


def test_configuration_and_its_choices_are_exported() -> None:
    for name in ("CollectionConfig", "DecodeConfig", "SegmentConfig", "EncodeConfig", "IndexConfig",
                 "IndexKind", "Quantizer", "Aggregator"):
        assert name in vidsearch.__all__ and getattr(vidsearch, name) is getattr(config, name)


def test_every_listed_name_resolves() -> None:
    for name in vidsearch.__all__:
        assert getattr(vidsearch, name) is not None, name
