"""train: learned temporal models over stored frame vectors (issue #16), trained with PyTorch and
exported to ONNX, which the encode stage runs with ONNX Runtime alone (``encode/temporal.py``).

- :mod:`~vidsearch.train.datasets`: :class:`ClipSet`, clips of frame vectors (from a collection's
  ``frames.f16``, or from arrays such as Moving Fashion-MNIST's), batches, augmented views and
  look-alike negatives (same video at another time, reversed playback).
- :mod:`~vidsearch.train.models`: the torch models (LSTM, hierarchical windowed attention).
- :mod:`~vidsearch.train.losses`: cross-entropy, triplet with batch-hard mining, InfoNCE.
- :mod:`~vidsearch.train.loop`: :class:`TrainConfig`, :func:`train_temporal` (seeded, deterministic,
  with progress; triplet adds a round of retraining on the clips it got wrong) and
  :func:`export_onnx` (checks ONNX Runtime against torch; records the weights' hash in the file).

PyTorch (``pip install 'vidsearch[train]'``) is needed to train and export, never to run a model.
Nothing in store, index, encode or search imports this package.
"""

from __future__ import annotations
