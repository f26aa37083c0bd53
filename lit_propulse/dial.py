"""A fidelity / realism dial at inference, between Pro-PULSE's two encoders (Sec. III-D, III-E).

E_W gives one w repeated over every row (Eq. (4)): on the generator's manifold, less faithful to the
LR. E_W+ at the end of its progressive training gives every row its own code (Eq. (10) with the last
scale): more faithful, further from W. Two dials move between them:

* :func:`scale_dial` — the progressive schedule read backwards: position n = how many of E_W+'s
  scales replace E_W's code. n = len(scales) is E_W+ as trained (rows [0, num_ws_up_to(r_last)) from
  E_W+); taking the finest scale away (n - 1) gives its rows back to E_W's w, exactly the w+ that
  Eq. (10) composed at the previous stage of training; n = 0 is E_W alone. Positions are the
  encoder's scales, the row layout is :func:`~lit_propulse.inference.encode_ws`'s.
* :func:`blend_dial` — a straight interpolation w+ = (1 - a) E_W + a E_W+, a in [0, 1].

:func:`dial_ends` computes both ends once per LR; each position is then a cheap composition, so a
whole sweep costs two encoder passes and one generator pass per position. :class:`DialedUpsampler`
answers at one position (``upsample --dial`` / ``--dial-scales``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_propulse.inference import ProPulseUpsampler, encode_ws
from lit_propulse.networks.encoders import EWPlusEncoder

__all__ = ["DialedUpsampler", "blend_dial", "dial_ends", "dial_rows", "scale_dial"]


def _check_pair(ws_ew: Tensor, ws_ewplus: Tensor) -> None:
    if ws_ew.ndim != 3 or ws_ew.shape != ws_ewplus.shape:
        raise ValueError(f"expected two w+ of one shape [B, num_ws, w_dim], got {tuple(ws_ew.shape)} and {tuple(ws_ewplus.shape)}")


def dial_rows(encoder: EWPlusEncoder, position: int) -> int:
    """How many leading w+ rows come from E_W+ at scale-dial ``position`` (0 .. len(encoder.scales)):
    0 at position 0, else num_ws_up_to(scales[position - 1]) (:attr:`EWPlusEncoder.rows`)."""
    n = len(encoder.scales)
    if not 0 <= position <= n:
        raise ValueError(f"dial position must be in [0, {n}] (0 = E_W, {n} = every E_W+ scale), got {position}")
    return 0 if position == 0 else encoder.rows[encoder.scales[position - 1]][1]


def dial_ends(G: nn.Module, encoder: EWPlusEncoder, ew_encoder: nn.Module, lr: Tensor, scale: int | None = None) -> tuple[Tensor, Tensor]:
    """(E_W's w+ of Eq. (4), E_W+'s w+ of Eq. (10) at ``scale``) for LR [B, 3, l, l], each [B, num_ws, w_dim].

    ``scale``: the progressive scale E_W+ reached (None = its last scale); rows past it are E_W's w."""
    if not isinstance(encoder, EWPlusEncoder):
        raise ValueError(f"the dial moves between E_W and E_W+: encoder must be an EWPlusEncoder, got {type(encoder).__name__}")
    scale = encoder.scales[-1] if scale is None else int(scale)
    with torch.no_grad():
        ws_ew = encode_ws(G, ew_encoder, lr)  # [B, num_ws, w_dim]
        ws_ewplus = encode_ws(G, encoder, lr, scale, ew_encoder, "ew")  # [B, num_ws, w_dim]
    return ws_ew, ws_ewplus


def scale_dial(ws_ew: Tensor, ws_ewplus: Tensor, rows: int) -> Tensor:
    """The scale dial: rows [0, rows) from E_W+'s w+, the rest from E_W's (rows = :func:`dial_rows`).
    rows = 0 gives ``ws_ew``, rows = num_ws (or E_W+'s own row count) gives ``ws_ewplus``."""
    _check_pair(ws_ew, ws_ewplus)
    if not 0 <= rows <= ws_ew.shape[1]:
        raise ValueError(f"rows must be in [0, {ws_ew.shape[1]}], got {rows}")
    return torch.cat([ws_ewplus[:, :rows], ws_ew[:, rows:]], dim=1)  # [B, num_ws, w_dim]


