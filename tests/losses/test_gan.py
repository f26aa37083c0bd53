"""GAN losses and regularisers (lit_propulse/losses/gan.py) as numbers, each expected value derived
here by hand or by an independent computation:

* Pro-PULSE Eq. (8) L_adv = -E[D(I_o)] and Eq. (9) L_D = E[D(I_o)] - E[D(I_GT)] (batch means).
* StyleGAN2's logistic loss: G softplus(-D(G(z))), D softplus(D(G(z))) + softplus(-D(x)) (batch means).
* R1 = gamma/2 E_x[||grad_x D(x)||^2], the gradient of sum_i D(x_i) (as StyleGAN2 / the port take it,
  so the minibatch-stddev coupling is included), squared norm summed over the pixels of a sample,
  mean over the batch.
* Path length (StyleGAN2 Sec. 3.2): y ~ N(0, I) / sqrt(H W) per image, L_i = sqrt(mean_rows
  sum_w_dim (J_i^T y_i)^2), a <- a + decay (mean_i L_i - a), penalty = mean_i (L_i - a)^2.
"""

from __future__ import annotations

import math

import pytest
import torch

from lit_propulse.losses.gan import (
    NonSaturatingLoss,
    PathLengthPenalty,
    R1Penalty,
    WGANDiscriminatorLoss,
    WGANGeneratorLoss,
)
from lit_propulse.networks.stylegan2 import Discriminator, Generator

pytestmark = pytest.mark.usefixtures("one_thread")


FAKE = torch.tensor([[1.0], [2.0], [-0.5], [3.5]])
REAL = torch.tensor([[0.25], [-1.0], [4.0], [0.75]])


def test_eq8_wgan_generator_loss_by_hand():
    assert WGANGeneratorLoss()(FAKE).item() == pytest.approx(-(1.0 + 2.0 - 0.5 + 3.5) / 4)  # -1.5


def test_eq9_wgan_critic_loss_by_hand():
    # E[D(fake)] - E[D(real)] = 1.5 - 1.0
    assert WGANDiscriminatorLoss()(REAL, FAKE).item() == pytest.approx(0.5)


