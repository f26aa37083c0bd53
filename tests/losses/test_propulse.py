"""Pro-PULSE's loss equations (IEEE TIP 2022, Sec. III-C to III-E) as numbers on tiny tensors.

Every expected value is derived here, by hand or by a plain restatement of the paper's formula,
never by calling the code under test:

* Eq. (2) L_pix = 1/M sum_r 1/S_r ||I_o^r - DS_r(I_o^final)||^2
* Eq. (3) L_pp  = 1/M sum_r 1/S_r ||VGG(I_o^r) - VGG(DS_r(I_o^final))||^2 (VGG-16 conv4_2)
* Eq. (1) L_Gds = L_pix + lambda_pp L_pp
* Eq. (6) L_rec = 1/N sum_r' ||I_LR - DS_LR(I_o^r')||^2 over the N = M + 1 output scales
* Eq. (7) L_id  = 1 - cos(id(I_o^final), id(I_GT))
* Eq. (5) L_E   = lambda_rec L_rec + lambda_id L_id + lambda_adv L_adv
* WGAN-GP: lambda E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = a x_real + (1 - a) x_fake, a ~ U(0, 1)

Normalisation (the code's documented choice, lit_propulse/losses/propulse.py): ||.||^2 / S_r is the
mean of the squared error over every element of the [B, C, r, r] tensor (so also over the batch and
channels); Eq. (6), which prints no 1/S_r, uses the same per-element mean. Eq. (7) is averaged over
the batch. DS is antialiased bicubic (``F.interpolate(mode="bicubic", antialias=True)``, the
operator lit_propulse.core.downscale documents); it is restated here, and on images that are
constant per (sample, channel) plane it is exactly the identity on the plane value, which gives
values by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lit_propulse.core.outputs import ImageOutput
from lit_propulse.losses.propulse import (
    EncoderLoss,
    GdsLoss,
    GradientPenalty,
    IdentityLoss,
    MultiScaleReconstructionLoss,
    SidePerceptualLoss,
    SidePixelLoss,
    squared_error,
)
from lit_propulse.networks.feature_nets import ArcFaceIdentity, VGGPerceptual

pytestmark = pytest.mark.usefixtures("one_thread")


def ds(x: torch.Tensor, r: int) -> torch.Tensor:
    """DS_r restated: antialiased bicubic (a = -0.5), align_corners False; identity at the same size."""
    if x.shape[-1] == r:
        return x
    return F.interpolate(x, size=(r, r), mode="bicubic", align_corners=False, antialias=True)


def planes(values: list[list[float]], r: int) -> torch.Tensor:
    """[B, C, r, r] image whose (b, c) plane is the constant values[b][c]."""
    return torch.tensor(values, dtype=torch.float32)[:, :, None, None].expand(-1, -1, r, r).contiguous()


def mean_sq(a: list[list[float]], b: list[list[float]]) -> float:
    """Per-element mean of (a - b)^2 over [B][C] plane values (every plane has the same size)."""
    diffs = [(x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(diffs) / len(diffs)


FINAL = [[0.5, -0.25, 0.0], [1.0, 0.75, -1.0]]
SIDE8 = [[0.0, 0.25, 0.5], [-1.0, 0.75, 0.0]]
SIDE16 = [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------------------------
# Eq. (2)


def test_eq2_side_pixel_loss_by_hand():
    """Constant planes: DS_r(final) keeps the plane values, so L_pix is the mean over the M = 2 side
    outputs of the per-element mean squared plane difference."""
    out = ImageOutput(planes(FINAL, 32), {8: planes(SIDE8, 8), 16: planes(SIDE16, 16)})
    expected = (mean_sq(SIDE8, FINAL) + mean_sq(SIDE16, FINAL)) / 2  # (23/24 + 9/16) / 2
    assert expected == pytest.approx(73 / 96)
    assert SidePixelLoss()(out).item() == pytest.approx(expected, rel=1e-6)


def test_eq2_random_images_restated_and_target_detached():
    g = torch.Generator().manual_seed(1)
    final = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    sides = {r: (torch.rand(2, 3, r, r, generator=g) * 2 - 1).requires_grad_(True) for r in (8, 16)}
    loss = SidePixelLoss()(ImageOutput(final, sides))
    expected = sum(((sides[r] - ds(final.detach(), r)) ** 2).mean() for r in sides) / len(sides)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    loss.backward()
    assert final.grad is None  # the branches learn to match the frozen generator, not the reverse
    for r, s in sides.items():  # d/ds of 1/M mean((s - t)^2) = 2 (s - t) / (M * numel)
        torch.testing.assert_close(s.grad, 2 * (s - ds(final.detach(), r)).detach() / (2 * s.numel()), rtol=1e-4, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# Eq. (3) and Eq. (1) with a random-weight VGG-16


@pytest.fixture(scope="module")
def vgg_pair():
    """The project's VGG-16 (random init) and torchvision's vgg16 features cut after conv4_2
    (features[19]) carrying the same weights: the reference for VGG(.) in Eq. (3)."""
    torch.manual_seed(0)
    ours = VGGPerceptual(None, layer="conv4_2", random_init=True)
    # torchvision's own builder of vgg16().features (cfg "D"), without the 100M-weight classifier
    ref = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[:20].eval()
    assert isinstance(ref[19], nn.Conv2d) and ref[19].in_channels == ref[19].out_channels == 512
    ref.load_state_dict(ours.features.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def ref_vgg(x: torch.Tensor) -> torch.Tensor:
        return ref(((x + 1) / 2 - mean) / std)  # [-1, 1] -> [0, 1] -> ImageNet normalisation

    return ours, ref_vgg


def _gds_output() -> ImageOutput:
    g = torch.Generator().manual_seed(2)
    final = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    return ImageOutput(final, {r: torch.rand(2, 3, r, r, generator=g) * 2 - 1 for r in (16, 32)})


def test_eq3_perceptual_loss_against_torchvision_vgg(vgg_pair):
    ours, ref_vgg = vgg_pair
    out = _gds_output()
    with torch.no_grad():
        expected = sum(((ref_vgg(img) - ref_vgg(ds(out.image, r))) ** 2).mean() for r, img in out.side_images.items()) / 2
        got = SidePerceptualLoss(ours)(out)
    assert expected > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lambda_pp", [0.0, 0.25, 1.0])
def test_eq1_gds_total_is_pix_plus_weighted_pp(vgg_pair, lambda_pp):
    ours, ref_vgg = vgg_pair
    out = _gds_output()
    loss = GdsLoss(lambda_pp=lambda_pp, vgg=ours if lambda_pp > 0 else None)
    with torch.no_grad():
        total, logs = loss(out)
        pix = sum(((img - ds(out.image, r)) ** 2).mean() for r, img in out.side_images.items()) / 2
        pp = sum(((ref_vgg(img) - ref_vgg(ds(out.image, r))) ** 2).mean() for r, img in out.side_images.items()) / 2
    torch.testing.assert_close(total, pix + lambda_pp * pp, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logs["loss/gds/pix"], pix, rtol=1e-5, atol=1e-7)
    assert ("loss/gds/pp" in logs) == (lambda_pp > 0)


# ----------------------------------------------------------------------------------------------
# Eq. (6)


def test_eq6_reconstruction_by_hand_counts_every_output_scale():
    """N = M + 1: both side outputs and the final image are brought to the LR size and compared."""
    lr = [[0.25, 0.25, 0.25], [-0.5, 0.0, 0.5]]
    out = ImageOutput(planes(FINAL, 32), {8: planes(SIDE8, 8), 16: planes(SIDE16, 16)})
    per = {8: mean_sq(SIDE8, lr), 16: mean_sq(SIDE16, lr), 32: mean_sq(FINAL, lr)}
    loss = MultiScaleReconstructionLoss()
    assert loss(out, planes(lr, 4)).item() == pytest.approx(sum(per.values()) / 3, rel=1e-6)
    got = loss.per_scale(out, planes(lr, 4))
    assert set(got) == {8, 16, 32}
    for r in per:
        assert got[r].item() == pytest.approx(per[r], rel=1e-6)
    # the "without G_ds" ablation: the final image only (N = 1)
    assert MultiScaleReconstructionLoss(use_side_outputs=False)(out, planes(lr, 4)).item() == pytest.approx(per[32], rel=1e-6)


def test_eq6_random_images_restated():
    g = torch.Generator().manual_seed(3)
    lr = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    final = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    sides = {r: torch.rand(2, 3, r, r, generator=g) * 2 - 1 for r in (8, 16)}
    got = MultiScaleReconstructionLoss()(ImageOutput(final, sides), lr)
    scales = {**sides, 32: final}
    expected = sum(((lr - ds(img, 4)) ** 2).mean() for img in scales.values()) / len(scales)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Eq. (7)


class FirstPixels(nn.Module):
    """A hand-checkable "identity net": the embedding is the first two pixels of channel 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :2]


