"""The encoder stages' WGAN critic step (lit_propulse/modules/propulse.py, Eq. (9)) with the optional
gradient penalty, applied lazily: on every k-th critic step only, weighted k times."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.losses.propulse import EncoderLoss
from lit_propulse.modules.propulse import EWModule
from lit_propulse.networks.stylegan2 import Discriminator
from tests.helpers import noisy_generator, stage_networks

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, LR = 32, 8


class NoStep:
    """A LightningOptimizer stand-in (``.optimizer`` is the raw one): nothing moves."""

    optimizer = property(lambda self: self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def critic_losses(every: int, steps: int = 4) -> list[tuple[torch.Tensor, dict]]:
    """(loss handed to the critic's backward, the step's logs) for ``steps`` training steps."""
    gds, ew, _ = stage_networks(noisy_generator(SIZE, 16), LR)
    torch.manual_seed(1)
    D = Discriminator(SIZE, channels={4: 8, 8: 8, 16: 8, 32: 8})
    module = EWModule(ew, gds, EncoderLoss(1.0, 0.0, 0.01), discriminator=D, gradient_penalty=10.0, gradient_penalty_every=every)
    backward: list[torch.Tensor] = []
    logs: list[dict] = []
    module.optimizers = lambda: (NoStep(), NoStep())
    module.manual_backward = lambda loss, *a, **k: backward.append(loss.detach())
    module.log_dict = lambda d, **k: logs.append({k2.removeprefix("train/"): float(v) for k2, v in d.items()})
    module.log = lambda *a, **k: None
    hr = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for _ in range(steps):
        module.training_step(SRBatch(hr=hr, lr=downscale(hr, LR), index=torch.arange(2)), 0)
    return list(zip(backward[1::2], logs))  # each step: the encoder's backward, then the critic's


def test_lazy_gradient_penalty_every_second_step_weighted_twice():
    for i, (d_loss, logs) in enumerate(critic_losses(every=2)):
        if i % 2 == 0:
            assert logs["loss/D/gp"] > 0 and float(d_loss) == pytest.approx(logs["loss/D/wgan"] + 2 * logs["loss/D/gp"], rel=1e-5)
        else:
            assert "loss/D/gp" not in logs and float(d_loss) == pytest.approx(logs["loss/D/wgan"], rel=1e-6)


def test_every_step_penalty_by_default_and_bad_values_refused():
    for d_loss, logs in critic_losses(every=1, steps=2):
        assert float(d_loss) == pytest.approx(logs["loss/D/wgan"] + logs["loss/D/gp"], rel=1e-5)
    gds, ew, _ = stage_networks(noisy_generator(SIZE, 16), LR)
    with pytest.raises(ValueError, match="gradient_penalty_every >= 1"):
        EWModule(ew, gds, EncoderLoss(1.0, 0.0, 0.0), gradient_penalty=10.0, gradient_penalty_every=0)
