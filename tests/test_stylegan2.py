"""StyleGAN2 interop and behaviour: the shared port fixture, a second architecture against an
independent naive re-statement of the port, checkpoint layouts, safe loading and errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

import lit_propulse
from lit_propulse.core.errors import CheckpointError
from lit_propulse.networks.stylegan2 import Discriminator, Generator, num_ws_up_to, synthesis_layout
from lit_propulse.networks.upfirdn2d import upfirdn2d
from tests.port_reference import port_generator_forward, port_mapping, upfirdn2d_naive

FIX = Path(__file__).parent / "fixtures" / "stylegan2_port_g64"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return torch.load(FIX / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def G():
    return Generator.from_checkpoint(FIX / "checkpoint.pt").eval()


@pytest.fixture(scope="module")
def D():
    return Discriminator.from_checkpoint(FIX / "checkpoint.pt").eval()


def maxabs(a, b):
    return (a - b).abs().max().item()


# -- the shared fixture: every tensor ------------------------------------------------------------


def test_arch_inferred_from_shapes(G, D, ref):
    arch = ref["arch"]
    assert G.size == arch["size"] and G.w_dim == arch["style_dim"] and G.num_ws == arch["n_latent"]
    assert G.arch["n_mlp"] == arch["n_mlp"] and G.arch["channels"] == arch["channels"]
    assert G.num_noise == arch["num_noise"] and G.arch["blur_kernel"] == pytest.approx([0.125, 0.375, 0.375, 0.125])
    assert D.arch["channels"] == arch["channels"]


@torch.no_grad()
def test_mapping(G, ref):
    assert maxabs(G.mapping(ref["z"]), ref["w"]) <= TOL


@torch.no_grad()
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("img_z", dict(latent="z")),
        ("img_w", dict(latent="w", input_space="w")),
        ("img_wplus", dict(latent="wplus", input_space="w")),
        ("img_trunc", dict(latent="z", truncation=0.7)),
        ("img_mix", dict(latent="z", latent2="z2", inject_index=3)),
    ],
)
def test_images(G, ref, name, kwargs):
    kwargs = dict(kwargs)
    kwargs["latent"] = ref[kwargs["latent"]]
    if "latent2" in kwargs:
        kwargs["latent2"] = ref[kwargs["latent2"]]
    out = G(noise=ref["noise"], **kwargs)
    assert out.image.shape == ref[name].shape
    assert maxabs(out.image, ref[name]) <= TOL


@torch.no_grad()
def test_stored_noise_and_synthesis_api(G, ref):
    assert maxabs(G(ref["z"], noise="const").image, ref["img_stored_noise"]) <= TOL
    ws = G.mapping(ref["z"]).unsqueeze(1).repeat(1, G.num_ws, 1)  # [B, num_ws, w_dim]
    out = G.synthesis(ws, noise=ref["noise"])
    assert maxabs(out.image, ref["img_z"]) <= TOL
    assert sorted(out.features) == [4, 8, 16, 32, 64] == sorted(out.skips)
    assert out.skips[64] is out.image
    assert out.features[16].shape == (4, 48, 16, 16) and out.skips[8].shape == (4, 3, 8, 8)


@torch.no_grad()
def test_discriminator(D, ref):
    assert maxabs(D(ref["img_wplus"]), ref["d_real"]) <= TOL


@torch.no_grad()
def test_latent_avg_kept(G):
    stored = torch.load(FIX / "checkpoint.pt", weights_only=True)["latent_avg"]
    assert torch.equal(G.latent_avg, stored) and bool(G.has_latent_avg)


# -- a second, differently shaped architecture ---------------------------------------------------


def _random_port_generator(seed=1, **kw):
    torch.manual_seed(seed)
    G = Generator(**kw)
    with torch.no_grad():  # non-trivial noise strengths and biases
        for name, p in G.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith(".bias"):
                p.normal_(0, 0.3)
    return G


@torch.no_grad()
@pytest.mark.parametrize(
    "kw",
    [
        dict(size=32, style_dim=32, n_mlp=2, channels={4: 24, 8: 16, 16: 16, 32: 8}),
        dict(size=16, style_dim=24, n_mlp=1, channels={4: 8, 8: 8, 16: 4}, blur_kernel=(1, 2, 1)),
    ],
)
def test_second_architecture_matches_independent_reference(tmp_path, kw):
    G0 = _random_port_generator(**kw)
    path = tmp_path / "other.pt"
    torch.save({"g_ema": G0.port_state_dict(), "latent_avg": torch.randn(kw["style_dim"])}, path)
    G = Generator.from_checkpoint(path).eval()
    assert G.arch["channels"] == kw["channels"] and G.arch["n_mlp"] == kw["n_mlp"] and G.size == kw["size"]
    sd = torch.load(path, weights_only=True)["g_ema"]
    z = torch.randn(3, kw["style_dim"])
    ws = torch.randn(3, G.num_ws, kw["style_dim"])
    noise = G.synthesis.make_noise(3)
    assert maxabs(G.mapping(z), port_mapping(sd, z)) <= TOL
    blur = kw.get("blur_kernel", (1, 3, 3, 1))
    assert maxabs(G.synthesis(ws, noise=noise).image, port_generator_forward(sd, ws, noise, blur=blur)) <= TOL


@pytest.mark.parametrize(
    "up,down,pad,k",
    [
        (2, 1, (2, 1), (1, 3, 3, 1)),
        (1, 2, (1, 1), (1, 3, 3, 1)),
        (1, 1, (1, 1), (1, 3, 3, 1)),
        (2, 1, (1, 1), (1, 2, 4)),
        (1, 2, (2, 1), (1, 2, 4)),
        (1, 1, (-1, 2), (1, 3, 3, 1)),
    ],
)
def test_upfirdn2d_matches_naive(up, down, pad, k):
    kern = torch.as_tensor(k, dtype=torch.float32)
    kern = torch.outer(kern, kern) + torch.linspace(0, 0.1, kern.numel() ** 2).view(kern.numel(), -1)  # asymmetric
    x = torch.randn(2, 3, 9, 9)
    assert maxabs(upfirdn2d(x, kern, up=up, down=down, pad=pad), upfirdn2d_naive(x, kern, up=up, down=down, pad=pad)) <= 1e-5


def test_layout_is_one_table():
    layout = synthesis_layout(1024)
    assert max(s.w_index for s in layout) == 17 and sum(s.noise_index is not None for s in layout) == 17
    assert num_ws_up_to(32) == 8 and num_ws_up_to(1024) == 18 and num_ws_up_to(4) == 2
    assert Generator(32, 16, 1, channels={4: 4, 8: 4, 16: 4, 32: 4}).num_ws == 8
    # every w row below num_ws_up_to(r) styles some layer of resolution <= r
    for r in (4, 8, 64, 1024):
        assert {s.w_index for s in layout if s.resolution <= r} == set(range(num_ws_up_to(r)))


# -- checkpoints: layouts, round trip, latent_avg ------------------------------------------------


def test_trainer_layout_with_args_namespace(tmp_path, G, D):
    path = tmp_path / "trainer.pt"
    g = G.port_state_dict()
    torch.save(
        {"g": g, "d": D.state_dict(), "g_ema": g, "g_optim": {"state": {}, "param_groups": []}, "d_optim": {}, "args": argparse.Namespace(size=64, r1=10.0)},
        path,
    )
    G2 = Generator.from_checkpoint(path)
    assert bool(G2.has_latent_avg) and G2.latent_avg.abs().sum() > 0  # absent in the file: computed
    with torch.no_grad():
        z = torch.randn(2, G.z_dim)
        assert maxabs(G2(z, noise="const").image, G(z, noise="const").image) == 0
        expected = G2.mapping(torch.randn(10_000, G.z_dim, generator=torch.Generator().manual_seed(0))).mean(0)
    assert maxabs(G2.latent_avg, expected) < 1e-4
    img = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert maxabs(Discriminator.from_checkpoint(path)(img), D(img)) == 0


def test_shipped_toy_generator_loads_exactly():
    """The toy StyleGAN2 shipped in the package (a ``GeneratorSnapshot`` export in the port's layout)
    loads with every tensor, latent_avg and arch as stored."""
    path = Path(lit_propulse.__file__).parent / "data" / "toy_stylegan2_64.pt"
    raw = torch.load(path, weights_only=True)
    G2, D2 = Generator.from_checkpoint(path), Discriminator.from_checkpoint(path)

    def shapes(arch):  # the blur kernel is read back normalised; its buffers are compared below
        return {k: v for k, v in arch.items() if k != "blur_kernel"}

    assert shapes(G2.arch) == shapes(raw["arch"]) and shapes(D2.arch) == shapes(raw["d_arch"])
    assert torch.equal(G2.latent_avg, raw["latent_avg"])
    g_file, g_ours = raw["g_ema"], G2.port_state_dict()
    assert sorted(g_file) == sorted(g_ours) and all(torch.equal(g_file[k], g_ours[k]) for k in g_file)
    assert all(torch.equal(raw["d"][k], v) for k, v in D2.state_dict().items()) and len(raw["d"]) == len(D2.state_dict())
    G_train = Generator.from_checkpoint(path, key="g")  # the trainer's non-EMA weights
    assert all(torch.equal(raw["g"][k], v) for k, v in G_train.port_state_dict().items())


def test_own_format_round_trip(tmp_path, G, D):
    path = tmp_path / "ours.pt"
    G.save(path, discriminator=D)
    G2, D2 = Generator.from_checkpoint(path), Discriminator.from_checkpoint(path)
    assert G2.arch == G.arch and torch.equal(G2.latent_avg, G.latent_avg)
    for (k, a), (k2, b) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    for (k, a), (k2, b) in zip(D.state_dict().items(), D2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    raw = torch.load(path, weights_only=True)
    assert "style.1.weight" in raw["g_ema"] and "noises.noise_0" in raw["g_ema"]  # still the port's layout


# -- gradients and shapes ------------------------------------------------------------------------


def test_gradients_reach_wplus_and_noise(G):
    ws = torch.randn(2, G.num_ws, G.w_dim, requires_grad=True)
    noise = [n.clone().requires_grad_(True) for n in G.synthesis.make_noise(2)]
    G.synthesis(ws, noise=noise).image.square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise)
    assert all(ws.grad[:, i].abs().sum() > 0 for i in range(G.num_ws))


def test_noise_modes(G):
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        a, b = G(z, noise="random").image, G(z, noise="random").image
        c, d = G(z, noise="none").image, G(z, noise="none").image
    assert maxabs(a, b) > 0 and maxabs(c, d) == 0


def test_shape_errors(G, D):
    with pytest.raises(ValueError, match=r"\[B, 10, 64\]"):
        G.synthesis(torch.randn(2, 9, 64))
    with pytest.raises(ValueError, match=r"\[B, 64\]"):
        G.mapping(torch.randn(2, 63))
    with pytest.raises(ValueError, match="expected 9 noise maps"):
        G.synthesis(torch.randn(1, 10, 64), noise=[torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="noise map 1"):
        G.synthesis(torch.randn(1, 10, 64), noise=[torch.zeros(1, 1, 4, 4)] * 9)
    with pytest.raises(ValueError, match="noise must be"):
        G.synthesis(torch.randn(1, 10, 64), noise="stored")
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        D(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        D(torch.randn(6, 3, 64, 64))
    with pytest.raises(ValueError, match="power of two"):
        Generator(48, 16, 1)
    with pytest.raises(ValueError, match="lacks resolutions"):
        Generator(32, 16, 1, channels={4: 4, 8: 4})


# -- bad files: one clear error naming the file and what was expected ---------------------------


class _Foreign:
    pass


def _bad_files(tmp_path, G):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01not a checkpoint" * 50)
    good = (FIX / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "foreign.pt")
    sd = G.port_state_dict()
    sd["convs.3.conv.weight"] = torch.zeros(1, 48, 47, 3, 3)
    torch.save({"g_ema": sd}, tmp_path / "mismatch.pt")
    sd2 = G.port_state_dict()
    del sd2["to_rgbs.1.bias"]
    torch.save({"g_ema": sd2}, tmp_path / "missing_key.pt")
    with open(tmp_path / "unsafe.pt", "wb") as f:
        torch.save({"g_ema": G.port_state_dict(), "evil": _Foreign()}, f)
    torch.save([1, 2, 3], tmp_path / "list.pt")


@pytest.mark.parametrize(
    "name,pattern",
    [
        ("nope.pt", "file not found"),
        ("empty.pt", "empty"),
        ("garbage.pt", "not a readable torch (checkpoint|file)"),
        ("truncated.pt", "not a readable torch (checkpoint|file)"),
        ("foreign.pt", r"no generator state dict under key 'g_ema'; found keys \['model'\]"),
        ("mismatch.pt", r"convs.3.conv.weight: file \(1, 48, 47, 3, 3\) vs expected \(1, 48, 48, 3, 3\)"),
        ("missing_key.pt", r"missing keys \['to_rgbs.1.bias'\]"),
        ("unsafe.pt", "refused to load"),
        ("list.pt", "not a dict"),
    ],
)
def test_bad_checkpoint_errors(tmp_path, G, name, pattern):
    _bad_files(tmp_path, G)
    path = tmp_path / name
    with pytest.raises(CheckpointError, match=pattern) as info:
        Generator.from_checkpoint(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)  # no chained traceback


def test_unsafe_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    with open(tmp_path / "boom.pt", "wb") as f:
        torch.save({"g_ema": Boom()}, f, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        Generator.from_checkpoint(tmp_path / "boom.pt")


def test_discriminator_errors(tmp_path, G):
    torch.save({"g_ema": G.port_state_dict()}, tmp_path / "g_only.pt")
    with pytest.raises(CheckpointError, match="no discriminator state dict under key 'd'"):
        Discriminator.from_checkpoint(tmp_path / "g_only.pt")


# -- the formulations ModulatedConv2d chooses per call ----------------------------------------------

# name: (weight_path_min_elements, style_grad_path, generator frozen). With min_elements 0 every
# layer is "high resolution"; "trainable-G" (weights needing gradients) takes the activation path.
FORMULATIONS = {
    "modulated-activations": (2**62, True, True),
    "modulated-weights": (0, False, True),
    "style-grad": (0, True, True),
    "trainable-G": (0, True, False),
}


def _formulation(monkeypatch, G, name):
    """A copy of G set up for formulation ``name``; returns (G, calls) with calls[0] counting
    the uses of the hand-written backward path (_StyleGradConv)."""
    import copy

    from lit_propulse.networks import modulated_conv as sg

    min_elements, style_grad, frozen = FORMULATIONS[name]
    monkeypatch.setattr(sg.ModulatedConv2d, "weight_path_min_elements", min_elements)
    monkeypatch.setattr(sg.ModulatedConv2d, "style_grad_path", style_grad)
    calls = [0]
    apply = sg._StyleGradConv.apply

    def counted(*args):
        calls[0] += 1
        return apply(*args)

    monkeypatch.setattr(sg._StyleGradConv, "apply", counted)
    G = copy.deepcopy(G).requires_grad_(not frozen)
    return G, calls


@pytest.mark.parametrize("name", list(FORMULATIONS))
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad(in-place)", "grad"])
def test_every_formulation_matches_the_port(G, ref, monkeypatch, name, grad):
    """Each formulation (modulated activations / per-sample weights / the style-gradient path /
    a trainable generator) and the in-place inference epilogue reproduce the port's images."""
    G, calls = _formulation(monkeypatch, G, name)
    ws = ref["wplus"].clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        img = G.synthesis(ws, noise=ref["noise"]).image
        up = G(ref["z"], noise=ref["noise"]).image
    assert maxabs(img, ref["img_wplus"]) <= TOL and maxabs(up, ref["img_z"]) <= TOL
    assert (calls[0] > 0) == (grad and name == "style-grad")  # the path each case names was taken
    if grad:
        img.square().mean().backward()
        assert ws.grad.abs().sum() > 0


def _grads(G, ws, noise):
    ws = ws.clone().requires_grad_(True)
    noise = [n.clone().requires_grad_(True) for n in noise]
    out = G.synthesis(ws, noise=noise)
    (out.image.square().mean() + out.features[16].mean()).backward()  # a feature map is read too (G_ds)
    return ws.grad, [n.grad for n in noise]


def test_style_grad_gradients_match_autograd(G, monkeypatch):
    """The hand-written backward (no weight-gradient convolution) gives the gradients autograd
    gives through per-sample weights and through modulated activations: w.r.t. w+ and to
    trainable noise maps (PULSE), with a shared or a per-sample noise map."""
    gen = torch.Generator().manual_seed(3)
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=gen)
    noise = [torch.randn(2 if i % 2 else 1, 1, *n.shape[-2:], generator=gen) for i, n in enumerate(G.synthesis.stored_noise())]
    got = {}
    for name in ("style-grad", "modulated-weights", "modulated-activations"):
        Gf, calls = _formulation(monkeypatch, G, name)
        got[name] = _grads(Gf, ws, noise)
        assert (calls[0] > 0) == (name == "style-grad")
    ref_ws, ref_noise = got["modulated-weights"]
    for name in ("style-grad", "modulated-activations"):
        gw, gn = got[name]
        assert maxabs(gw, ref_ws) <= 1e-4 * ref_ws.abs().max().item(), name
        for a, b in zip(gn, ref_noise):
            assert a.shape == b.shape and maxabs(a, b) <= 1e-4 * b.abs().max().item() + 1e-9, name


