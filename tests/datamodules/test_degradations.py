"""Degradations of PULSE Sec. 5 / Fig. 6 (datamodules/degradations.py)."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.degradations import (
    Degradation,
    GaussianNoise,
    MotionBlur,
    SaltPepper,
    degrade_lr,
    motion_blur_kernel,
    std255_to_sigma,
)
from lit_propulse.core.downscale import downscale
from lit_propulse.core.seeding import seed_generator


def _img(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


@pytest.mark.parametrize("op", [GaussianNoise(0.0), MotionBlur(0.0), MotionBlur(1.0), SaltPepper(0.0), Degradation([])])
def test_zero_strength_is_identity(op: torch.nn.Module) -> None:
    x = _img()
    torch.testing.assert_close(op(x, generator=torch.Generator().manual_seed(1)), x, rtol=0, atol=0)


def test_gaussian_noise_statistics() -> None:
    x = torch.zeros(4, 3, 64, 64)
    sigma = 0.2
    y = GaussianNoise(sigma, clamp=False)(x, generator=torch.Generator().manual_seed(0))
    n = y - x
    assert abs(n.mean().item()) < 0.005  # 49k samples: std of the mean 0.2/sqrt(49152) ~ 0.0009
    assert n.std().item() == pytest.approx(sigma, rel=0.02)
    # independent across channels and pixels
    flat = n.reshape(4, 3, -1)
    corr = torch.corrcoef(torch.stack([flat[:, 0].flatten(), flat[:, 1].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.03


def test_gaussian_noise_clamps_to_image_range() -> None:
    y = GaussianNoise(0.5)(torch.full((1, 3, 32, 32), 0.9), generator=torch.Generator().manual_seed(0))
    assert y.max().item() <= 1.0 and y.min().item() >= -1.0
    assert (y == 1.0).any()


def test_pulse_std_units() -> None:
    assert std255_to_sigma(25) == pytest.approx(0.19608, abs=1e-5)
    assert std255_to_sigma(50) == pytest.approx(0.39216, abs=1e-5)


@pytest.mark.parametrize("length,angle", [(9, 0.0), (9, 90.0), (15, 37.0), (40, None)])
def test_motion_blur_preserves_constant_image(length: float, angle: float | None) -> None:
    x = torch.full((2, 3, 48, 40), -0.3)
    y = MotionBlur(length, angle)(x, generator=torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("length,angle", [(10, 0.0), (25, 30.0), (100, 123.0), (7.5, 45.0)])
def test_motion_blur_kernel_is_a_centred_normalised_line(length: float, angle: float) -> None:
    k = motion_blur_kernel(length, angle)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    c = k.shape[0] // 2
    ys, xs = torch.meshgrid(torch.arange(k.shape[0]), torch.arange(k.shape[1]), indexing="ij")
    assert (k * ys).sum().item() == pytest.approx(c, abs=1e-3)  # centred: no image shift
    assert (k * xs).sum().item() == pytest.approx(c, abs=1e-3)
    # all mass near the line through the centre at ``angle`` (rows grow downwards)
    th = math.radians(angle)
    dist = ((xs - c) * math.sin(th) + (ys - c) * math.cos(th)).abs()
    assert (k * (dist > 1.0)).sum().item() == 0.0
    # its extent along the line is the length
    along = ((xs - c) * math.cos(th) - (ys - c) * math.sin(th)).abs()
    assert along[k > 0].max().item() <= length / 2 + 1.5


def test_motion_blur_horizontal_blurs_only_along_x() -> None:
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0  # impulse -> the kernel itself
    y = MotionBlur(9, angle=0.0)(x)
    assert (y[0, 0, 10] > 0).sum() == 9  # a 9-pixel horizontal segment
    assert y[0, 0].sum(1)[10].item() == pytest.approx(1.0, abs=1e-6)  # all mass on row 10


def test_motion_blur_random_angle_is_seeded() -> None:
    x = _img(b=3, h=40, w=40)
    blur = MotionBlur(11)
    a = blur(x, generator=torch.Generator().manual_seed(5))
    b = blur(x, generator=torch.Generator().manual_seed(5))
    c = blur(x, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_motion_blur_fft_path_matches_direct_conv() -> None:
    # lengths above 15 px go through the FFT; compare with conv2d on the same kernel
    x = _img(b=1, h=70, w=64)
    k = motion_blur_kernel(30, 20.0)
    s = k.shape[-1]
    xp = torch.nn.functional.pad(x, (s // 2,) * 4, mode="replicate")
    ref = torch.nn.functional.conv2d(xp, k.expand(3, 1, s, s), groups=3)
    torch.testing.assert_close(MotionBlur(30, 20.0)(x), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("density", [0.05, 0.2])
@pytest.mark.parametrize("per_channel", [False, True])
def test_salt_pepper_fraction(density: float, per_channel: bool) -> None:
    x = torch.zeros(2, 3, 128, 128)  # 0 is neither salt (+1) nor pepper (-1)
    y = SaltPepper(density, per_channel=per_channel)(x, generator=torch.Generator().manual_seed(0))
    changed = y != 0
    assert changed.float().mean().item() == pytest.approx(density, abs=0.01)
    assert set(y.unique().tolist()) <= {-1.0, 0.0, 1.0}
    salt = (y == 1).float().mean().item()
    assert salt == pytest.approx(density / 2, abs=0.01)
    if not per_channel:  # a hit pixel is hit in every channel
        assert torch.equal(changed.all(1), changed.any(1))


def test_degradation_seed_is_deterministic() -> None:
    deg = Degradation([GaussianNoise(0.1), SaltPepper(0.1)])
    x = _img(b=1)
    torch.testing.assert_close(deg(x, seed=7), deg(x, seed=7), rtol=0, atol=0)
    assert not torch.equal(deg(x, seed=7), deg(x, seed=8))
    # single-image input keeps its shape
    assert deg(x[0], seed=1).shape == x[0].shape
    # nearby (seed, index) keys give unrelated streams
    a = torch.rand(1000, generator=seed_generator(0, 1))
    b = torch.rand(1000, generator=seed_generator(0, 2))
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.15


def test_degrade_lr_order_and_identity() -> None:
    hr = _img(b=2, h=64, w=64)
    torch.testing.assert_close(degrade_lr(hr, 16, []), downscale(hr, 16), rtol=0, atol=0)
    before = Degradation([MotionBlur(9, angle=0.0)], where="before_ds")
    after = Degradation([GaussianNoise(0.1)], where="after_ds")
    got = degrade_lr(hr, 16, [after, before], generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    want = after(downscale(before(hr, generator=g), 16), generator=g)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(-0.1)
    with pytest.raises(ValueError, match="length"):
        MotionBlur(-1)
    with pytest.raises(ValueError, match="density"):
        SaltPepper(1.5)
    with pytest.raises(ValueError, match="where"):
        Degradation([], where="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="float"):
        GaussianNoise(0.1)(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