def blend_dial(ws_ew: Tensor, ws_ewplus: Tensor, alpha: float) -> Tensor:
    """The blend dial: (1 - alpha) E_W + alpha E_W+, alpha in [0, 1] (0 = E_W, 1 = E_W+, exactly)."""
    _check_pair(ws_ew, ws_ewplus)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = E_W, 1 = E_W+), got {alpha}")
    if alpha == 0:
        return ws_ew.clone()
    if alpha == 1:
        return ws_ewplus.clone()
    return torch.lerp(ws_ew, ws_ewplus, float(alpha))  # [B, num_ws, w_dim]


class DialedUpsampler(ProPulseUpsampler):
    """A Pro-PULSE upsampler (E_W+ with its E_W) that answers at one dial position: its :meth:`encode`
    is :func:`blend_dial` at ``alpha`` or :func:`scale_dial` at ``position`` of :func:`dial_ends`; the
    rendering (G_ds, side outputs, noise) is the upsampler's. Refinement and samples wrap it like any
    upsampler (they start from its w+).

    Args:
        upsampler: the trained upsampler; its encoder must be an E_W+ with the E_W export (guidance "ew").
        alpha: blend dial, in [0, 1] (0 = E_W, 1 = E_W+); None = use ``position``.
        position: scale dial, in [0, len(encoder.scales)] (0 = E_W, len = every E_W+ scale); None = use ``alpha``.
    """

    def __init__(self, upsampler: ProPulseUpsampler, alpha: float | None = None, position: int | None = None) -> None:
        if (alpha is None) == (position is None):
            raise ValueError(f"give exactly one of alpha (blend dial) and position (scale dial), got alpha={alpha}, position={position}")
        enc = upsampler.encoder
        if not isinstance(enc, EWPlusEncoder) or upsampler.ew_encoder is None or upsampler.guidance != "ew":
            raise ValueError(
                f"the dial moves between E_W and E_W+: it needs an E_W+ encoder with its E_W (guidance 'ew'), got "
                f"{type(enc).__name__}, E_W {'given' if upsampler.ew_encoder is not None else 'missing'}, guidance {upsampler.guidance!r}"
            )
        super().__init__(upsampler.gds, enc, upsampler.ew_encoder, upsampler.scale, "ew", upsampler.noise)
        if alpha is not None:
            if not 0.0 <= float(alpha) <= 1.0:
                raise ValueError(f"alpha must be in [0, 1] (0 = E_W, 1 = E_W+), got {alpha}")
            self.alpha, self.position, self.rows = float(alpha), None, None
        else:
            self.alpha, self.position, self.rows = None, int(position), dial_rows(enc, int(position))

    def describe(self) -> str:
        """One line for reports."""
        if self.alpha is not None:
            return f"blend dial: w+ = {1 - self.alpha:g}·E_W + {self.alpha:g}·E_W+ (0 = E_W, 1 = E_W+)"
        n = len(self.encoder.scales)
        return f"scale dial: position {self.position} of {n}, the first {self.rows} w+ rows from E_W+ (scales {self.encoder.scales[: self.position]}), the rest E_W's"

    def encode(self, lr: Tensor) -> Tensor:
        if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[-2:] != (self.lr_size, self.lr_size):
            raise ValueError(f"expected LR [B, 3, {self.lr_size}, {self.lr_size}], got {tuple(lr.shape)}")
        ws_ew, ws_ewplus = dial_ends(self.gds.generator, self.encoder, self.ew_encoder, lr, self.scale)  # [B, num_ws, w_dim] each
        if self.alpha is not None:
            return blend_dial(ws_ew, ws_ewplus, self.alpha)
        return scale_dial(ws_ew, ws_ewplus, self.rows)