def test_eq7_identity_loss_by_hand():
    image = torch.zeros(2, 3, 4, 4)
    gt = torch.zeros(2, 3, 4, 4)
    image[0, 0, 0, :2] = torch.tensor([1.0, 0.0])
    gt[0, 0, 0, :2] = torch.tensor([1.0, 1.0])  # cos = 1/sqrt(2)
    image[1, 0, 0, :2] = torch.tensor([3.0, 4.0])
    gt[1, 0, 0, :2] = torch.tensor([-3.0, -4.0])  # cos = -1
    image.requires_grad_(True)
    gt.requires_grad_(True)
    loss = IdentityLoss(FirstPixels())(image, gt)
    assert loss.item() == pytest.approx(((1 - 1 / math.sqrt(2)) + (1 - (-1))) / 2, rel=1e-6)
    loss.backward()
    # the target embedding is a constant: the gradient reaches the generated image only
    assert image.grad is not None and image.grad[0, 0, 0, 1].item() == pytest.approx(-1 / (2 * math.sqrt(2)), rel=1e-5)
    assert gt.grad is None
    assert IdentityLoss(FirstPixels())(gt, gt).abs().max().item() < 1e-6  # same face: L_id = 0


def test_eq7_identity_loss_with_random_arcface():
    """L_id executed with a random-weight ArcFace IR-SE50 (the net itself is checked against a
    restated IR-SE50 in tests/networks): 1 - cos of its two embeddings, batch mean."""
    torch.manual_seed(0)
    net = ArcFaceIdentity(None, crop=None, random_init=True)
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 112, 112, generator=g) * 2 - 1
    gt = torch.rand(2, 3, 112, 112, generator=g) * 2 - 1
    seen = []  # the two embeddings the loss computes, [B, 512] each (cos is symmetric: order is moot)
    net.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    with torch.no_grad():
        loss = IdentityLoss(net)(image, gt)
        a, b = seen
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert (1 - cos).min() > 1e-4  # a case where the loss is not trivially 0
    torch.testing.assert_close(loss, (1 - cos).mean(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Eq. (5)


@pytest.mark.parametrize("lambdas", [(1.0, 1.0, 0.01), (0.7, 0.3, 0.05), (1.0, 0.0, 0.0), (0.0, 2.0, 0.5)])
def test_eq5_encoder_loss_weights(lambdas):
    l_rec, l_id, l_adv = lambdas
    g = torch.Generator().manual_seed(5)
    lr = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    final = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    out = ImageOutput(final, {8: torch.rand(2, 3, 8, 8, generator=g) * 2 - 1})
    gt = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    logits = torch.tensor([[0.5], [-2.0]])
    loss = EncoderLoss(l_rec, l_id, l_adv, identity_net=FirstPixels() if l_id > 0 else None)
    total, logs = loss(out, lr, gt, logits)

    rec = (((lr - ds(out.side_images[8], 4)) ** 2).mean() + ((lr - ds(final, 4)) ** 2).mean()) / 2
    e, t = final[:, 0, 0, :2], gt[:, 0, 0, :2]
    ident = (1 - (e * t).sum(1) / (e.norm(dim=1) * t.norm(dim=1))).mean()
    adv = -(0.5 + -2.0) / 2  # Eq. (8): -E[D(I_o)] = 0.75
    expected = l_rec * rec + l_id * ident + l_adv * adv
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-7)
    assert ("loss/rec" in logs) == (l_rec > 0) and ("loss/id" in logs) == (l_id > 0) and ("loss/adv" in logs) == (l_adv > 0)
    if l_adv > 0:
        assert logs["loss/adv"].item() == pytest.approx(0.75)
    if l_rec > 0:
        torch.testing.assert_close(logs["loss/rec"], rec, rtol=1e-5, atol=1e-7)
        assert {k for k in logs if k.startswith("loss/rec/")} == {"loss/rec/8", "loss/rec/16"}


# ----------------------------------------------------------------------------------------------
# WGAN-GP


def test_gradient_penalty_linear_critic_by_hand():
    """D(x) = <a, x>: grad = a everywhere, GP = lambda (||a|| - 1)^2 whatever the interpolation."""
    a = torch.zeros(1, 3, 2, 2)
    a[0, 0, 0, 0], a[0, 1, 1, 1] = 3.0, 4.0  # ||a|| = 5

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * a).flatten(1).sum(1, keepdim=True)

    real, fake = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2)
    assert GradientPenalty(10.0)(critic, real, fake).item() == pytest.approx(10.0 * 16.0, rel=1e-6)
    assert GradientPenalty(2.5)(critic, real, fake).item() == pytest.approx(2.5 * 16.0, rel=1e-6)


