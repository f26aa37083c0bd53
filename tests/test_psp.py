"""pSp's encoder (lit_propulse.networks.psp), its objective (losses.psp), its training module
(modules.psp) and its evaluation method (evaluation.psp_method), on tiny networks."""

from __future__ import annotations

import math

import pytest
import torch

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import WeightsFileError
from lit_propulse.core.weights import EXPORTABLE, load_module, save_module
from lit_propulse.losses.psp import PSPLoss, WNormLoss
from lit_propulse.modules.psp import PSPModule
from lit_propulse.networks.feature_nets import ArcFaceIdentity
from lit_propulse.networks.psp import IR_SE50_STAGES, GradualStyleBlock, GradualStyleEncoder
from lit_propulse.networks.stylegan2 import Generator

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end-to-end runs: outside `pytest -m "not slow"`

W_DIM = 16
TINY_STAGES = [(16, 1), (16, 1), (32, 1), (32, 1)]


def tiny_encoder(num_ws: int = 8, lr_size: int = 8, input_size: int = 64) -> GradualStyleEncoder:
    return GradualStyleEncoder(lr_size, W_DIM, num_ws, input_size=input_size, stages=TINY_STAGES, coarse_ind=2, middle_ind=5)


def tiny_generator(size: int = 32) -> Generator:
    G = Generator(size, style_dim=W_DIM, n_mlp=1, channels={2**k: 8 for k in range(2, size.bit_length())})
    G.compute_latent_avg(256)
    return G.eval()


# ----------------------------------------------------------------------------------------------
# map2style and the pyramid


