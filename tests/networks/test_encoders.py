"""E_W and E_W+ (Pro-PULSE Sec. III-D to III-F): shapes at LR 8 / 16, the scale -> w+ rows rule,
Eq. (10) composition into a tiny generator, gradients, warm start, and construction errors."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.networks.encoders import (
    FEATURE_SIZE,
    RCAB,
    EWEncoder,
    EWPlusEncoder,
    ResidualGroup,
    compose_wplus,
    scale_rows,
)
from lit_propulse.networks.stylegan2 import Generator, num_ws_up_to

SMALL = dict(channels=8, reduction=4)  # tiny RCAN body for speed
TINY_G = dict(size=64, style_dim=32, n_mlp=1, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(**TINY_G).eval()


def test_rcab_and_group_keep_shape_and_are_residual():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    rcab = RCAB(8, reduction=4)
    assert rcab(x).shape == x.shape
    # zeroing the last conv of the body leaves the identity: the block is x + CA(body(x))
    with torch.no_grad():
        rcab.body[2].weight.zero_()
        rcab.body[2].bias.zero_()
    assert torch.equal(rcab(x), x)
    group = ResidualGroup(8, num_rcabs=2, reduction=4)
    assert len(group.rcabs) == 2 and group(x).shape == x.shape


@pytest.mark.parametrize("lr_size", [8, 16])
@pytest.mark.parametrize("w_dim,out_channels", [(64, 32), (512, 512)])
def test_ew_shapes(lr_size, w_dim, out_channels, G):
    enc = EWEncoder(lr_size, w_dim, G.num_ws, out_channels=out_channels, **SMALL)
    assert (enc.out.linear is None) == (out_channels == w_dim)  # a linear only when widths differ
    assert enc.head(torch.zeros(1, 3, lr_size, lr_size)).shape[-2:] == (FEATURE_SIZE, FEATURE_SIZE)
    lr = torch.randn(2, 3, lr_size, lr_size)
    w = enc(lr)
    assert w.shape == (2, w_dim)
    ws = enc.forward_ws(lr)
    assert ws.shape == (2, G.num_ws, w_dim)
    assert torch.equal(ws, w[:, None].expand_as(ws))  # Eq. (4): the same w at every layer


def test_ew_paper_default_layout():
    """Sec. III-F: 4 groups of 2 RCABs, three 512-wide output convs with (k, s) (4,4), (4,4), (2,1)."""
    enc = EWEncoder(16, 512, 18)
    assert len(enc.groups) == 4 and all(len(g.rcabs) == 2 for g in enc.groups)
    convs = [m for m in enc.out.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in convs] == [(4, 4, 512), (4, 4, 512), (2, 1, 512)]
    assert enc.head.conv.kernel_size == (3, 3) and enc.head.conv.stride == (1, 1)
    assert enc.head.upsample.kernel_size == (3, 3) and enc.head.upsample.stride == (2, 2)
    assert enc.out.linear is None


def test_ew_gradients_reach_every_parameter_and_the_input():
    torch.manual_seed(0)
    enc = EWEncoder(16, 32, 10, out_channels=16, **SMALL)
    lr = torch.randn(2, 3, 16, 16, requires_grad=True)
    enc.forward_ws(lr).square().mean().backward()
    assert lr.grad is not None and lr.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.parameters())
    # the main path (head, every RCAB's convs, long skip, output convs) gets non-zero gradients; the
    # 2-channel attention squeeze may legitimately have a dead ReLU at this tiny width
    main = [n for n, _ in enc.named_parameters() if ".body.3." not in n]
    grads = dict(enc.named_parameters())
    assert all(grads[n].grad.abs().sum() > 0 for n in main), [n for n in main if grads[n].grad.abs().sum() == 0]


def test_scale_rows_rule():
    rows = scale_rows([32, 64, 128, 256, 512, 1024], num_ws=18)
    assert rows == {32: (0, 8), 64: (8, 10), 128: (10, 12), 256: (12, 14), 512: (14, 16), 1024: (16, 18)}
    # the first scale owns everything up to and including its resolution; the union is contiguous
    for scales, num_ws in [([16, 32, 64], 10), ([32, 128], 12)]:
        r = scale_rows(scales, num_ws)
        assert r[scales[0]] == (0, num_ws_up_to(scales[0]))
        bounds = list(r.values())
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert bounds[-1][1] == num_ws_up_to(scales[-1])


@pytest.mark.parametrize("lr_size,scales", [(16, [32, 64]), (8, [16, 32, 64])])
@pytest.mark.parametrize("w_dim", [32, 512])
def test_ewplus_shapes_and_partial_scales(lr_size, scales, w_dim, G):
    out_channels = 512 if w_dim == 512 else 16
    enc = EWPlusEncoder(lr_size, w_dim, G.num_ws, scales, out_channels=out_channels, **SMALL)
    lr = torch.randn(2, 3, lr_size, lr_size)
    full = enc(lr)
    assert full.shape == (2, num_ws_up_to(scales[-1]), w_dim) == (2, enc.total_rows, w_dim)
    for s in scales:
        part = enc.forward_scales(lr, s)
        assert part.shape == (2, num_ws_up_to(s), w_dim)
        assert torch.allclose(part, full[:, : part.shape[1]], atol=1e-6)  # branches are independent


def test_forward_scales_runs_only_the_needed_branches():
    enc = EWPlusEncoder(16, 32, 10, [32, 64], out_channels=16, **SMALL)
    called = []
    enc.branches["64"].out.register_forward_hook(lambda *a: called.append(64))
    enc.forward_scales(torch.randn(1, 3, 16, 16), 32)
    assert called == []
    enc(torch.randn(1, 3, 16, 16))
    assert called == [64]


def test_chain_branches_feed_later_scales():
    torch.manual_seed(0)
    enc = EWPlusEncoder(16, 32, 10, [32, 64], out_channels=16, chain_branches=True, **SMALL)
    lr = torch.randn(1, 3, 16, 16)
    before = enc(lr)[:, 8:]
    with torch.no_grad():
        enc.branches["32"].rcabs[0].body[0].weight.mul_(3)
    assert not torch.allclose(enc(lr)[:, 8:], before)  # scale 64 depends on scale 32's RCABs


def test_eq10_composition_drives_the_generator(G):
    """E_W+ rows for the current stage + E_W's repeated w = a valid w+ for the generator (Eq. (10))."""
    ew = EWEncoder(16, G.w_dim, G.num_ws, out_channels=16, **SMALL)
    ewp = EWPlusEncoder(16, G.w_dim, G.num_ws, [32, 64], out_channels=16, **SMALL)
    lr = torch.randn(2, 3, 16, 16, requires_grad=True)
    w = ew(lr)
    partial = ewp.forward_scales(lr, 32)  # stage r_i = 32
    ws = compose_wplus(partial, w, G.num_ws)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    assert torch.equal(ws[:, :8], partial) and torch.equal(ws[:, 8:], w[:, None].expand(-1, G.num_ws - 8, -1))
    img = G.synthesis(ws, noise="const").image
    assert img.shape == (2, 3, 64, 64)
    img.mean().backward()
    assert all(p.grad is not None for p in ewp.branches["32"].parameters())
    assert all(p.grad is None for p in ewp.branches["64"].parameters())  # not used at this stage
    assert compose_wplus(ewp(lr), w, G.num_ws).shape == (2, G.num_ws, G.w_dim)