def test_gradient_penalty_quadratic_critic_uses_the_interpolates():
    """D(x) = ||x||^2 / 2: grad = x_hat, so GP = lambda mean_i (||a_i x_i + (1 - a_i) y_i|| - 1)^2
    with the alphas the penalty draws (U(0, 1), one per sample; replayed from the same seed)."""

    def critic(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).square().sum(1, keepdim=True)

    g = torch.Generator().manual_seed(6)
    real, fake = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g) * 3
    torch.manual_seed(123)
    got = GradientPenalty(10.0)(critic, real, fake)
    torch.manual_seed(123)
    alpha = torch.rand(4, 1, 1, 1)
    x_hat = alpha * real + (1 - alpha) * fake
    expected = 10.0 * ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # not the endpoints: the penalty really is taken between real and fake
    for end in (real, fake):
        assert not torch.allclose(got, 10.0 * ((end.flatten(1).norm(dim=1) - 1) ** 2).mean())


# ----------------------------------------------------------------------------------------------
# Defaults, argument checks, log names (gaps found by benchmarks/mutation_run.sh)


class _MeanFeatures(nn.Module):
    """A stand-in perceptual network: the per-channel mean [B, 3] (Eq. (3)'s VGG(.) replaced by a map
    whose values are known on constant planes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def test_eq1_lambda_pp_defaults_to_one_and_any_positive_weight_needs_the_network():
    """Eq. (1) with the paper's lambda_pp = 1 when not given; lambda_pp > 0 (also below 1) without a
    VGG is refused by name, lambda_pp < 0 too; lambda_pp = 0 needs none."""
    out = ImageOutput(planes(FINAL, 16), {8: planes(SIDE8, 8)})
    total, logs = GdsLoss(vgg=_MeanFeatures())(out)
    pix = mean_sq(SIDE8, FINAL)  # the features of a constant plane are its value: L_pp = L_pix here
    assert logs["loss/gds/pp"].item() == pytest.approx(pix, rel=1e-5)
    assert total.item() == pytest.approx(pix + 1.0 * pix, rel=1e-5) and logs["loss/gds/total"].item() == pytest.approx(total.item())
    with pytest.raises(ValueError, match=r"lambda_pp = 0\.5 needs a VGG-16 feature network \(vgg=\.\.\.\); set lambda_pp: 0"):
        GdsLoss(lambda_pp=0.5)
    with pytest.raises(ValueError, match=r"lambda_pp must be >= 0, got -1"):
        GdsLoss(lambda_pp=-1.0, vgg=_MeanFeatures())
    assert GdsLoss(lambda_pp=0.0).pp is None


def test_eq6_final_image_only_is_keyed_by_its_resolution():
    """Without side outputs (the "without G_ds" ablation) Eq. (6) has one scale, the final image's,
    logged as loss/rec/<its resolution>."""
    lr = planes([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], 4)
    out = ImageOutput(planes(FINAL, 16), {8: planes(SIDE8, 8)})
    per_scale = MultiScaleReconstructionLoss(use_side_outputs=False).per_scale(out, lr)
    assert list(per_scale) == [16] and per_scale[16].item() == pytest.approx(mean_sq(FINAL, [[0.0] * 3] * 2), rel=1e-5)
    _, logs = EncoderLoss(1.0, 0.0, 0.0, use_side_outputs=False)(out, lr, out.image)
    assert {k for k in logs if k.startswith("loss/rec/")} == {"loss/rec/16"}


def test_eq5_total_is_logged_and_adversarial_weight_needs_logits():
    g = torch.Generator().manual_seed(7)
    lr = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    out = ImageOutput(torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, {8: torch.rand(2, 3, 8, 8, generator=g) * 2 - 1})
    total, logs = EncoderLoss(1.0, 0.0, 0.01)(out, lr, out.image, torch.tensor([[1.0], [3.0]]))
    assert logs["loss/total"].item() == pytest.approx(total.item()) and not logs["loss/total"].requires_grad
    assert total.item() == pytest.approx(logs["loss/rec"].item() + 0.01 * -2.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"^lambda_adv > 0 but no discriminator logits were given$"):
        EncoderLoss(1.0, 0.0, 0.01)(out, lr, out.image)


def test_gradient_penalty_default_weight_dtype_and_graph():
    """WGAN-GP's lambda = 10 by default; the interpolation weights are drawn in the images' dtype
    (float64 here: replayed from the seed); the penalty keeps its graph (create_graph), so it
    trains the critic."""
    a = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    a[0, 0, 0, 0] = 2.0  # ||a|| = 2: GP = lambda (2 - 1)^2
    assert GradientPenalty()(lambda x: (x * a).flatten(1).sum(1, keepdim=True), torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)).item() == pytest.approx(10.0)

    g = torch.Generator().manual_seed(8)
    real = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    fake = 3 * torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)  # the critic's one parameter

    def critic(x: torch.Tensor) -> torch.Tensor:
        return w * 0.5 * x.flatten(1).square().sum(1, keepdim=True)  # grad_x = w x

    torch.manual_seed(9)
    got = GradientPenalty(10.0)(critic, real, fake)
    torch.manual_seed(9)
    alpha = torch.rand(3, 1, 1, 1, dtype=torch.float64)
    norms = (alpha * real + (1 - alpha) * fake).flatten(1).norm(dim=1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, 10.0 * ((0.5 * norms - 1) ** 2).mean(), rtol=1e-12, atol=1e-12)
    (dw,) = torch.autograd.grad(got, w)  # d/dw 10 mean (w n - 1)^2 = 20 mean (w n - 1) n
    torch.testing.assert_close(dw, 20.0 * ((0.5 * norms - 1) * norms).mean(), rtol=1e-10, atol=1e-12)


def test_eq5_paper_weights_by_default_and_weight_checks():
    """lambda_rec = lambda_id = 1, lambda_adv = 0.01 (Sec. IV-A) when not given; a negative weight,
    all weights 0, or lambda_id > 0 (also below 1) without an identity network are refused by name."""
    assert EncoderLoss(identity_net=FirstPixels()).weights == {"rec": 1.0, "id": 1.0, "adv": 0.01}
    with pytest.raises(ValueError, match=r"loss weights must be >= 0, got \{'id': -1\.0\}"):
        EncoderLoss(1.0, -1.0, 0.0)
    with pytest.raises(ValueError, match=r"at least one of lambda_rec, lambda_id, lambda_adv must be > 0, got \{'rec': 0\.0, 'id': 0\.0, 'adv': 0\.0\}"):
        EncoderLoss(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"lambda_id = 0\.5 needs an identity network \(identity_net=\.\.\.\); set lambda_id: 0"):
        EncoderLoss(1.0, 0.5, 0.0)


def test_paper_normalisation_by_hand():
    """``norm="paper"``, the equations as printed: Eq. (2)/(3) divide by the spatial size S_r = r^2 only
    (a sum over channels: on constant planes, sum_c (side_c - final_c)^2 per image), Eq. (6) by
    nothing (a sum over the LR grid: 3 l^2 values per image). One image and two: every term is per
    image first, then averaged over the batch. Eq. (3) with an identity "VGG" equals Eq. (2)."""
    for rows in (slice(0, 1), slice(0, 2)):
        final, side = FINAL[rows], SIDE8[rows]
        out = ImageOutput(planes(final, 16), {8: planes(side, 8)})
        per_image = [sum((s - f) ** 2 for s, f in zip(si, fi)) for si, fi in zip(side, final)]
        pix = sum(per_image) / len(per_image)
        assert SidePixelLoss("paper")(out).item() == pytest.approx(pix, rel=1e-5)
        total, logs = GdsLoss(1.0, nn.Identity(), norm="paper")(out)
        assert logs["loss/gds/pix"].item() == pytest.approx(pix, rel=1e-5) and logs["loss/gds/pp"].item() == pytest.approx(pix, rel=1e-5)
        assert total.item() == pytest.approx(2 * pix, rel=1e-5)
        lr = planes([[0.0, 0.0, 0.0]] * len(final), 4)
        rec = {r: sum(4 * 4 * sum(v**2 for v in vals) for vals in img) / len(img) for r, img in ((8, side), (16, final))}
        per_scale = MultiScaleReconstructionLoss(True, "paper").per_scale(out, lr)
        assert per_scale == {r: pytest.approx(v, rel=1e-5) for r, v in rec.items()}
        total, logs = EncoderLoss(1.0, 0.0, 0.0, norm="paper")(out, lr, out.image)
        assert total.item() == pytest.approx((rec[8] + rec[16]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match=r"^norm must be 'mean' \(per-element means\) or 'paper' \(the equations as printed\), got 'sum'$"):
        GdsLoss(0.0, norm="sum")


def test_squared_error_divisors_by_hand_for_one_image_and_several():
    """||x - y||^2 per image divided by its element count C*H*W, its spatial size H*W, or nothing,
    then the batch mean; a batch of one image works (the divisor is one image's size, not the batch's),
    and a non-square image divides by H*W, not by a side squared. An unknown divisor is an error."""
    for batch in (1, 3):
        x = torch.zeros(batch, 3, 2, 5)
        y = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, 2, 5) + 1  # image b: all b + 1
        sums = [(b + 1) ** 2 * 30 for b in range(batch)]  # 30 elements per image
        mean = sum(sums) / batch
        assert squared_error(x, y, "none").item() == pytest.approx(mean)
        assert squared_error(x, y, "elements").item() == pytest.approx(mean / 30)
        assert squared_error(x, y, "spatial").item() == pytest.approx(mean / 10)
    with pytest.raises(ValueError, match=r"^divide_by must be 'elements', 'spatial' or 'none', got 'NONE'$"):
        squared_error(x, y, "NONE")
