"""The one downscaler ``DS`` of the project (Pro-PULSE Eq. (2), (3), (6); PULSE Sec. 3.1).

Every HR -> LR conversion goes through here: the data pipeline that makes the LR inputs, every loss
that compares an output with the LR (Pro-PULSE L_pix, L_pp, L_rec; PULSE's downscaling loss) and
every consistency metric. So "the output downscales to the input" is measured with the very operator
that made the input.

Which operator: antialiased bicubic, ``F.interpolate(mode="bicubic", antialias=True,
align_corners=False)``. For an integer factor s this is the separable cubic-convolution kernel with
a = -0.5 stretched by s (support 4·s taps per axis), normalised to sum 1 — the same family as
PULSE's ``bicubic.py`` (a = -0.5, 4·factor support) and as PIL's ``Image.BICUBIC`` resize, which it
matches to float rounding on float inputs: measured max |diff| <= 6e-8 for integer factors and
<= 1.4e-5 for non-integer ratios on [-1, 1] images (PIL mode "F"); on uint8 images within 1 level
(PIL rounds and clips an 8-bit intermediate between its two passes). tests/test_downscale.py
asserts 1e-6 / 1e-4 / 1 level. So the HR resize of the data pipeline (PIL bicubic on uint8) and
``DS`` are the same operator. Non-integer ratios are allowed (the kernel is stretched by the ratio).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def downscale(img: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Antialiased-bicubic resize of ``img`` [B, C, H, W] to ``size`` (int = square).

    Returns ``img`` itself when it already has that size. Upscaling is refused: DS only shrinks.
    """
    if img.ndim != 4:
        raise ValueError(f"downscale expects [B, C, H, W], got shape {tuple(img.shape)}")
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    in_h, in_w = img.shape[-2:]
    if (out_h, out_w) == (in_h, in_w):
        return img
    if out_h > in_h or out_w > in_w:
        raise ValueError(f"downscale only shrinks: {in_h}x{in_w} -> {out_h}x{out_w} requested")
    dtype = img.dtype
    x = img if dtype in (torch.float32, torch.float64) else img.float()
    out = F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False, antialias=True)
    return out.to(dtype)


class DS(nn.Module):
    """``DS_r``: downscale to a fixed square ``size`` (r in the papers) with :func:`downscale`.

    Args:
        size: output side length in pixels, > 0.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if int(size) <= 0:
            raise ValueError(f"DS size must be positive, got {size}")
        self.size = int(size)

    def forward(self, img: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, size, size]
        return downscale(img, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, kernel=bicubic(a=-0.5), antialias=True"
