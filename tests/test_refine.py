"""The refinement (lit_propulse.refine): per-image stopping at ε, per-image independence, the two
variants' constraints; the fidelity dial's end points (lit_propulse.dial); the evaluation method."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.weights import save_module
from lit_propulse.dial import blend_dial, dial_ends, dial_rows, scale_dial
from lit_propulse.inference import ProPulseUpsampler, encode_ws
from lit_propulse.losses.pulse import downscale_l2
from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.pulse.fit import GaussianFit
from lit_propulse.refine import RefineConfig, RefinedUpsampler, refine, render_fn
from tests.helpers import noisy_generator, stage_networks

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end-to-end runs: outside `pytest -m "not slow"`

W_DIM = 16
SIZE, LR = 32, 8


@pytest.fixture(scope="module")
def G() -> Generator:
    return noisy_generator(SIZE, W_DIM)


def l_ds(G: Generator, ws: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        img = G.synthesis(ws, noise="const").image.clamp(-1, 1)
    return downscale_l2(downscale(img, LR), lr)


class CountingSynthesis:
    """G.synthesis that records the batch size of every call."""

    def __init__(self, G: Generator) -> None:
        self.render = render_fn(G.synthesis)
        self.batches: list[int] = []

    def __call__(self, ws, noise):
        self.batches.append(ws.shape[0])
        return self.render(ws, noise)


def problem(G: Generator):
    """Three LRs: image 0 starts at its answer, image 1 near it, image 2's LR is noise (unreachable)."""
    g = torch.Generator().manual_seed(1)
    w_true = G.mapping(torch.randn(3, W_DIM, generator=g))
    ws_true = G.to_ws(w_true).clone()  # [3, num_ws, d]
    with torch.no_grad():
        lr = downscale(G.synthesis(ws_true, noise="const").image.clamp(-1, 1), LR)
    lr[2] = torch.rand(3, LR, LR, generator=g) * 2 - 1
    ws0 = ws_true.clone()
    ws0[1] += 0.3 * torch.randn(ws0[1].shape, generator=g)
    ws0[2] += 0.3 * torch.randn(ws0[2].shape, generator=g)
    return ws0, lr


def test_stops_per_image_at_eps_and_keeps_the_best_of_a_failure(G):
    ws0, lr = problem(G)
    start = l_ds(G, ws0, lr)
    eps = float(start[1]) / 4
    assert start[0] <= eps < start[1] and start[2] > 50 * eps
    cfg = RefineConfig(variant="wplus", eps=eps, max_steps=60, learning_rate=0.05, prior_weight=0.0)
    synth = CountingSynthesis(G)
    res = refine(synth, ws0, lr, G.synthesis.resolve_noise("const", 3), cfg)
    # image 0 met ε before any step; image 1 after some; image 2 never
    assert res.success.tolist() == [True, True, False]
    assert res.steps[0] == 0 and 0 < res.steps[1] < cfg.max_steps and res.steps[2] == cfg.max_steps
    assert torch.equal(res.ws[0], ws0[0])  # a finished image is not touched again
    # the batch shrinks as images finish: 3 at the first evaluation, never more afterwards
    assert synth.batches[0] == 3 and synth.batches[1] == 2 and synth.batches[-1] == 1
    assert synth.batches == sorted(synth.batches, reverse=True)
    assert len(synth.batches) == cfg.max_steps + 1
    # the returned iterate's L_DS is what the result says, and is the best one seen for the failure
    assert torch.allclose(res.loss, l_ds(G, res.ws, lr), atol=1e-6)
    seen_2 = torch.stack([h[-1] for h in res.history])  # image 2 is the last active item at every step
    assert torch.isclose(res.loss[2], seen_2.min())
    assert res.loss_start.tolist() == pytest.approx(start.tolist(), abs=1e-6)
    recs = res.per_image()
    assert [r["success"] for r in recs] == [True, True, False] and recs[1]["steps"] == int(res.steps[1])