@pytest.mark.parametrize("layer", ["conv", "upsample-conv", "torgb", "conv-1x1-demod"])
def test_style_grad_gradcheck(monkeypatch, layer):
    """Numerical gradients (float64) of the hand-written backward: w.r.t. the input, w and the noise."""
    from lit_propulse.networks.stylegan2 import ModulatedConv2d, StyledConv, ToRGB

    monkeypatch.setattr(ModulatedConv2d, "weight_path_min_elements", 0)
    torch.manual_seed(0)
    up = layer == "upsample-conv"
    if layer in ("conv", "upsample-conv"):
        m = StyledConv(3, 4, 3, 5, upsample=up).double().requires_grad_(False)
        with torch.no_grad():
            m.noise.weight.fill_(0.7)
            m.activate.bias.normal_()
        r = 6 if up else 4
        args = (
            torch.randn(2, 3, r // (2 if up else 1), r // (2 if up else 1), dtype=torch.double),
            torch.randn(2, 5, dtype=torch.double),
            torch.randn(1, 1, r, r, dtype=torch.double),
        )
        fn = m
    elif layer == "torgb":
        m = ToRGB(3, 5).double().requires_grad_(False)
        with torch.no_grad():
            m.bias.normal_()
        args = (torch.randn(2, 3, 4, 4, dtype=torch.double), torch.randn(2, 5, dtype=torch.double), torch.randn(2, 3, 2, 2, dtype=torch.double))
        fn = m
    else:
        m = ModulatedConv2d(3, 4, 1, 5).double().requires_grad_(False)
        args = (torch.randn(2, 3, 4, 4, dtype=torch.double), torch.randn(2, 5, dtype=torch.double))
        fn = lambda x, w: m(x, w, gain=1.3, bias=torch.linspace(-1, 1, 4, dtype=torch.double))  # noqa: E731
    args = tuple(a.requires_grad_(True) for a in args)
    y = fn(*args)
    assert "StyleGradConv" in type(y.grad_fn).__name__ or layer == "torgb"
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)


