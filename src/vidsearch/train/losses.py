"""Losses over L2-normalised embeddings (B, D); similarity is cosine, distance ``1 - cosine``.

- :func:`cross_entropy`: a cosine classifier (normalised class weights, scale ``s``), cross-entropy.
- :func:`batch_hard_triplet`: for each anchor, its farthest positive and nearest negative in the batch
  (Hermans et al. 2017), hinge with ``margin``.
- :func:`info_nce`: each anchor must pick its positive view among every other view of the batch plus its
  own look-alike negatives (reversed playback, same video at another time), at temperature ``tau``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def cross_entropy(z: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, scale: float = 16.0) -> torch.Tensor:
    """z: (B, D) normalised; weight: (C, D) class weights; labels: (B,) int64 -> scalar loss."""
    logits = scale * z @ F.normalize(weight, dim=-1).T
    return F.cross_entropy(logits, labels)


def batch_hard_triplet(z: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-hard triplet loss; returns (loss, fraction of anchors still violating the margin).

    Anchors without a positive or without a negative in the batch are left out.
    """
    distance = 1.0 - z @ z.T  # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return z.sum() * 0.0, torch.tensor(0.0)
    hardest_positive = torch.where(positive, distance, torch.full_like(distance, -1.0)).max(dim=1).values
    hardest_negative = torch.where(negative, distance, torch.full_like(distance, 4.0)).min(dim=1).values
    hinge = F.relu(hardest_positive - hardest_negative + margin)[valid]
    return hinge.mean(), (hinge > 0).float().mean()


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, lookalikes: torch.Tensor, lookalike_mask: torch.Tensor,
             tau: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch and look-alike negatives.

    Args:
        anchors, positives: (B, D) two views of each clip.
        lookalikes: (B, L, D) each anchor's own hard negatives (its clip reversed, its video at another time).
        lookalike_mask: (B, L) bool, False where a look-alike does not exist (left out of the softmax).
        tau: temperature.

    Returns:
        The mean, over both directions, of the cross-entropy of picking the positive.
    """
    batch = len(anchors)
    in_batch = anchors @ positives.T / tau  # (B, B): diagonal = positives
    own = torch.einsum("bd,bld->bl", anchors, lookalikes) / tau
    own = own.masked_fill(~lookalike_mask, float("-inf"))
    target = torch.arange(batch)
    forward = F.cross_entropy(torch.cat([in_batch, own], dim=1), target)
    own_back = torch.einsum("bd,bld->bl", positives, lookalikes) / tau
    own_back = own_back.masked_fill(~lookalike_mask, float("-inf"))
    backward = F.cross_entropy(torch.cat([in_batch.T, own_back], dim=1), target)
    return (forward + backward) / 2