def test_an_images_result_does_not_depend_on_its_batch(G):
    ws0, lr = problem(G)
    eps = float(l_ds(G, ws0, lr)[1]) / 4
    cfg = RefineConfig(variant="wplus", eps=eps, max_steps=30, learning_rate=0.05)
    noise = G.synthesis.resolve_noise("const", 3)
    both = refine(render_fn(G.synthesis), ws0, lr, noise, cfg)
    alone = refine(render_fn(G.synthesis), ws0[1:2], lr[1:2], noise, cfg)
    assert int(alone.steps[0]) == int(both.steps[1])
    assert torch.allclose(alone.ws[0], both.ws[1], atol=1e-4)


def test_max_steps_zero_only_scores_the_encoders_answer(G):
    ws0, lr = problem(G)
    res = refine(render_fn(G.synthesis), ws0, lr, G.synthesis.resolve_noise("const", 3), RefineConfig(eps=1e-9, max_steps=0))
    assert torch.equal(res.ws, ws0) and res.steps.tolist() == [0, 0, 0] and torch.equal(res.loss, res.loss_start)


def test_wplus_radius_keeps_rows_near_the_encoder(G):
    ws0, lr = problem(G)
    cfg = RefineConfig(variant="wplus", eps=1e-9, max_steps=5, learning_rate=0.5, radius=0.1)
    res = refine(render_fn(G.synthesis), ws0, lr, G.synthesis.resolve_noise("const", 3), cfg)
    assert (res.ws - ws0).norm(dim=-1).max() <= 0.1 + 1e-5


def test_sphere_keeps_each_latent_row_on_its_own_sphere_and_trainable_noise_on_its_own(G):
    ws0, lr = problem(G)
    fit = GaussianFit.fit(G, 4000)
    cfg = RefineConfig(variant="sphere", eps=1e-9, max_steps=5, learning_rate=0.1, noise_trainable=2)
    noise0 = G.synthesis.resolve_noise("const", 3)
    res = refine(render_fn(G.synthesis), ws0, lr, noise0, cfg, gaussian_fit=fit)
    assert torch.allclose(fit.to_latent(res.ws).norm(dim=-1), fit.to_latent(ws0).norm(dim=-1), rtol=1e-4)
    assert not torch.allclose(res.ws, ws0)
    assert (res.loss[1:] < res.loss_start[1:]).all()  # images 1, 2 improved (image 0 started at its answer)
    for i in range(2):  # optimised, radius kept
        assert res.noise[i].shape[0] == 3 and not torch.allclose(res.noise[i][1:], noise0[i].expand(2, -1, -1, -1))
        assert torch.allclose(res.noise[i].flatten(1).norm(dim=1), noise0[i].flatten().norm().expand(3), rtol=1e-4)
    assert res.noise[2] is noise0[2] or torch.equal(res.noise[2], noise0[2])  # the rest kept
    with pytest.raises(ValueError, match="gaussian_fit"):
        refine(render_fn(G.synthesis), ws0, lr, noise0, cfg)


def test_config_is_checked():
    with pytest.raises(ValueError, match="variant"):
        RefineConfig(variant="adam")
    with pytest.raises(ValueError, match="eps"):
        RefineConfig(eps=0)
    with pytest.raises(ValueError, match="radius"):
        RefineConfig(radius=0)
    assert "ε = 0.002" in RefineConfig().describe()


# ----------------------------------------------------------------------------------------------
# the upsampler, the evaluation method and the dial


def test_refined_upsampler_renders_the_refined_ws_through_gds(G):
    gds, ew, ewp = stage_networks(G, LR)
    up = ProPulseUpsampler(gds, ewp, ew)
    lr = torch.rand(2, 3, LR, LR) * 2 - 1
    ru = RefinedUpsampler(up, RefineConfig(eps=1e-9, max_steps=3))
    out = ru(lr)
    assert out.image.shape == (2, 3, SIZE, SIZE) and sorted(out.side_images) == [16]
    assert torch.equal(out.ws, ru.last.ws) and ru.last.steps.tolist() == [3, 3]
    with torch.no_grad():
        assert torch.allclose(out.image, gds(ru.last.ws, noise="const").image, atol=1e-5)
    assert (ru.size, ru.lr_size, ru.gds) == (up.size, up.lr_size, up.gds)


