"""G_ds (Pro-PULSE Sec. III-C): side outputs at every resolution, and its export file (gds.pt) — one
written in the format used before the networks/stylegan2.py split must still load exactly."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.core.errors import CheckpointError
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.networks.gds import DeeplySupervisedGenerator, load_gds, side_resolutions
from lit_propulse.networks.stylegan2 import Generator

CH = {4: 8, 8: 8, 16: 8, 32: 8}
LR = 8


@pytest.fixture
def G():
    torch.manual_seed(0)
    G = Generator(size=32, style_dim=16, n_mlp=2, channels=CH)
    G.latent_avg.normal_()
    G.has_latent_avg.fill_(True)
    return G.eval()


def test_side_outputs_at_every_branch_resolution(G):
    gds = DeeplySupervisedGenerator(G, LR, head_hidden=(8, 4))
    assert gds.resolutions == side_resolutions(32, LR) == [16]
    ws = torch.randn(2, G.num_ws, G.w_dim, requires_grad=True)
    out = gds(ws)
    assert isinstance(out, ImageOutput) and out.image.shape == (2, 3, 32, 32)
    assert {r: tuple(v.shape) for r, v in out.side_images.items()} == {16: (2, 3, 16, 16)}
    out.side_images[16].square().mean().backward()
    assert ws.grad.abs().sum() > 0 and not any(p.requires_grad for p in gds.generator.parameters())
    assert all(p.grad is not None for p in gds.heads.parameters())


def test_gds_file_in_the_pre_split_format_loads(tmp_path, G):
    """The keys and values ``DeeplySupervisedGenerator.save`` wrote before the split, spelled out: no
    class or module name is stored, so the file does not depend on where the code lives."""
    gds = DeeplySupervisedGenerator(G, LR, head_hidden=(8, 4))
    for p in gds.heads.parameters():
        torch.nn.init.normal_(p)
    old = {
        "g_ema": G.port_state_dict(),
        "latent_avg": G.latent_avg.clone(),
        "arch": {"size": 32, "style_dim": 16, "n_mlp": 2, "channels": CH, "blur_kernel": [1.0, 3.0, 3.0, 1.0], "lr_mlp": 0.01},
        "format": "lit_propulse.stylegan2/1",
        "side_heads": {k: v.detach().clone() for k, v in gds.heads.state_dict().items()},
        "side_arch": {"lr_size": LR, "head_hidden": [8, 4], "residual_skip": False},
    }
    torch.save(old, tmp_path / "gds.pt")
    loaded = load_gds(str(tmp_path / "gds.pt"))
    assert loaded.lr_size == LR and loaded.head_hidden == [8, 4] and torch.equal(loaded.generator.latent_avg, G.latent_avg)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    with torch.no_grad():
        a, b = gds(ws), loaded(ws)
    assert torch.equal(a.image, b.image) and torch.equal(a.side_images[16], b.side_images[16])
    # today's writer produces the same keys, in the same order, with the same values
    gds.save(tmp_path / "new.pt")
    new = torch.load(tmp_path / "new.pt", weights_only=True)
    assert list(new) == list(old) and new["arch"] == old["arch"] and new["side_arch"] == old["side_arch"]
    assert all(torch.equal(new["side_heads"][k], v) for k, v in old["side_heads"].items())


def test_plain_checkpoint_needs_require_heads_false(tmp_path, G):
    G.save(tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="no trained side-output branches"):
        load_gds(str(tmp_path / "g.pt"))
    fresh = load_gds(str(tmp_path / "g.pt"), lr_size=LR, head_hidden=(8, 4), require_heads=False)
    assert fresh.resolutions == [16]
    fresh.save(tmp_path / "gds.pt")
    with pytest.raises(CheckpointError, match="trained for LR 8, but lr_size=4"):
        load_gds(str(tmp_path / "gds.pt"), lr_size=4)