def test_init_from_ew_copies_head_and_tiles_codes():
    torch.manual_seed(0)
    ew = EWEncoder(16, 32, 10, out_channels=16, **SMALL)
    ewp = EWPlusEncoder(16, 32, 10, [32, 64], out_channels=16, **SMALL)
    ewp.init_from_ew(ew)
    lr = torch.randn(2, 3, 16, 16)
    assert torch.equal(ewp.head(lr), ew.head(lr))
    codes = ewp(lr)
    # every row of a branch starts as the same code (E_W's last conv tiled over the rows)
    assert torch.allclose(codes[:, :8], codes[:, :1].expand(-1, 8, -1), atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        ewp.init_from_ew(EWEncoder(8, 32, 10, out_channels=16, **SMALL))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr_size=12, w_dim=32, num_ws=10), "lr_size must be one of"),
        (dict(lr_size=64, w_dim=32, num_ws=10), "lr_size must be one of"),
        (dict(lr_size=16, w_dim=0, num_ws=10), "w_dim"),
        (dict(lr_size=16, w_dim=32, num_ws=10, channels=8, reduction=16), "channels // reduction"),
        (dict(lr_size=16, w_dim=32, num_ws=10, num_groups=0), "num_groups"),
    ],
)
def test_ew_value_errors(kwargs, match):
    kwargs = {"channels": 8, "reduction": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        EWEncoder(**kwargs)


@pytest.mark.parametrize(
    "scales,num_ws,match",
    [
        ([], 10, "at least one"),
        ([64, 32], 10, "strictly increasing"),
        ([32, 48], 10, "power of two"),
        ([32, 128], 10, "num_ws=10"),
    ],
)
def test_scale_value_errors(scales, num_ws, match):
    with pytest.raises(ValueError, match=match):
        scale_rows(scales, num_ws)
    with pytest.raises(ValueError, match=match):
        EWPlusEncoder(16, 32, num_ws, scales, out_channels=16, **SMALL)


def test_runtime_shape_errors():
    ew = EWEncoder(16, 32, 10, out_channels=16, **SMALL)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        ew(torch.randn(1, 3, 8, 8))
    ewp = EWPlusEncoder(16, 32, 10, [32, 64], out_channels=16, **SMALL)
    with pytest.raises(ValueError, match="upto must be one of"):
        ewp.forward_scales(torch.randn(1, 3, 16, 16), 128)
    with pytest.raises(ValueError, match="more than num_ws"):
        compose_wplus(torch.zeros(1, 11, 32), torch.zeros(1, 32), 10)