def test_evaluation_method_binds_eps_and_records_each_image_once(G, tmp_path):
    from lit_propulse.evaluation.refine_method import RefineMethod

    gds, ew, ewp = stage_networks(G, LR)
    gds.save(tmp_path / "gds.pt")
    save_module(ew, tmp_path / "ew.pt")
    save_module(ewp, tmp_path / "ewplus.pt", extra={"active_scale": SIZE})
    m = RefineMethod("refined", str(tmp_path / "gds.pt"), str(tmp_path / "ewplus.pt"), ew=str(tmp_path / "ew.pt"), config=RefineConfig(max_steps=2))
    m.bind_eps(1e-9)
    assert m.config.eps == 1e-9
    hr = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    batch = SRBatch(hr=hr, lr=downscale(hr, LR), index=torch.tensor([5, 6, 7]))
    out = m.upsample(batch)
    m.upsample(SRBatch(hr=hr[:1], lr=batch.lr[:1], index=batch.index[:1]))  # e.g. timed again
    assert out.image.shape == (3, 3, SIZE, SIZE) and out.image.abs().max() <= 1
    assert sorted(m.records) == [5, 6, 7] and "0/3 images met ε" in m.settings()


def test_dial_end_points_are_ew_and_ewplus(G):
    _, ew, ewp = stage_networks(G, LR)
    lr = torch.rand(2, 3, LR, LR) * 2 - 1
    ws_ew, ws_p = dial_ends(G, ewp, ew, lr)
    with torch.no_grad():
        assert torch.equal(ws_ew, encode_ws(G, ew, lr))
        assert torch.equal(ws_p, encode_ws(G, ewp, lr, SIZE, ew))
    n = len(ewp.scales)
    assert torch.equal(scale_dial(ws_ew, ws_p, dial_rows(ewp, 0)), ws_ew)
    assert torch.equal(scale_dial(ws_ew, ws_p, dial_rows(ewp, n)), ws_p)
    assert torch.equal(blend_dial(ws_ew, ws_p, 0.0), ws_ew) and torch.equal(blend_dial(ws_ew, ws_p, 1.0), ws_p)
    # in between: each scale position is Eq. (10) at the earlier progressive scale
    with torch.no_grad():
        assert torch.equal(scale_dial(ws_ew, ws_p, dial_rows(ewp, 1)), encode_ws(G, ewp, lr, ewp.scales[0], ew))
    mid = blend_dial(ws_ew, ws_p, 0.5)
    assert torch.allclose(mid, (ws_ew + ws_p) / 2)
    with pytest.raises(ValueError, match="position"):
        dial_rows(ewp, n + 1)
    with pytest.raises(ValueError, match="alpha"):
        blend_dial(ws_ew, ws_p, 1.5)


def test_upsample_refine_flags_wrap_the_upsampler(G):
    import argparse

    from lit_propulse.commands.refine_args import add_refine_arguments, refine_settings, refined_upsampler
    from lit_propulse.core.errors import UserFacingError

    gds, ew, ewp = stage_networks(G, LR)
    up = ProPulseUpsampler(gds, ewp, ew)
    p = argparse.ArgumentParser()
    add_refine_arguments(p)
    assert refined_upsampler(up, p.parse_args([])) is up and refine_settings(up) is None
    ru = refined_upsampler(up, p.parse_args(["--refine", "--refine-variant", "sphere", "--refine-steps", "2", "--refine-eps", "1e-9"]))
    assert isinstance(ru, RefinedUpsampler) and ru.config.variant == "sphere" and ru.config.max_steps == 2
    assert ru.config.learning_rate == RefineConfig.for_variant("sphere").learning_rate
    ru.gaussian_fit = GaussianFit.fit(G, 2000)
    ru(torch.rand(2, 3, LR, LR) * 2 - 1)
    settings = refine_settings(ru)
    assert settings["images"] == 2 and settings["success"] == 0 and settings["steps_max"] == 2 and "spherical" in settings["settings"]
    with pytest.raises(UserFacingError, match="--refine: eps"):
        refined_upsampler(up, p.parse_args(["--refine", "--refine-eps", "0"]))