@pytest.mark.parametrize("spatial", [2, 4, 16])
def test_map2style_halves_to_one_pixel_then_maps_to_w(spatial):
    block = GradualStyleBlock(24, W_DIM, spatial)
    convs = [m for m in block.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == int(math.log2(spatial))  # pSp: log2(spatial) stride-2 convs
    assert all(c.stride == (2, 2) for c in convs) and convs[0].in_channels == 24
    out = block(torch.randn(3, 24, spatial, spatial))
    assert out.shape == (3, W_DIM)
    with pytest.raises(ValueError, match="map"):
        block(torch.randn(3, 24, spatial * 2, spatial * 2))


def test_pyramid_levels_and_which_rows_read_which():
    enc = tiny_encoder(num_ws=8, input_size=64)
    x = enc.upsample_lr(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert x.shape == (2, 3, 64, 64)
    p1, p2, c3 = enc.pyramid(x)
    assert p1.shape == (2, 32, 16, 16) and p2.shape == (2, 32, 8, 8) and c3.shape == (2, 32, 4, 4)
    assert enc.pyramid_sizes == (16, 8, 4)
    # pSp: rows [0, coarse) read c3, [coarse, middle) read p2, the rest p1
    sides = [head.spatial for head in enc.styles]
    assert sides == [4, 4, 8, 8, 8, 16, 16, 16]
    ws = enc(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert ws.shape == (2, 8, W_DIM)


def test_pyramid_at_psp_sizes():
    """pSp's layout at its 256 input: c3 16, p2 32, p1 64; rows 3 / 7 of 18 (only the table, no forward)."""
    enc = GradualStyleEncoder(16, W_DIM, 18, input_size=256, stages=TINY_STAGES)
    assert enc.pyramid_sizes == (64, 32, 16)
    assert [h.spatial for h in enc.styles] == [16] * 3 + [32] * 4 + [64] * 11


def test_ws_are_offsets_from_the_mean_latent():
    enc = tiny_encoder()
    with torch.no_grad():
        for head in enc.styles:
            head.linear.weight.zero_()
            head.linear.bias.zero_()
        enc.w_offset.copy_(torch.arange(W_DIM, dtype=torch.float32))
    ws = enc(torch.rand(2, 3, 8, 8))
    assert torch.equal(ws, enc.w_offset.expand(2, 8, W_DIM))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="coarse_ind"):
        GradualStyleEncoder(8, W_DIM, 4, input_size=64, stages=TINY_STAGES, coarse_ind=3, middle_ind=7)
    with pytest.raises(ValueError, match="input_size"):
        GradualStyleEncoder(8, W_DIM, 8, input_size=24, stages=TINY_STAGES)
    with pytest.raises(ValueError, match="LR image"):
        tiny_encoder()(torch.rand(1, 3, 16, 16))


# ----------------------------------------------------------------------------------------------
# export round trip and the IR-SE50 backbone


def test_export_round_trip(tmp_path):
    assert EXPORTABLE["lit_propulse.networks.psp.GradualStyleEncoder"] == "lit_propulse.networks.psp:GradualStyleEncoder"
    enc = tiny_encoder().eval()
    with torch.no_grad():
        enc.w_offset.normal_()
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # running statistics must travel too
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "psp.pt"
    save_module(enc, path)
    back = load_module(path, expected=GradualStyleEncoder, what="pSp encoder").eval()
    assert back.init_args == enc.init_args and back.stages == enc.stages
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(back(lr), enc(lr))


def test_backbone_loads_arcface_ir_se50_key_for_key(tmp_path):
    arc = ArcFaceIdentity(None, random_init=True)
    with torch.no_grad():
        for p in arc.parameters():
            p.normal_()
    path = tmp_path / "model_ir_se50.pth"
    torch.save(arc.state_dict(), path)
    enc = GradualStyleEncoder(8, W_DIM, 2, input_size=32, stages=IR_SE50_STAGES, coarse_ind=1, middle_ind=2)
    assert len(enc.body) == 24
    enc.load_backbone(path)
    mine = enc.state_dict()
    for k, v in arc.state_dict().items():
        if k.startswith(("input_layer.", "body.")):
            assert torch.equal(mine[k], v), k
    with pytest.raises(ValueError, match="IR-SE50"):
        tiny_encoder().load_backbone(path)
    torch.save({"body.0.res_layer.1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsFileError, match="IR-SE50"):
        enc.load_backbone(tmp_path / "other.pth")


# ----------------------------------------------------------------------------------------------
# the objective and the module


def test_w_norm_is_the_frobenius_norm_of_the_offset():
    ws = torch.randn(3, 4, W_DIM)
    avg = torch.randn(W_DIM)
    expected = torch.stack([torch.linalg.matrix_norm(w - avg) for w in ws]).mean()
    assert torch.allclose(WNormLoss()(ws, avg), expected)


def test_psp_loss_terms_and_missing_networks():
    with pytest.raises(ValueError, match="LPIPS"):
        PSPLoss(lambda_lpips=0.8)
    with pytest.raises(ValueError, match="identity"):
        PSPLoss(lambda_lpips=0, lambda_id=0.1)
    loss = PSPLoss(lambda_l2=1.0, lambda_lpips=0, lambda_id=0, lambda_w_norm=0.005, loss_size=16)
    img, gt, ws, avg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.randn(2, 4, W_DIM), torch.zeros(W_DIM)
    total, logs = loss(img, gt, ws, avg)
    l2 = torch.nn.functional.mse_loss(torch.nn.functional.adaptive_avg_pool2d(img, 16), torch.nn.functional.adaptive_avg_pool2d(gt, 16))
    assert torch.allclose(logs["loss/l2"], l2)
    assert torch.allclose(total, l2 + 0.005 * WNormLoss()(ws, avg))
    assert set(logs) == {"loss/l2", "loss/w_norm", "loss/total"}


def test_module_trains_the_encoder_only_and_exports_it(tmp_path):
    G = tiny_generator(32)
    enc = tiny_encoder(num_ws=G.num_ws, lr_size=8, input_size=32)
    module = PSPModule(enc, G, PSPLoss(lambda_lpips=0, lambda_id=0, loss_size=None))
    assert torch.equal(enc.w_offset, G.latent_avg)  # start_from_latent_avg
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    batch = SRBatch(hr=hr, lr=downscale(hr, 8), index=torch.arange(2))
    total, logs, out = module._losses(batch, "random")
    assert out.image.shape == (2, 3, 32, 32) and out.ws.shape == (2, G.num_ws, W_DIM) and torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    assert all(p.grad is None for p in G.parameters())
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert not any(k.startswith("generator.") for k in ckpt["state_dict"]) and any(k.startswith("encoder.") for k in ckpt["state_dict"])
    module.export(str(tmp_path / "psp.pt"))
    assert isinstance(load_module(tmp_path / "psp.pt"), GradualStyleEncoder)
    with pytest.raises(ValueError, match="w\\+"):
        PSPModule(tiny_encoder(num_ws=G.num_ws + 1), G, PSPLoss(lambda_lpips=0, lambda_id=0))


def test_evaluation_method_runs_the_export(tmp_path):
    from lit_propulse.evaluation.psp_method import PSPMethod

    G = tiny_generator(32)
    G.save(tmp_path / "g.pt")
    enc = tiny_encoder(num_ws=G.num_ws, lr_size=8, input_size=32).eval()
    save_module(enc, tmp_path / "psp.pt")
    method = PSPMethod("pSp", str(tmp_path / "g.pt"), str(tmp_path / "psp.pt"))
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    out = method.upsample(SRBatch(hr=hr, lr=downscale(hr, 8), index=torch.arange(2)))
    with torch.no_grad():
        expected = G.synthesis(enc(downscale(hr, 8)), noise="const").image.clamp(-1, 1)
    assert torch.allclose(out.image, expected, atol=1e-5)
    assert "pSp GradualStyleEncoder" in method.settings()
