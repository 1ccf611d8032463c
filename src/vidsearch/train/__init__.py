"""train: learned temporal models over stored frame vectors (issue #16), trained with PyTorch and
exported to ONNX, which the encode stage runs with ONNX Runtime alone (``encode/temporal.py``).

- :mod:`~vidsearch.train.datasets`: :class:`ClipSet`, clips of frame vectors (from a collection's
  ``frames.f16``, or from arrays such as Moving Fashion-MNIST's), batches, augmented views and
  look-alike negatives (same video at another time, reversed playback).
- :mod:`~vidsearch.train.models`: the torch models (LSTM, hierarchical windowed attention, the encoder of a
  seq2seq autoencoder and its training-only decoder).
- :mod:`~vidsearch.train.losses`: cross-entropy, triplet with batch-hard mining, InfoNCE.
- :mod:`~vidsearch.train.loop`: :class:`TrainConfig`, :func:`train_temporal` (seeded, deterministic,
  with progress; triplet adds a round of retraining on the clips it got wrong; seq2seq reconstruction
  alone or as pretraining) and :func:`export_onnx` (checks ONNX Runtime against torch; records the
  weights' hash in the file).

Measured (``vidsearch eval fashion --size small --temporal mean,lstm,attention``, seed 0): Moving
Fashion-MNIST direction-within-axis mAP 0.510 (mean) -> 0.958 (LSTM + ce) and 0.967 (attention + ce),
each trained in ~40 s on 1,600 train-split clips; the models cost 0.6-0.9 % of the frame encoding.

PyTorch (``pip install 'vidsearch[train]'``) is needed to train and export, never to run a model.
Nothing in store, index, encode or search imports this package.
"""

from __future__ import annotations
