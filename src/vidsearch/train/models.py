"""Temporal models in PyTorch: (B, T, D) frame vectors -> (B, D) L2-normalised segment vectors.

Each model adds a learned, order-aware term to the window's mean frame vector,
``normalize(mean(x) + out(temporal(project(x))))``, so a segment vector keeps the frame encoder's
width (same bytes per segment as mean pooling) and its appearance, and training only has to add what
the mean cannot see: the order of the frames. Windows are resampled to a fixed ``frames`` (16) before
the model (:func:`vidsearch.encode.temporal.resample_frames`), so the exported ONNX graph has one shape.

- :class:`LSTMTemporal`: a bidirectional LSTM over the 16 projected frames; the final state of each
  direction.
- :class:`Seq2SeqTemporal`: the encoder of a seq2seq (LSTM) autoencoder, its bottleneck the learned term;
  trained to reconstruct the window (:class:`Seq2SeqDecoder`), alone or as pretraining.
- :class:`DualStreamTemporal`: two streams fused: appearance (the projected frames) and motion (the
  differences of consecutive projected frames, i.e. the projection of the frame vectors' differences: a
  flow-like signal computed from what the frame encoder saw, not from pixels), each through its own
  bidirectional LSTM, the final states concatenated and mixed by a linear layer.
- :class:`AttentionTemporal`: hierarchical windowed attention: self-attention inside local windows of
  ``window`` frames (with frame positions), each window summarised by a linear map of its frames in
  order, then self-attention across the window summaries (with window positions), read out in order.
  (Mean-pooled summaries and read-out, order-blind but for the position embeddings, did not learn a
  direction at all on the tests' synthetic clips.)
"""

from __future__ import annotations

import enum

import torch
from torch import nn
from torch.nn import functional as F

from vidsearch.errors import ConfigError


class TemporalKind(enum.StrEnum):
    """Which learned temporal model (``vidsearch train --model``)."""

    LSTM = "lstm"
    ATTENTION = "attention"
    SEQ2SEQ = "seq2seq"
    DUAL = "dual"


class TemporalNet(nn.Module):
    """Shared frame: projection, an order-aware body (subclasses), projection back, residual mean."""

    kind: TemporalKind

    def __init__(self, dim: int, hidden: int, frames: int) -> None:
        super().__init__()
        if dim < 1 or hidden < 2 or hidden % 2 or frames < 2:
            raise ConfigError(f"expected dim >= 1, an even hidden >= 2 and frames >= 2, got {dim}, {hidden}, {frames}")
        self.dim, self.hidden, self.frames = dim, hidden, frames
        self.project = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim, bias=False)  # no constant term: it would pull every segment one way
        nn.init.normal_(self.out.weight, std=0.01)  # starts as mean pooling; training adds the order term

    def body(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, hidden) -> (B, hidden)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, frames, dim) float32 frame vectors -> (B, dim) float32, L2-normalised."""
        appearance = F.normalize(x.mean(dim=1), dim=-1, eps=1e-12)
        order = F.normalize(self.out(self.body(self.project(x))), dim=-1, eps=1e-12)
        return F.normalize(appearance + order, dim=-1, eps=1e-12)


def _bidirectional_final(lstm: nn.LSTM, h: torch.Tensor) -> torch.Tensor:
    """(B, T, hidden) through a bidirectional ``lstm`` of hidden // 2 units a direction -> (B, hidden): the final
    state of each direction (forward at the last step, backward at the first), concatenated."""
    half = lstm.hidden_size
    zeros = h.new_zeros((2, h.shape[0], half))  # explicit states: the ONNX graph takes any batch size
    seq, _ = lstm(h, (zeros, zeros))
    return torch.cat([seq[:, -1, :half], seq[:, 0, half:]], dim=-1)


class LSTMTemporal(TemporalNet):
    """Bidirectional LSTM over the frames; the final state of each direction, concatenated."""

    kind = TemporalKind.LSTM

    def __init__(self, dim: int, hidden: int = 128, frames: int = 16) -> None:
        super().__init__(dim, hidden, frames)
        self.lstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        return _bidirectional_final(self.lstm, torch.tanh(h))


class DualStreamTemporal(TemporalNet):
    """Appearance and motion streams, fused.

    The appearance stream is the bidirectional LSTM of :class:`LSTMTemporal` over the projected frames; the
    motion stream a second one over the differences of consecutive projected frames (the projection is linear,
    so these are the projected differences of the frame vectors: what changed between two frames, with the
    appearance they share taken out) after a linear map of their own; the two final states are concatenated
    and mixed by a linear layer (late fusion).
    """

    kind = TemporalKind.DUAL

    def __init__(self, dim: int, hidden: int = 128, frames: int = 16) -> None:
        super().__init__(dim, hidden, frames)
        self.appearance = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.motion_in = nn.Linear(hidden, hidden)
        self.motion = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.fuse = nn.Linear(2 * hidden, hidden)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        appearance = _bidirectional_final(self.appearance, torch.tanh(h))
        motion = _bidirectional_final(self.motion, torch.tanh(self.motion_in(h[:, 1:] - h[:, :-1])))
        return self.fuse(torch.cat([appearance, motion], dim=-1))


class _AttentionBlock(nn.Module):
    """Pre-norm transformer block: multi-head self-attention, then a 2x MLP, each residual."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class AttentionTemporal(TemporalNet):
    """Hierarchical windowed temporal attention: within windows of ``window`` frames, then across windows."""

    kind = TemporalKind.ATTENTION

    def __init__(self, dim: int, hidden: int = 128, frames: int = 16, window: int = 4, heads: int = 4) -> None:
        super().__init__(dim, hidden, frames)
        if frames % window or hidden % heads:
            raise ConfigError(f"window ({window}) must divide frames ({frames}) and heads ({heads}) hidden ({hidden})")
        self.window, self.windows = window, frames // window
        self.frame_position = nn.Parameter(torch.randn(window, hidden) * 0.1)
        self.window_position = nn.Parameter(torch.randn(self.windows, hidden) * 0.1)
        self.local = _AttentionBlock(hidden, heads)
        self.summarise = nn.Linear(window * hidden, hidden)  # a window's frames in order -> its summary
        self.across = _AttentionBlock(hidden, heads)
        self.readout = nn.Linear(self.windows * hidden, hidden)  # the summaries in order -> the segment's term
        self.norm = nn.LayerNorm(hidden)
        self.input_norm = nn.LayerNorm(hidden)  # projected frames at the scale of the position embeddings

    def body(self, h: torch.Tensor) -> torch.Tensor:
        h = self.input_norm(h)
        local = h.reshape(-1, self.window, self.hidden) + self.frame_position  # (B * windows, window, hidden)
        summaries = self.summarise(self.local(local).reshape(-1, self.window * self.hidden))
        summaries = summaries.reshape(-1, self.windows, self.hidden) + self.window_position
        return self.norm(self.readout(self.across(summaries).reshape(-1, self.windows * self.hidden)))


