"""Many answers per input (lit_propulse.samples): the samples differ only in the rows and noise maps
that are resampled, each sample's L_DS is its own, seeds follow the image, the spread map."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.core.downscale import downscale
from lit_propulse.inference import ProPulseUpsampler
from lit_propulse.losses.pulse import downscale_l2
from lit_propulse.networks.stylegan2 import num_ws_up_to
from lit_propulse.pulse.search import noise_resolutions
from lit_propulse.refine import RefineConfig
from lit_propulse.samples import SampleConfig, sample_answers, spread_map
from tests.helpers import noisy_generator, stage_networks

W_DIM = 16
SIZE, LR = 32, 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def up() -> ProPulseUpsampler:
    gds, ew, ewp = stage_networks(noisy_generator(SIZE, W_DIM), LR)
    return ProPulseUpsampler(gds, ewp, ew)


def lr_batch(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, LR, LR, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_samples_differ_only_in_the_resampled_rows_and_noise(up):
    lr = lr_batch()
    s = sample_answers(up, lr, SampleConfig(num_samples=4, rows_above=LR))
    G = up.gds.generator
    B, N = 2, 4
    assert s.images.shape == (B, N, 3, SIZE, SIZE) and s.ws.shape == (B, N, G.num_ws, W_DIM) and s.l_ds.shape == (B, N)
    # rows of the layers up to the LR's resolution: the encoder's, in every sample
    first = num_ws_up_to(LR)
    assert s.first_row == first
    with torch.no_grad():
        ws0 = up.encode(lr)
    assert torch.equal(s.ws[:, :, :first], ws0[:, None, :first].expand(B, N, -1, -1))
    # the finer rows: different in every sample
    fine = s.ws[:, :, first:]
    for b in range(B):
        for i in range(N):
            for j in range(i + 1, N):
                assert not torch.allclose(fine[b, i], fine[b, j])
    # noise: maps at resolutions <= LR are the stored ones; the finer ones redrawn per sample
    res = noise_resolutions(SIZE)
    stored = G.synthesis.stored_noise()
    assert s.noise_maps == [i for i, r in enumerate(res) if r > LR]
    for i, r in enumerate(res):
        if r <= LR:
            assert torch.equal(s.noise[i], stored[i])
        else:
            assert s.noise[i].shape == (B * N, 1, r, r)
            assert not torch.allclose(s.noise[i][0], s.noise[i][1])
    # each sample's L_DS is its own image's
    with torch.no_grad():
        img = G.synthesis(s.ws.flatten(0, 1), noise=s.noise).image
    assert torch.allclose(s.images.flatten(0, 1), img, atol=1e-5)
    expected = downscale_l2(downscale(img.clamp(-1, 1), LR), lr.repeat_interleave(N, 0)).view(B, N)
    assert torch.allclose(s.l_ds, expected, atol=1e-6)
    assert s.spread.shape == (B, 1, SIZE, SIZE) and (s.spread > 0).any()


def test_default_rows_are_those_above_four_times_the_lr(up):
    s = sample_answers(up, lr_batch(1), SampleConfig(num_samples=2))
    assert s.first_row == num_ws_up_to(min(4 * LR, SIZE))


def test_nothing_resampled_gives_identical_samples_and_zero_spread(up):
    lr = lr_batch()
    s = sample_answers(up, lr, SampleConfig(num_samples=3, rows_above=SIZE, noise_above=SIZE))
    assert s.noise_maps == [] and s.first_row == up.gds.generator.num_ws
    assert torch.equal(s.images[:, 0:1].expand_as(s.images), s.images)
    assert torch.count_nonzero(s.spread) == 0
    with torch.no_grad():
        assert torch.allclose(s.images[:, 0], up(lr).image, atol=1e-5)  # = the encoder's one answer


def test_strength_zero_keeps_rows_and_resamples_noise_only(up):
    s = sample_answers(up, lr_batch(), SampleConfig(num_samples=2, rows_above=LR, strength=0.0))
    assert torch.equal(s.ws[:, 0], s.ws[:, 1])
    assert not torch.allclose(s.images[:, 0], s.images[:, 1])


def test_samples_follow_the_image_key_not_the_batch(up):
    lr = lr_batch(3)
    cfg = SampleConfig(num_samples=2, rows_above=LR)
    batch = sample_answers(up, lr, cfg, keys=[10, 11, 12])
    alone = sample_answers(up, lr[1:2], cfg, keys=[11])
    assert torch.allclose(alone.ws[0], batch.ws[1], atol=1e-6)
    assert torch.allclose(alone.images[0], batch.images[1], atol=1e-5)


def test_refined_samples_report_their_refined_l_ds(up):
    lr = lr_batch(1)
    plain = sample_answers(up, lr, SampleConfig(num_samples=2, rows_above=LR))
    refined = sample_answers(up, lr, SampleConfig(num_samples=2, rows_above=LR), refine_config=RefineConfig(eps=1e-9, max_steps=5, learning_rate=0.05))
    assert (refined.l_ds < plain.l_ds).all()


def test_spread_map_and_config_checks():
    imgs = torch.zeros(1, 2, 3, 4, 4)
    imgs[0, 1, :, 0, 0] = 1.0  # one pixel differs between the two samples by 1 in every channel
    spread = spread_map(imgs)
    assert spread.shape == (1, 1, 4, 4) and spread[0, 0, 0, 0] == pytest.approx(0.5) and spread.sum() == pytest.approx(0.5)
    assert torch.count_nonzero(spread_map(imgs[:, :1])) == 0
    with pytest.raises(ValueError, match="num_samples"):
        SampleConfig(num_samples=0)
    with pytest.raises(ValueError, match="strength"):
        SampleConfig(strength=2.0)
    with pytest.raises(ValueError, match="power of two"):
        SampleConfig(rows_above=12)
