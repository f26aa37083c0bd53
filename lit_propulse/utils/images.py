"""Image tensors <-> files and grids. The project's image range is [-1, 1] float (StyleGAN2's)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def to_uint8(img: Tensor) -> Tensor:
    """[-1, 1] float [..., 3, H, W] -> uint8 in [0, 255] (clamped, rounded). Loggers need uint8:
    a float image in [0, 1] is saved black by several of them."""
    return ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def make_grid(images: Tensor, nrow: int = 8, pad: int = 2, pad_value: float = 1.0) -> Tensor:
    """[N, 3, H, W] in [-1, 1] -> one [3, H', W'] grid image in [-1, 1], ``nrow`` images per row."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = images.new_full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return grid


def resize_nearest(images: Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize to ``size`` (to show LR images pixel by pixel next to HR ones)."""
    return F.interpolate(images.float(), size=(size, size), mode="nearest")


def rows_grid(rows: Sequence[Tensor], size: int, pad: int = 2) -> Tensor:
    """A grid whose row i holds the images of ``rows[i]`` ([N, 3, h, w] each, any h), all shown at ``size``.

    Used for "LR | side outputs | HR | GT" panels: pass one tensor per column and it is transposed.
    """
    cols = [resize_nearest(r, size) if r.shape[-1] != size else r.float() for r in rows]
    stacked = torch.stack(cols, dim=1).flatten(0, 1)  # [N * len(rows), 3, size, size]
    return make_grid(stacked, nrow=len(rows), pad=pad)


def save_image(img: Tensor, path: str | os.PathLike) -> None:
    """Write a [3, H, W] (or [1, 3, H, W]) [-1, 1] image as PNG, creating the directory."""
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"save_image takes one image, got a batch of {img.shape[0]}")
        img = img[0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(to_uint8(img).permute(1, 2, 0).cpu().numpy()).save(path)


def load_image(path: str | os.PathLike) -> Tensor:
    """PNG/JPEG -> [3, H, W] float in [-1, 1] (RGB)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1
