"""StyleGAN2 training maths (lit_propulse/modules/stylegan2_module.py, lit_propulse/networks/augment.py)
against values derived here (StyleGAN2, Karras et al. CVPR 2020, App. B; ADA, NeurIPS 2020):

* lazy regularisation: Adam lr * c and betas (0, 0.99 ** c), c = every / (every + 1) (c = 1 when the
  regulariser is off), and the regulariser's loss multiplied by its interval (R1: gamma/2 ||grad||^2
  * r1_every on every r1_every-th D step; path length: weight * pl_every on every pl_every-th G step);
* EMA with ramp-up: beta = 0.5 ** (batch / half_life), half_life = min(ema_kimg * 1000,
  images_seen * rampup), G_ema <- beta G_ema + (1 - beta) G, buffers copied. The code counts the
  current batch in images_seen (it is incremented before the EMA update); ADA's training loop uses the
  count before the batch — the difference is one batch of ramp-up, negligible, and the expected
  values here follow the code's documented order;
* style mixing: a cut drawn uniformly from 1 ... num_ws - 1, rows [0, cut) from one mapped z, the
  rest from another, with probability mixing_prob;
* ADA's p: every ``interval`` updates, p += sign(E[sign(D(real))] - target) * N / (speed_kimg * 1000)
  with N the real images seen over the interval, clamped to [0, p_max].

The training step is driven directly with stub optimizers whose ``step`` does nothing, so the
networks do not move and every quantity can be recomputed.
"""

from __future__ import annotations

import random
import types

import pytest
import torch

