"""Retrieval methods compared by the benchmarks: vidsearch itself, its exact frame-level scan
(the upper bound), and peers (see ``evaluate/peers.py``). All share one small interface."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import CollectionConfig
from vidsearch.errors import DecodeError, NotFittedError
from vidsearch.search.results import SearchParams


@dataclass(frozen=True)
class Reference:
    """A reference video of a benchmark: ``ref_id`` is the benchmark's name for it."""

    ref_id: str
    path: Path


@dataclass(frozen=True)
class Prediction:
    """One predicted (query, reference) pair; higher ``score`` is more confident.
    ``ref_range``/``query_range`` are matched seconds when the method localises, else None."""

    ref_id: str
    score: float
    ref_range: tuple[float, float] | None = None
    query_range: tuple[float, float] | None = None


class RetrievalMethod(Protocol):
    """Index references once, then answer queries with ranked predictions (best first)."""

    name: str

    def index(self, references: list[Reference]) -> None: ...

    def query(self, path: Path, k: int) -> list[Prediction]: ...

    def close(self) -> None: ...


class VidsearchMethod:
    """A vidsearch collection built in a temporary folder with the given configuration.

    Methods that differ only in search parameters (re-rank modes, crops, ``/adc``) share one
    collection per (configuration, references) within a process: it is built (encoded) once.
    """

    _built: dict[str, tuple[Any, Path, dict[str, str]]] = {}  # key -> (its TemporaryDirectory, path, ref of video)

    def __init__(self, name: str, config: CollectionConfig | None = None, params: SearchParams | None = None) -> None:
        self.name = name
        self.config = config or CollectionConfig()
        self.params = params or SearchParams()
        self._engine: Any = None
        self._ref_of_video: dict[str, str] = {}
        self.rerank_ms: list[float] = []

    def index(self, references: list[Reference]) -> None:
        import json

        from vidsearch.collection import Collection
        from vidsearch.search.engine import Engine

        key = json.dumps([self.config.to_dict(), [(r.ref_id, str(r.path)) for r in references]], sort_keys=True)
        if key not in self._built:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
            tmp = tempfile.TemporaryDirectory(prefix=f"vidsearch-eval-{safe}-")  # removed when the process ends
            path = Path(tmp.name) / "coll"
            with Collection.create(path, self.config) as coll:
                reports = coll.add([r.path for r in references])
            ref_of_video = {}
            for ref, rep in zip(references, reports):
                if rep.video_id is None:
                    raise DecodeError(f"{self.name}: reference {ref.ref_id} ({ref.path}) failed to index: {rep.error}")
                ref_of_video[rep.video_id] = ref.ref_id
            self._built[key] = (tmp, path, ref_of_video)
        _, path, self._ref_of_video = self._built[key]
        self._engine = Engine.open(path)

    def query(self, path: Path, k: int) -> list[Prediction]:
        if self._engine is None:
            raise NotFittedError(f"{self.name}: call index() before query()")
        result = self._engine.search(path, k=k, params=self.params)
        self.rerank_ms.append(result.rerank_ms)
        out = []
        for hit in result.results:
            m = hit.matches[0] if hit.matches else None
            out.append(Prediction(
                self._ref_of_video[hit.video_id], float(hit.score),
                (m.ref_start, m.ref_end) if m else None, (m.query_start, m.query_end) if m else None,
            ))
        return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


class FrameScanMethod:
    """Exact linear scan over uncompressed frame vectors: for each reference, the mean over query
    frames of the best cosine with any reference frame. No segments, no index: the upper bound
    that the segment index is measured against."""

    def __init__(self, name: str = "exact-frame-scan", encoder: str = "sscd", fps: float = 1.0) -> None:
        from vidsearch.config import DecodeConfig, EncodeConfig

        self.name = name
        self.config = CollectionConfig(decode=DecodeConfig(fps=fps), encode=EncodeConfig(encoder=encoder))
        self._refs: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._encoder: Any = None

    def _encode(self, path: Path) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        from vidsearch.encode.pipeline import MediaEncoder

        if self._encoder is None:
            self._encoder = MediaEncoder(self.config)
        media = self._encoder.encode_file(path)
        return media.times, media.frame_vectors

    def index(self, references: list[Reference]) -> None:
        for ref in references:
            times, vectors = self._encode(ref.path)
            self._refs.append((ref.ref_id, times, vectors))

    def query(self, path: Path, k: int) -> list[Prediction]:
        _, q = self._encode(path)
        scored = []
        for ref_id, times, vectors in self._refs:
            sims = q @ vectors.T  # (Fq, Fr)
            best = sims.argmax(axis=1)
            score = float(sims.max(axis=1).mean())
            scored.append(Prediction(ref_id, score, (float(times[best].min()), float(times[best].max()) + 1.0)))
        scored.sort(key=lambda p: -p.score)
        return scored[:k]

    def close(self) -> None:
        self._refs.clear()