def test_style_grad_under_bf16_autocast(monkeypatch):
    """The style-gradient path under bf16 autocast: bf16 activations, gradients w.r.t. w+ close to float32's."""
    from lit_propulse.networks.stylegan2 import ModulatedConv2d

    monkeypatch.setattr(ModulatedConv2d, "weight_path_min_elements", 0)
    torch.manual_seed(0)
    G = Generator(32, 32, 1, channels={4: 16, 8: 16, 16: 16, 32: 8}).eval().requires_grad_(False)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    grads = {}
    for bf16 in (False, True):
        w = ws.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img = G.synthesis(w, noise="const").image
        assert img.dtype == (torch.bfloat16 if bf16 else torch.float32)
        img.float().square().mean().backward()
        grads[bf16] = w.grad
    cos = torch.nn.functional.cosine_similarity(grads[True].flatten(), grads[False].flatten(), dim=0)
    assert cos > 0.99 and maxabs(grads[True], grads[False]) <= 0.1 * grads[False].abs().max().item()


def test_double_backward_is_refused_by_the_style_grad_path(monkeypatch):
    from lit_propulse.networks.stylegan2 import ModulatedConv2d

    monkeypatch.setattr(ModulatedConv2d, "weight_path_min_elements", 0)
    G = Generator(16, 8, 1, channels={4: 4, 8: 4, 16: 4}).requires_grad_(False)
    ws = torch.randn(1, G.num_ws, 8, requires_grad=True)
    (g,) = torch.autograd.grad(G.synthesis(ws, noise="const").image.sum(), ws, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        g.sum().backward()


def test_flop_counter_works_under_no_grad(G):
    """torch.utils.flop_counter counts the synthesis under no_grad (the learned constant is handed
    out as a copy: a view of a parameter cannot be hooked by torch's module tracker there)."""
    from torch.utils.flop_counter import FlopCounterMode

    ws = torch.randn(2, G.num_ws, G.w_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        G.synthesis(ws, noise="const")
    assert counter.get_total_flops() > 0
    const = G.synthesis.input(2)
    assert const._base is None and const.shape == (2, *G.synthesis.input.input.shape[1:])


def test_widening_a_trained_checkpoint_keeps_every_image_and_logit(tmp_path):
    """widen_trainer_checkpoint: more channels at 16², 32² and 64² (StyleGAN2 Sec. 4.2's remedy), the same
    function: images (const noise, two truncations) and discriminator logits match the original; the new
    channels are really there; 4² and shrinking are refused."""
    from lit_propulse.networks.checkpoints import load_checkpoint_file, widen_trainer_checkpoint

    ckpt = load_checkpoint_file(FIX / "checkpoint.pt")
    wide = widen_trainer_checkpoint(ckpt, {16: 64, 32: 48, 64: 32}, seed=3)
    torch.save(wide, tmp_path / "wide.pt")
    G0, G1 = Generator.from_checkpoint(FIX / "checkpoint.pt").eval(), Generator.from_checkpoint(tmp_path / "wide.pt").eval()
    D0, D1 = Discriminator.from_checkpoint(FIX / "checkpoint.pt").eval(), Discriminator.from_checkpoint(tmp_path / "wide.pt").eval()
    assert G1.arch["channels"] == {4: 64, 8: 64, 16: 64, 32: 48, 64: 32} == D1.arch["channels"]
    assert sum(p.numel() for p in G1.parameters()) > 1.3 * sum(p.numel() for p in G0.parameters())
    z = torch.randn(4, G0.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for trunc in (1.0, 0.7):
            a, b = G0(z, truncation=trunc, noise="const").image, G1(z, truncation=trunc, noise="const").image
            assert a.abs().mean() > 0.05 and (a - b).abs().max() < 1e-4
        x = torch.cat([a, torch.rand(4, 3, 64, 64) * 2 - 1])
        assert (D0(x) - D1(x)).abs().max() < 1e-4
    # the new output channels have fresh weights (not zeros), ready to be trained
    new_rows = wide["g_ema"]["convs.6.conv.weight"][:, 16:]  # 64²'s first conv: 16 -> 32 output channels
    assert new_rows.abs().mean() > 0.1
    with pytest.raises(ValueError, match="4x4"):
        widen_trainer_checkpoint(ckpt, {4: 128})
    with pytest.raises(ValueError, match="only grow"):
        widen_trainer_checkpoint(ckpt, {64: 8})