class Seq2SeqTemporal(TemporalNet):
    """The encoder of a sequence-to-sequence autoencoder: an LSTM whose final state is the bottleneck.

    Trained with :class:`Seq2SeqDecoder` to reconstruct the window's frames from the bottleneck
    (``loss="reconstruct"``, or as pretraining before another loss); only this encoder is exported.
    """

    kind = TemporalKind.SEQ2SEQ

    def __init__(self, dim: int, hidden: int = 128, frames: int = 16) -> None:
        super().__init__(dim, hidden, frames)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        zeros = h.new_zeros((1, h.shape[0], self.hidden))
        _, (state, _) = self.lstm(torch.tanh(h), (zeros, zeros))
        return state[0]


class Seq2SeqDecoder(nn.Module):
    """Bottleneck (B, hidden) -> (B, frames, dim) reconstructed frame vectors, L2-normalised: an LSTM fed the
    bottleneck at every step (training only; not exported)."""

    def __init__(self, dim: int, hidden: int, frames: int) -> None:
        super().__init__()
        self.frames = frames
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, dim)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        steps = bottleneck[:, None, :].expand(-1, self.frames, -1).contiguous()
        seq, _ = self.lstm(steps)
        return F.normalize(self.out(seq), dim=-1, eps=1e-12)


MODELS: dict[TemporalKind, type[TemporalNet]] = {TemporalKind.LSTM: LSTMTemporal, TemporalKind.ATTENTION: AttentionTemporal,
                                                 TemporalKind.SEQ2SEQ: Seq2SeqTemporal, TemporalKind.DUAL: DualStreamTemporal}


def build_model(kind: TemporalKind | str, dim: int, hidden: int = 128, frames: int = 16) -> TemporalNet:
    """A freshly initialised model of ``kind`` (draws from torch's global generator: seed it first)."""
    try:
        member = TemporalKind(kind)
    except ValueError:
        raise ConfigError(f"unknown temporal model {kind!r}; expected one of "
                          f"{', '.join(repr(k.value) for k in TemporalKind)}") from None
    return MODELS[member](dim, hidden=hidden, frames=frames)
