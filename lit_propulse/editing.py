"""Semantic editing of super-resolved faces (Pro-PULSE Fig. 9, Sec. IV).

Pro-PULSE's output is a StyleGAN2 render of the w+ its encoder predicts, so a latent direction
(InterFaceGAN's attribute boundaries, GANSpace components, ...) edits the super-resolved face:

    ws' = ws + s · d        for each strength s (Fig. 9 varies s along a row)

and G_ds renders ws' at every resolution (final image and every side output) with
:meth:`~lit_propulse.inference.ProPulseUpsampler.render`. ``d`` is either one direction for every
layer ([w_dim], or InterFaceGAN's [1, w_dim] boundary files) or one per layer ([num_ws, w_dim]);
``layers`` restricts the edit to some rows of w+ (coarse rows change pose and shape, fine rows
colour and texture). Directions are used as given (InterFaceGAN's are unit normals; nothing is
normalised here), so strengths are in the direction's own units.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_propulse.core.images import make_grid, resize_nearest
from lit_propulse.core.weights import safe_load

DIRECTION_SUFFIXES = (".npy", ".pt", ".pth")


def load_direction(path: str | os.PathLike) -> Tensor:
    """A direction file as a float32 tensor, shape unchecked (see :func:`layer_direction`).

    ``.npy`` (``numpy.save``; InterFaceGAN's boundaries) or ``.pt`` / ``.pth`` (``torch.save`` of a
    tensor or array, or of a dict holding exactly one). Loaded without pickle code execution
    (:func:`~lit_propulse.core.weights.safe_load`): an unreadable file is a ``ValueError``, a missing
    one a ``FileNotFoundError``.
    """
    p = str(path)
    suffix = os.path.splitext(p)[1].lower()
    if suffix not in DIRECTION_SUFFIXES:
        raise ValueError(f"{p}: a direction is a .npy or .pt file, got {suffix or 'no suffix'!r}")
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: direction file not found")
    if suffix == ".npy":
        try:
            arr: Any = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{p}: not a readable .npy array ({e})") from None
    else:
        arr = safe_load(p, "expected a latent direction (torch.save of a tensor, or of a dict holding one)")
        if isinstance(arr, dict):
            values = [v for v in arr.values() if isinstance(v, (Tensor, np.ndarray))]
            if len(values) != 1:
                raise ValueError(f"{p}: a dict direction file must hold exactly one tensor, found keys {sorted(map(str, arr))}")
            arr = values[0]
    if not isinstance(arr, (Tensor, np.ndarray)):
        raise ValueError(f"{p}: expected a tensor / array, found a {type(arr).__name__}")
    d = torch.as_tensor(np.asarray(arr) if isinstance(arr, np.ndarray) else arr).float()
    if not bool(torch.isfinite(d).all()):
        raise ValueError(f"{p}: the direction holds non-finite values")
    if not bool(torch.isfinite(d.norm())):
        raise ValueError(f"{p}: the direction's norm overflows float32 (values up to {float(d.abs().max()):.3g}); scale it down")
    return d


def layer_direction(direction: Tensor, num_ws: int, w_dim: int) -> Tensor:
    """Any accepted direction shape -> [num_ws, w_dim]: [w_dim] and [1, w_dim] (InterFaceGAN) are
    the same direction on every layer; [num_ws, w_dim] is one per layer."""
    d = torch.as_tensor(direction)
    shape = tuple(d.shape)
    if shape in ((w_dim,), (1, w_dim)):
        return d.reshape(1, w_dim).expand(num_ws, w_dim)
    if shape == (num_ws, w_dim):
        return d
    raise ValueError(
        f"direction of shape {list(shape)} does not fit this generator: expected [{w_dim}] (the same direction on "
        f"every layer), [1, {w_dim}] (InterFaceGAN's boundary) or [{num_ws}, {w_dim}] (one per w+ layer)"
    )


def _check_layers(layers: Sequence[int] | None, num_ws: int) -> list[int] | None:
    if layers is None:
        return None
    out = sorted({int(i) for i in layers})
    bad = [i for i in out if not 0 <= i < num_ws]
    if not out or bad:
        raise ValueError(f"layers must be indices in [0, {num_ws}) (the generator's w+ rows), got {list(layers)}")
    return out


def edit_ws(ws: Tensor, direction: Tensor, strengths: Sequence[float], layers: Sequence[int] | None = None) -> Tensor:
    """ws [B, num_ws, w_dim] -> [B, S, num_ws, w_dim] with ``ws + s·d`` for each of the S strengths,
    only on the rows in ``layers`` (None = every row)."""
    if ws.ndim != 3:
        raise ValueError(f"expected ws [B, num_ws, w_dim], got {tuple(ws.shape)}")
    _, num_ws, w_dim = ws.shape
    if len(strengths) == 0:
        raise ValueError("strengths must list at least one value")
    d = layer_direction(direction, num_ws, w_dim).to(ws.device, ws.dtype)  # [num_ws, w_dim]
    rows = _check_layers(layers, num_ws)
    if rows is not None:
        mask = torch.zeros(num_ws, 1, device=ws.device, dtype=ws.dtype)
        mask[rows] = 1
        d = d * mask
    s = torch.as_tensor([float(v) for v in strengths], device=ws.device, dtype=ws.dtype)  # [S]
    return ws[:, None] + s[None, :, None, None] * d[None, None]  # [B, S, num_ws, w_dim]


@dataclass
class EditOutput:
    """strengths: the S strengths; images: resolution -> [B, S, 3, r, r] for every side output and
    the final image (key = the generator's size); ws: [B, S, num_ws, w_dim] the edited w+."""

    strengths: list[float]
    images: dict[int, Tensor]
    ws: Tensor

    @property
    def resolutions(self) -> list[int]:
        return sorted(self.images)


@torch.no_grad()
def render_edits(
    upsampler: Any,
    ws: Tensor,
    direction: Tensor,
    strengths: Sequence[float],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> EditOutput:
    """Edit ``ws`` [B, num_ws, w_dim] (e.g. ``upsampler.encode(lr)``) along ``direction`` and render
    every resolution with ``upsampler.render``, ``batch_size`` renders at a time."""
    edited = edit_ws(ws, direction, strengths, layers)  # [B, S, num_ws, w_dim]
    b, s = edited.shape[:2]
    flat = edited.flatten(0, 1)  # [B*S, num_ws, w_dim]
    parts: dict[int, list[Tensor]] = {}
    for i in range(0, flat.shape[0], max(1, int(batch_size))):
        out = upsampler.render(flat[i : i + batch_size])
        for r, img in {**out.side_images, out.image.shape[-1]: out.image}.items():
            parts.setdefault(int(r), []).append(img)
    images = {r: torch.cat(v).unflatten(0, (b, s)) for r, v in sorted(parts.items())}  # r -> [B, S, 3, r, r]
    return EditOutput([float(v) for v in strengths], images, edited)


def edit_grid(out: EditOutput, index: int = 0, pad: int = 2) -> Tensor:
    """Fig. 9-style grid of image ``index``: rows = resolutions (smallest first, shown at the largest
    size, nearest-neighbour), columns = strengths. Returns [3, H, W] in [-1, 1]."""
    size = max(out.images)
    rows = [resize_nearest(out.images[r][index].float().cpu(), size) for r in out.resolutions]  # each [S, 3, size, size]
    return make_grid(torch.cat(rows).clamp(-1, 1), nrow=len(out.strengths), pad=pad)