from lit_propulse.modules.stylegan2_module import StyleGAN2Module
from lit_propulse.networks.augment import AdaptiveAugment
from lit_propulse.networks.stylegan2 import Discriminator, Generator

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_module(size: int = 8, **kwargs) -> StyleGAN2Module:
    torch.manual_seed(0)
    ch = {2**k: 4 for k in range(2, size.bit_length())}
    return StyleGAN2Module(Generator(size, style_dim=8, n_mlp=1, channels=ch), Discriminator(size, channels=ch), channels_last=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# Lazy regularisation: optimiser correction


@pytest.mark.parametrize("r1_every,pl_every,pl_weight", [(16, 4, 2.0), (4, 8, 1.0), (0, 4, 0.0)])
def test_lazy_regularisation_adam_correction(r1_every, pl_every, pl_weight):
    module = tiny_module(lr=0.002, r1_every=r1_every, pl_every=pl_every, pl_weight=pl_weight)
    opt_g, opt_d = module.configure_optimizers()
    c_g = pl_every / (pl_every + 1) if pl_weight > 0 else 1.0
    c_d = r1_every / (r1_every + 1) if r1_every else 1.0
    for opt, c, params in ((opt_g, c_g, module.G.parameters()), (opt_d, c_d, module.D.parameters())):
        (group,) = opt.param_groups
        assert group["lr"] == pytest.approx(0.002 * c, rel=1e-12)
        assert group["betas"][0] == 0.0
        assert group["betas"][1] == pytest.approx(0.99**c, rel=1e-12)
        assert {id(p) for p in group["params"]} == {id(p) for p in params}


# ----------------------------------------------------------------------------------------------
# Driving training_step


class NoStep:
    """An optimizer stand-in: the networks stay where they are. Like Lightning's LightningOptimizer it
    wraps the raw optimizer (``.optimizer``), which the module steps directly for all but one step."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass

    @property
    def optimizer(self) -> NoStep:
        return self


def stub(module: StyleGAN2Module):
    """Run training_step without a Trainer: record each loss handed to backward and the logs."""
    losses: list[torch.Tensor] = []
    logs: dict[str, torch.Tensor] = {}
    module.optimizers = lambda: (NoStep(), NoStep())
    module.manual_backward = lambda loss, *a, **k: losses.append(loss.detach())
    module.log_dict = lambda d, **k: logs.update(d)
    module.log = lambda *a, **k: None
    return losses, logs


def real_batch(b: int, size: int = 8, seed: int = 0):
    return types.SimpleNamespace(hr=torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1)


def test_training_step_lazy_regulariser_weights_and_schedule():
    module = tiny_module(r1_gamma=3.0, r1_every=2, pl_weight=2.0, pl_every=3, mixing_prob=0.0)
    losses, logs = stub(module)
    batch = real_batch(4)
    module.training_step(batch, 0)  # step 0: both regularisers
    assert len(losses) == 4  # D logistic, R1, G logistic, path length
    # R1 on the reals, recomputed directly: gamma/2 * E ||grad_x D(x)||^2, times the interval
    x = batch.hr.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(module.D(x).sum(), x)
    r1 = 3.0 / 2 * grad.square().flatten(1).sum(1).mean()
    torch.testing.assert_close(logs["loss/D/r1"], r1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(losses[1], r1 * 2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(losses[3], logs["loss/G/path_length"] * 2.0 * 3, rtol=1e-6, atol=1e-9)
    expected_counts = {1: 2, 2: 3, 3: 3, 4: 3, 5: 2}  # steps % 2 == 0 -> R1, steps % 3 == 0 -> path length
    for step in range(1, 6):
        losses.clear()
        module.training_step(batch, step)
        assert len(losses) == expected_counts[step], step
    assert int(module.steps) == 6 and int(module.images_seen) == 24


def test_path_length_penalty_reaches_the_mapping_network():
    """StyleGAN2 (rosinality train.py: ``fake_img, latents = generator(noise, return_latents=True)``;
    stylegan2-ada loss.py: ``pl_grads = autograd.grad(..., inputs=[gen_ws])`` with gen_ws from the
    mapping) backpropagates the path-length penalty through w into the mapping network."""
    module = tiny_module(r1_every=0, pl_weight=2.0, pl_every=1, mixing_prob=0.0)
    stub(module)
    graphs: list[torch.Tensor] = []
    module.manual_backward = lambda loss, *a, **k: graphs.append(loss)
    module.training_step(real_batch(4), 0)
    pl_loss = graphs[-1]  # D logistic, G logistic, path length
    grads = torch.autograd.grad(pl_loss, list(module.G.mapping.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("rampup", [None, 0.5])
def test_ema_half_life_with_rampup(rampup):
    """G does not move (no-op optimizers), so G_ema - G shrinks by beta at every step."""
    module = tiny_module(ema_kimg=0.01, ema_rampup=rampup, r1_every=0, pl_weight=0.0, mixing_prob=0.0)
    stub(module)
    with torch.no_grad():
        for p_ema, p in zip(module.G_ema.parameters(), module.G.parameters()):
            p_ema.copy_(p + 1.0)
        module.G.latent_avg.fill_(5.0)
    b, gap = 4, 1.0
    for step in range(5):
        module.training_step(real_batch(b, seed=step), step)
        seen = b * (step + 1)  # counted with the current batch
        half_life = 10.0 if rampup is None else min(10.0, seen * rampup)
        gap *= 0.5 ** (b / half_life)
        for p_ema, p in zip(module.G_ema.parameters(), module.G.parameters()):
            torch.testing.assert_close(p_ema - p, torch.full_like(p, gap), rtol=1e-3, atol=2e-6)  # float32 G + gap
    assert torch.equal(module.G_ema.latent_avg, module.G.latent_avg)  # buffers are copied
    if rampup is not None:  # ramp-up: 0.25, 0.5, 0.5^(2/3), 0.5^(1/2), 0.5^(2/5)
        assert gap == pytest.approx(0.25 * 0.5 * 0.5 ** (2 / 3) * 0.5**0.5 * 0.5**0.4)


def test_augment_p_is_fed_the_real_logits_of_each_d_step():
    aug = AdaptiveAugment(target=0.6, speed_kimg=1.0, interval=2, p_init=0.5)
    module = tiny_module(r1_every=0, pl_weight=0.0, mixing_prob=0.0, augment=aug)
    stub(module)
    module.training_step(real_batch(4), 0)
    assert float(aug.p) == 0.5  # one update of two
    module.training_step(real_batch(4, seed=1), 1)
    assert abs(float(aug.p) - 0.5) == pytest.approx(8 / 1000, rel=1e-4)  # 2 batches of 4 reals, speed 1 kimg


# ----------------------------------------------------------------------------------------------
# Style mixing


def cut_of(ws: torch.Tensor) -> int:
    """[num_ws, w_dim] made of two constant blocks -> the first row of the second block."""
    diff = [t for t in range(1, ws.shape[0]) if not torch.equal(ws[t], ws[0])]
    if not diff:
        return ws.shape[0]
    cut = diff[0]
    assert all(torch.equal(ws[t], ws[0]) for t in range(cut)) and all(torch.equal(ws[t], ws[cut]) for t in range(cut, ws.shape[0]))
    return cut


def test_style_mixing_cut_points_cover_1_to_num_ws_minus_1():
    module = tiny_module(size=32, mixing_prob=1.0)  # num_ws = 8
    num_ws = module.G.num_ws
    assert num_ws == 8
    random.seed(0)
    torch.manual_seed(0)
    counts = {}
    with torch.no_grad():
        for _ in range(350):
            ws = module.sample_ws(2)
            assert ws.shape == (2, num_ws, 8)
            cuts = {cut_of(ws[i]) for i in range(2)}
            assert len(cuts) == 1  # one cut for the whole batch
            cut = cuts.pop()
            counts[cut] = counts.get(cut, 0) + 1
    assert set(counts) == set(range(1, num_ws))  # never 0 (all from the 2nd z) nor num_ws (no mixing)
    assert all(25 <= n <= 75 for n in counts.values()), counts  # uniform: 50 each


@pytest.mark.parametrize("prob", [0.0, 0.5])
def test_style_mixing_probability(prob):
    module = tiny_module(size=16, mixing_prob=prob)
    random.seed(1)
    torch.manual_seed(1)
    with torch.no_grad():
        mixed = sum(cut_of(module.sample_ws(1)[0]) < module.G.num_ws for _ in range(300))
    if prob == 0:
        assert mixed == 0
    else:
        assert 110 <= mixed <= 190  # 150 expected, sd ~ 8.7


# ----------------------------------------------------------------------------------------------
# ADA probability


def logits(pos: int, neg: int) -> torch.Tensor:
    return torch.cat([torch.full((pos, 1), 2.0), torch.full((neg, 1), -1.0)])


def test_ada_p_adaptation_by_hand():
    aug = AdaptiveAugment(target=0.6, speed_kimg=0.1, interval=4, p_max=0.5)  # p moves 1 per 100 images
    for _ in range(3):
        aug.update(logits(8, 0))
        assert float(aug.p) == 0.0  # only every 4th call adjusts
    aug.update(logits(8, 0))  # r_t = 1 > 0.6: p += 4 * 8 / 100
    assert float(aug.p) == pytest.approx(0.32, rel=1e-6)
    for _ in range(4):
        aug.update(logits(6, 2))  # r_t = (6 - 2) / 8 = 0.5 < 0.6: p -= 0.32
    assert float(aug.p) == pytest.approx(0.0, abs=1e-7)
    for _ in range(4):
        aug.update(logits(0, 8))
    assert float(aug.p) == 0.0  # clamped at 0
    for _ in range(4):
        aug.update(logits(8, 2))  # r_t = 0.6 exactly: no change
    assert float(aug.p) == 0.0
    for _ in range(8):
        aug.update(logits(8, 0))
    assert float(aug.p) == pytest.approx(0.5)  # 0.32, then 0.64 clamped to p_max
    aug.p.fill_(0.0)
    assert torch.equal(aug(logits(1, 1).view(1, 1, 1, 2).expand(2, 3, 4, 2)), logits(1, 1).view(1, 1, 1, 2).expand(2, 3, 4, 2))  # p = 0: identity