def test_logistic_losses_by_hand():
    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    fake, real = FAKE.flatten().tolist(), REAL.flatten().tolist()
    g = sum(softplus(-v) for v in fake) / 4
    d = sum(softplus(v) for v in fake) / 4 + sum(softplus(-v) for v in real) / 4
    assert NonSaturatingLoss.generator(FAKE).item() == pytest.approx(g, rel=1e-6)
    assert NonSaturatingLoss.discriminator(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# R1


def test_r1_quadratic_critic_by_hand():
    """D(x) = sum(a x + b x^2 / 2): grad = a + b x, R1 = gamma/2 mean_i sum (a + b x_i)^2."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    real = torch.randn(3, 3, 4, 4, generator=g).requires_grad_(True)
    logits = (a * real + 0.5 * b * real**2).flatten(1).sum(1, keepdim=True)
    got = R1Penalty(gamma=3.0)(real, logits)
    expected = 3.0 / 2 * ((a + b * real.detach()) ** 2).flatten(1).sum(1).mean()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_r1_tiny_discriminator_against_its_jacobian():
    """R1 on StyleGAN2's own discriminator (8 px) against the full Jacobian of its logits, taken in
    float64 by torch.autograd.functional (rows summed = the gradient of sum_i D(x_i))."""
    torch.manual_seed(0)
    D = Discriminator(8, channels={4: 4, 8: 4}).double()
    real = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: D(x).flatten(), real)  # [B, B, 3, 8, 8]
    grad = jac.sum(0)  # d(sum_i D(x_i)) / dx
    expected = 10.0 / 2 * grad.flatten(1).square().sum(1).mean()
    x = real.clone().requires_grad_(True)
    got = R1Penalty(gamma=10.0)(x, D(x))
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-10)
    assert got.requires_grad  # create_graph: the penalty trains D


# ----------------------------------------------------------------------------------------------
# Path length


def test_path_length_linear_generator_by_hand():
    """images = reshape(ws.flatten(1) @ M): J^T y = reshape(y.flatten(1) @ M^T). Two calls check the
    running target a (decay 0.01) and the 1/sqrt(H W) noise scale (noise replayed from the seed)."""
    g = torch.Generator().manual_seed(1)
    B, num_ws, w_dim, H = 3, 4, 5, 6
    M = torch.randn(num_ws * w_dim, 3 * H * H, generator=g)
    pl = PathLengthPenalty(decay=0.01)
    a = 0.0
    for seed in (10, 11):
        ws = torch.randn(B, num_ws, w_dim, generator=g).requires_grad_(True)
        images = (ws.flatten(1) @ M).view(B, 3, H, H)
        torch.manual_seed(seed)
        penalty, mean_len = pl(images, ws)
        torch.manual_seed(seed)
        y = torch.randn(B, 3, H, H) / math.sqrt(H * H)
        jt_y = (y.flatten(1) @ M.T).view(B, num_ws, w_dim)
        lengths = jt_y.square().sum(2).mean(1).sqrt()
        a = a + 0.01 * (lengths.mean().item() - a)
        torch.testing.assert_close(penalty, ((lengths - a) ** 2).mean(), rtol=1e-5, atol=1e-6)
        assert mean_len.item() == pytest.approx(lengths.mean().item(), rel=1e-5)
        assert pl.mean_length.item() == pytest.approx(a, rel=1e-5)


def test_path_length_tiny_stylegan2_against_its_jacobian():
    """On an 8 px StyleGAN2 synthesis (stored noise, float64): J_i^T y_i from the full Jacobian."""
    torch.manual_seed(0)
    G = Generator(8, style_dim=6, n_mlp=1, channels={4: 4, 8: 4}).double()
    G.synthesis.channels_last = False
    ws = torch.randn(2, G.num_ws, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda w: G.synthesis(w, noise="const").image, ws)  # [2,3,8,8,2,nw,6]
    torch.manual_seed(5)
    y = torch.randn(2, 3, 8, 8, dtype=torch.float64) / 8.0  # 1 / sqrt(H W)
    jt_y = torch.stack([torch.einsum("chw,chwnd->nd", y[i], jac[i, :, :, :, i]) for i in range(2)])
    lengths = jt_y.square().sum(2).mean(1).sqrt()
    pl = PathLengthPenalty(decay=0.01)
    pl.mean_length.fill_(0.3)
    target = 0.3 + 0.01 * (lengths.mean() - 0.3)
    x = ws.clone().requires_grad_(True)
    img = G.synthesis(x, noise="const").image
    torch.manual_seed(5)
    penalty, _ = pl(img, x)
    torch.testing.assert_close(penalty.double(), ((lengths - target) ** 2).mean(), rtol=1e-6, atol=1e-10)
    assert penalty.requires_grad


# ----------------------------------------------------------------------------------------------
# Defaults and argument checks (gaps found by benchmarks/mutation_run.sh)


def test_regulariser_defaults_are_the_documented_ones():
    """R1 gamma = 10 (StyleGAN2, FFHQ 1024) and the path-length EMA decay 0.01, used when not given."""
    assert R1Penalty().gamma == 10.0 and PathLengthPenalty().decay == 0.01
    real = torch.ones(2, 3, 4, 4, requires_grad=True)
    assert R1Penalty()(real, (2 * real).flatten(1).sum(1, keepdim=True)).item() == pytest.approx(10 / 2 * 4 * 48)


def test_r1_gamma_must_be_non_negative_and_zero_is_off():
    with pytest.raises(ValueError, match=r"R1 gamma must be >= 0, got -1"):
        R1Penalty(gamma=-1)
    real = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert R1Penalty(gamma=0.0)(real, real.square().flatten(1).sum(1, keepdim=True)).item() == 0.0
    assert R1Penalty(gamma=0.5).gamma == 0.5


def test_path_length_noise_scale_on_a_non_square_image():
    """y ~ N(0, I) / sqrt(H W) with H != W (a 4 x 9 image): the penalty's lengths use H W = 36, not W^2 or H^2."""
    g = torch.Generator().manual_seed(2)
    B, num_ws, w_dim, H, W = 2, 3, 4, 4, 9
    M = torch.randn(num_ws * w_dim, 3 * H * W, generator=g)
    ws = torch.randn(B, num_ws, w_dim, generator=g).requires_grad_(True)
    images = (ws.flatten(1) @ M).view(B, 3, H, W)
    torch.manual_seed(3)
    _, mean_len = PathLengthPenalty(decay=0.01)(images, ws)
    torch.manual_seed(3)
    y = torch.randn(B, 3, H, W) / math.sqrt(H * W)
    lengths = (y.flatten(1) @ M.T).view(B, num_ws, w_dim).square().sum(2).mean(1).sqrt()
    assert mean_len.item() == pytest.approx(lengths.mean().item(), rel=1e-5)
