"""DS (datamodules/downscale.py): the one HR -> LR operator, checked against PIL's bicubic resize.

Measured agreement with ``PIL.Image.resize(..., Image.BICUBIC)`` (Pillow 13, torch 2.14, CPU):

* float images (PIL mode "F", one channel at a time): max |diff| <= 6e-8 for integer factors
  (64->16, 128->16, 1024->16, 1024->64, 256->32, 48->16) and <= 1.4e-5 for non-integer ratios
  (100->30, 64->63). Asserted tolerances: 1e-6 (integer) and 1e-4 (non-integer).
* uint8 images (PIL mode "RGB", fixed-point with an 8-bit intermediate between the two passes;
  DS run in float on 0..255 then rounded): at most 1 level apart for integer factors.
  Near-identity ratios on white noise differ more (64->63: up to 16 levels) because PIL clips the
  ringing overshoot of the 8-bit intermediate; on smooth images they stay within 1 level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lit_propulse.core.downscale import DS, downscale

INTEGER_FACTORS = [(64, 16), (128, 16), (1024, 16), (256, 32), (48, 16)]
NON_INTEGER = [(100, 30), (64, 63), (50, 16)]


def _pil_float_resize(x: torch.Tensor, size: int) -> np.ndarray:
    """PIL bicubic on a [C, H, W] float tensor, channel by channel in mode "F"."""
    chans = [np.asarray(Image.fromarray(x[c].numpy().astype(np.float32), mode="F").resize((size, size), Image.BICUBIC)) for c in range(x.shape[0])]
    return np.stack(chans)


def _smooth_uint8(h: int, w: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    return (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("size", [1, 7, 16])
def test_constant_image_stays_constant(size: int) -> None:
    x = torch.full((2, 3, 64, 64), 0.37)
    y = DS(size)(x)
    assert y.shape == (2, 3, size, size)
    torch.testing.assert_close(y, torch.full_like(y, 0.37), atol=1e-6, rtol=0)


def test_linear_in_input() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    ds = DS(16)
    torch.testing.assert_close(ds(2.5 * a - 0.75 * b), 2.5 * ds(a) - 0.75 * ds(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", INTEGER_FACTORS)
def test_matches_pil_float_integer_factor(hw: tuple[int, int]) -> None:
    big, small = hw
    x = torch.rand(3, big, big, generator=torch.Generator().manual_seed(big + small)) * 2 - 1
    ours = DS(small)(x[None])[0].numpy()
    np.testing.assert_allclose(ours, _pil_float_resize(x, small), atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw", NON_INTEGER)
def test_matches_pil_float_non_integer_ratio(hw: tuple[int, int]) -> None:
    big, small = hw
    x = torch.rand(3, big, big, generator=torch.Generator().manual_seed(big * small)) * 2 - 1
    ours = DS(small)(x[None])[0].numpy()
    np.testing.assert_allclose(ours, _pil_float_resize(x, small), atol=1e-4, rtol=0)


@pytest.mark.parametrize("hw", INTEGER_FACTORS)
def test_matches_pil_uint8_integer_factor(hw: tuple[int, int]) -> None:
    big, small = hw
    rgb = (torch.rand(big, big, 3, generator=torch.Generator().manual_seed(big)) * 255).round().to(torch.uint8).numpy()
    pil = np.asarray(Image.fromarray(rgb).resize((small, small), Image.BICUBIC)).astype(np.int32)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    ours = DS(small)(x)[0].permute(1, 2, 0).clamp(0, 255).round().numpy().astype(np.int32)
    assert np.abs(ours - pil).max() <= 1


@pytest.mark.parametrize("hw", NON_INTEGER)
def test_matches_pil_uint8_smooth_non_integer(hw: tuple[int, int]) -> None:
    big, small = hw
    rgb = _smooth_uint8(big, big, seed=small)
    pil = np.asarray(Image.fromarray(rgb).resize((small, small), Image.BICUBIC)).astype(np.int32)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    ours = DS(small)(x)[0].permute(1, 2, 0).clamp(0, 255).round().numpy().astype(np.int32)
    assert np.abs(ours - pil).max() <= 1


@pytest.mark.parametrize(
    "in_hw,size,expected",
    [((64, 64), 16, (16, 16)), ((32, 48), (8, 12), (8, 12)), ((1024, 1024), 16, (16, 16)), ((33, 47), 5, (5, 5))],
)
def test_output_sizes(in_hw: tuple[int, int], size: int | tuple[int, int], expected: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *in_hw)
    y = downscale(x, size)
    assert y.shape == (2, 3, *expected)
    assert y.dtype == x.dtype


def test_same_size_is_identity() -> None:
    x = torch.randn(1, 3, 16, 16)
    assert DS(16)(x) is x


def test_refuses_upscaling() -> None:
    with pytest.raises(ValueError, match="only shrinks"):
        DS(32)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="only shrinks"):
        downscale(torch.randn(1, 3, 16, 64), (32, 32))  # one axis would grow


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        DS(0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        downscale(torch.randn(3, 16, 16), 8)
