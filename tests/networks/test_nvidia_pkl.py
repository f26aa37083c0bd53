"""NVIDIA StyleGAN2-ADA ``.pkl`` files read without running their code (issue 17, item 5).

The pickles are built here, the way ``torch_utils.persistence`` writes them (class source + class
name + init kwargs + module state), from random weights in NVIDIA's naming, under stand-in
``torch_utils`` / ``dnnlib`` modules that exist only while pickling. The reference outputs come
from a restatement of stylegan2-ada-pytorch's forward pass written here (``training/networks.py``:
``modulated_conv2d`` with fused grouped convolution, ``SynthesisLayer``, ``ToRGBLayer``,
``SynthesisBlock`` (skip), ``MappingNetwork``, ``DiscriminatorBlock`` (resnet),
``DiscriminatorEpilogue``; ``conv2d_resample``'s generic path and ``_upfirdn2d_ref``), not from
our networks. Every file also carries code that would run under a plain ``pickle.load``; the
tests assert it never does.
"""

from __future__ import annotations

import math
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lit_propulse.cli import main
from lit_propulse.core.errors import CheckpointError
from lit_propulse.networks.checkpoints import load_discriminator, load_generator
from lit_propulse.networks.gds import load_gds
from lit_propulse.networks.nvidia_pkl import PersistentRecord, Placeholder, read_nvidia_pkl, restricted_load
from lit_propulse.networks.stylegan2 import Discriminator, Generator

SIZE, W_DIM, N_MLP, LR_MUL = 32, 16, 2, 0.01
G_CH = {4: 16, 8: 16, 16: 8, 32: 8}
D_CH = {32: 8, 16: 8, 8: 16, 4: 16}
FILTER = [1, 3, 3, 1]


# ----------------------------------------------------------------------------------------------
# Writing pickles the way torch_utils.persistence does, under stand-in modules.


class Payload:
    """Code that a plain ``pickle.load`` runs: ``exec`` writing a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class Node:
    """A ``torch_utils.persistence`` network as NVIDIA pickles it: ``__reduce__`` returns
    ``(_reconstruct_persistent_obj, (meta,))`` with the module source, the class name and the
    module's ``__dict__`` (parameters, buffers, submodules, init args, attributes)."""

    module_src = "raise SystemExit('module source must never run')\n"

    def __init__(
        self, class_name: str, kwargs: dict | None = None, params: dict | None = None, buffers: dict | None = None, children: dict | None = None, **attrs
    ) -> None:
        self.class_name, self.kwargs = class_name, kwargs or {}
        self.params, self.buffers, self.children, self.attrs = params or {}, buffers or {}, children or {}, attrs

    def __reduce__(self):
        state = {
            "training": False,
            "_parameters": OrderedDict((k, None if v is None else torch.nn.Parameter(v.float(), requires_grad=False)) for k, v in self.params.items()),
            "_buffers": OrderedDict((k, v.float()) for k, v in self.buffers.items()),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_modules": OrderedDict(self.children),
            "_init_args": (),
            "_init_kwargs": self.kwargs,
            **self.attrs,
        }
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


@pytest.fixture()
def nvlabs_modules(monkeypatch):
    """Stand-in ``torch_utils.persistence`` and ``dnnlib.util`` modules, present only while a test
    writes its pickles (so that pickle can name their globals); removed before anything is read."""
    installed = {}

    def install() -> type:
        tu, pers = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
        dn, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")

        def _reconstruct_persistent_obj(meta):  # NVIDIA's would exec meta["module_src"]
            raise AssertionError("never called")

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
        tu.persistence = pers
        EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
        util.EasyDict = EasyDict
        dn.util = util
        for name, mod in (("torch_utils", tu), ("torch_utils.persistence", pers), ("dnnlib", dn), ("dnnlib.util", util)):
            monkeypatch.setitem(sys.modules, name, mod)
            installed[name] = mod
        return EasyDict

    def remove() -> None:
        for name in installed:
            monkeypatch.delitem(sys.modules, name, raising=False)

    install.remove = remove
    return install


def setup_filter(f=FILTER) -> torch.Tensor:
    """``upfirdn2d.setup_filter`` for a 4-tap filter: the outer product, normalised."""
    f = torch.as_tensor(f, dtype=torch.float64)
    f = torch.outer(f, f)
    return f / f.sum()


def fc_node(in_f: int, out_f: int, g: torch.Generator, activation: str = "linear", lr: float = 1.0, bias_init: float = 0.0) -> tuple[Node, dict]:
    w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64) / lr
    b = bias_init + 0.2 * torch.randn(out_f, generator=g, dtype=torch.float64) / lr
    node = Node(
        "FullyConnectedLayer",
        dict(in_features=in_f, out_features=out_f, activation=activation, lr_multiplier=lr),
        params={"weight": w, "bias": b},
        activation=activation,
        weight_gain=np.float64(lr / math.sqrt(in_f)),
        bias_gain=lr,
    )
    return node, {"weight": w, "bias": b}


def with_prefix(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def build_generator(seed: int = 0, EasyDict=dict, architecture: str = "skip", c_dim: int = 0, conv_clamp=256) -> tuple[Node, dict]:
    """A StyleGAN2-ADA generator as NVIDIA pickles it, and its tensors by NVIDIA's names (float64)."""
    g = torch.Generator().manual_seed(seed)
    T: dict[str, torch.Tensor] = {}
    fcs = {}
    for i in range(N_MLP):
        node, t = fc_node(W_DIM, W_DIM, g, "lrelu", LR_MUL)
        fcs[f"fc{i}"] = node
        T.update(with_prefix(f"mapping.fc{i}.", t))
    T["mapping.w_avg"] = torch.randn(W_DIM, generator=g, dtype=torch.float64)
    mapping = Node(
        "MappingNetwork",
        dict(z_dim=W_DIM, c_dim=c_dim, w_dim=W_DIM, num_ws=2 * int(math.log2(SIZE)) - 2, num_layers=N_MLP, lr_multiplier=LR_MUL),
        buffers={"w_avg": T["mapping.w_avg"]},
        children=fcs,
        z_dim=W_DIM,
        c_dim=c_dim,
        w_dim=W_DIM,
        num_layers=N_MLP,
        w_avg_beta=0.995,
    )

    def syn_layer(prefix: str, cin: int, cout: int, res: int, up: int) -> Node:
        aff, t = fc_node(W_DIM, cin, g, bias_init=1.0)
        T.update(with_prefix(prefix + "affine.", t))
        p = {
            "weight": torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64),
            "noise_strength": 0.3 * torch.randn((), generator=g, dtype=torch.float64),
            "bias": 0.2 * torch.randn(cout, generator=g, dtype=torch.float64),
        }
        b = {"resample_filter": setup_filter(), "noise_const": torch.randn(res, res, generator=g, dtype=torch.float64)}
        T.update(with_prefix(prefix, {**p, **b}))
        return Node(
            "SynthesisLayer",
            dict(in_channels=cin, out_channels=cout, w_dim=W_DIM, resolution=res, up=up, conv_clamp=conv_clamp),
            params=p,
            buffers=b,
            children={"affine": aff},
            resolution=res,
            up=up,
            use_noise=True,
            activation="lrelu",
            conv_clamp=conv_clamp,
            padding=1,
            act_gain=math.sqrt(2),
        )

    def torgb(prefix: str, cin: int) -> Node:
        aff, t = fc_node(W_DIM, cin, g, bias_init=1.0)
        T.update(with_prefix(prefix + "affine.", t))
        p = {"weight": torch.randn(3, cin, 1, 1, generator=g, dtype=torch.float64), "bias": 0.2 * torch.randn(3, generator=g, dtype=torch.float64)}
        T.update(with_prefix(prefix, p))
        return Node(
            "ToRGBLayer",
            dict(in_channels=cin, out_channels=3, w_dim=W_DIM, conv_clamp=conv_clamp),
            params=p,
            children={"affine": aff},
            conv_clamp=conv_clamp,
            weight_gain=np.float64(1 / math.sqrt(cin)),
        )

    blocks = {}
    for k in range(2, int(math.log2(SIZE)) + 1):
        res = 2**k
        pre = f"synthesis.b{res}."
        cin, cout = (0 if res == 4 else G_CH[res // 2]), G_CH[res]
        children, params = {}, {}
        if res == 4:
            params["const"] = torch.randn(cout, 4, 4, generator=g, dtype=torch.float64)
            T[pre + "const"] = params["const"]
        else:
            children["conv0"] = syn_layer(pre + "conv0.", cin, cout, res, 2)
        children["conv1"] = syn_layer(pre + "conv1.", cout, cout, res, 1)
        children["torgb"] = torgb(pre + "torgb.", cout)
        if architecture == "resnet" and res > 4:
            children["skip"] = Node("Conv2dLayer", params={"weight": torch.randn(cout, cin, 1, 1, generator=g, dtype=torch.float64)}, activation="linear", up=2)
        T[pre + "resample_filter"] = setup_filter()
        blocks[f"b{res}"] = Node(
            "SynthesisBlock",
            dict(in_channels=cin, out_channels=cout, w_dim=W_DIM, resolution=res, img_channels=3, is_last=res == SIZE, architecture=architecture),
            params=params,
            buffers={"resample_filter": T[pre + "resample_filter"]},
            children=children,
            in_channels=cin,
            resolution=res,
            img_channels=3,
            is_last=res == SIZE,
            architecture=architecture,
            use_fp16=res >= 16,
            num_conv=1 if res == 4 else 2,
            num_torgb=1,
        )
    synthesis = Node(
        "SynthesisNetwork",
        dict(
            w_dim=W_DIM, img_resolution=SIZE, img_channels=3, channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=conv_clamp, architecture=architecture
        ),
        children=blocks,
        w_dim=W_DIM,
        img_resolution=SIZE,
        img_channels=3,
        num_ws=2 * int(math.log2(SIZE)) - 2,
    )
    G = Node(
        "Generator",
        dict(
            z_dim=W_DIM,
            c_dim=c_dim,
            w_dim=W_DIM,
            img_resolution=SIZE,
            img_channels=3,
            mapping_kwargs=EasyDict(num_layers=N_MLP, lr_multiplier=LR_MUL),
            synthesis_kwargs=EasyDict(channel_base=256, channel_max=16, num_fp16_res=2, conv_clamp=conv_clamp, architecture=architecture),
        ),
        children={"synthesis": synthesis, "mapping": mapping},
        z_dim=W_DIM,
        c_dim=c_dim,
        w_dim=W_DIM,
        img_resolution=SIZE,
        img_channels=3,
    )
    return G, {k: v.float().double() for k, v in T.items()}  # the values the file holds (float32)


def build_discriminator(seed: int = 1, architecture: str = "resnet", group: int = 4) -> tuple[Node, dict]:
    """A StyleGAN2-ADA residual discriminator as NVIDIA pickles it, and its tensors by NVIDIA's names."""
    g = torch.Generator().manual_seed(seed)
    T: dict[str, torch.Tensor] = {}

    def conv(prefix: str, cin: int, cout: int, k: int, activation: str, down: int = 1, bias: bool = True) -> Node:
        p = {"weight": torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64)}
        if bias:
            p["bias"] = 0.2 * torch.randn(cout, generator=g, dtype=torch.float64)
        b = {"resample_filter": setup_filter()}
        T.update(with_prefix(prefix, {**p, **b}))
        return Node(
            "Conv2dLayer",
            dict(in_channels=cin, out_channels=cout, kernel_size=k, bias=bias, activation=activation, down=down),
            params={**p, **({} if bias else {"bias": None})},
            buffers=b,
            activation=activation,
            up=1,
            down=down,
            conv_clamp=256,
            padding=k // 2,
            weight_gain=np.float64(1 / math.sqrt(cin * k * k)),
            act_gain=math.sqrt(2) if activation == "lrelu" else 1.0,
        )

    blocks = {}
    for k in range(int(math.log2(SIZE)), 2, -1):
        res = 2**k
        pre = f"b{res}."
        tmp, out = D_CH[res], D_CH[res // 2]
        children = {}
        if res == SIZE:
            children["fromrgb"] = conv(pre + "fromrgb.", 3, tmp, 1, "lrelu")
        children["conv0"] = conv(pre + "conv0.", tmp, tmp, 3, "lrelu")
        children["conv1"] = conv(pre + "conv1.", tmp, out, 3, "lrelu", down=2)
        if architecture == "resnet":
            children["skip"] = conv(pre + "skip.", tmp, out, 1, "linear", down=2, bias=False)
        blocks[f"b{res}"] = Node(
            "DiscriminatorBlock",
            dict(in_channels=0 if res == SIZE else tmp, tmp_channels=tmp, out_channels=out, resolution=res, img_channels=3, architecture=architecture),
            buffers={"resample_filter": setup_filter()},
            children=children,
            in_channels=0 if res == SIZE else tmp,
            resolution=res,
            img_channels=3,
            architecture=architecture,
            use_fp16=False,
        )
    c4 = D_CH[4]
    fc, t = fc_node(c4 * 16, c4, g, "lrelu")
    T.update(with_prefix("b4.fc.", t))
    last, t = fc_node(c4, 1, g)
    T.update(with_prefix("b4.out.", t))
    mbstd = Node("MinibatchStdLayer", dict(group_size=group, num_channels=1), group_size=group, num_channels=1)
    epi = Node(
        "DiscriminatorEpilogue",
        dict(in_channels=c4, cmap_dim=0, resolution=4, img_channels=3, architecture=architecture),
        children={"mbstd": mbstd, "conv": conv("b4.conv.", c4 + 1, c4, 3, "lrelu"), "fc": fc, "out": last},
        in_channels=c4,
        cmap_dim=0,
        resolution=4,
        img_channels=3,
        architecture=architecture,
    )
    D = Node(
        "Discriminator",
        dict(c_dim=0, img_resolution=SIZE, img_channels=3, architecture=architecture),
        children={**blocks, "b4": epi},
        c_dim=0,
        img_resolution=SIZE,
        img_channels=3,
    )
    return D, {k: v.float().double() for k, v in T.items()}  # the values the file holds (float32)


def write_pkl(path: Path, data, nvlabs_modules) -> Path:
    """Pickle ``data`` (protocol 4, as NVIDIA's ``pickle.dump``) under the stand-in modules, then remove them."""
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    nvlabs_modules.remove()
    return path


# ----------------------------------------------------------------------------------------------
# An independent restatement of StyleGAN2-ADA's forward pass (training/networks.py), float64.


def upfirdn2d_ref(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """``_upfirdn2d_ref``: zero insertion, pad/crop, true convolution with f * gain, decimation."""
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype)
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


def conv2d_resample_ref(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True):
    """``conv2d_resample``'s generic path: pad (and upsample) once, convolve, filter and decimate."""
    fw = 1 if f is None else f.shape[-1]
    px0 = px1 = padding
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
    x = upfirdn2d_ref(x, f if up > 1 else None, up=up, pad=(px0, px1, px0, px1), gain=up**2)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    return upfirdn2d_ref(x, f, down=down) if down > 1 else x


def modulated_conv2d_ref(x, weight, styles, noise=None, up=1, padding=0, f=None, demodulate=True, flip_weight=True):
    """``modulated_conv2d`` with ``fused_modconv=True``: per-sample weights, one grouped convolution."""
    b = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    w = weight[None] * styles.reshape(b, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(b, -1, 1, 1, 1)
    x = conv2d_resample_ref(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, in_c, kh, kw), f, up=up, padding=padding, groups=b, flip_weight=flip_weight)
    x = x.reshape(b, -1, *x.shape[2:])
    return x + noise if noise is not None else x


def fc_ref(T, p, x, lr=1.0, activation="linear"):
    """``FullyConnectedLayer``: weight * lr / sqrt(in), bias * lr, then ``bias_act``."""
    w, b = T[p + "weight"], T[p + "bias"]
    x = x @ (w * (lr / math.sqrt(w.shape[1]))).t() + b * lr
    return F.leaky_relu(x, 0.2) * math.sqrt(2) if activation == "lrelu" else x


def mapping_ref(T, z):
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for i in range(N_MLP):
        x = fc_ref(T, f"mapping.fc{i}.", x, LR_MUL, "lrelu")
    return x


def synthesis_ref(T, ws, clamp=256.0):
    """``SynthesisNetwork`` (skip blocks) with ``noise_mode="const"``."""
    f = T["synthesis.b4.resample_filter"]
    x = img = None
    w_idx = 0

    def layer(p, x, w, up):
        styles = fc_ref(T, p + "affine.", w)
        noise = T[p + "noise_const"] * T[p + "noise_strength"]
        x = modulated_conv2d_ref(x, T[p + "weight"], styles, noise=noise, up=up, padding=1, f=f, flip_weight=(up == 1))
        x = F.leaky_relu(x + T[p + "bias"].reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
        return x.clamp(-clamp * math.sqrt(2), clamp * math.sqrt(2))

    for k in range(2, int(math.log2(SIZE)) + 1):
        res, p = 2**k, f"synthesis.b{2**k}."
        n_conv = 1 if res == 4 else 2
        it = iter(ws.narrow(1, w_idx, n_conv + 1).unbind(1))
        w_idx += n_conv
        if res == 4:
            x = layer(p + "conv1.", T[p + "const"][None].repeat(ws.shape[0], 1, 1, 1), next(it), 1)
        else:
            x = layer(p + "conv0.", x, next(it), 2)
            x = layer(p + "conv1.", x, next(it), 1)
        if img is not None:
            img = upfirdn2d_ref(img, f, up=2, pad=(2, 1, 2, 1), gain=4)  # upfirdn2d.upsample2d
        styles = fc_ref(T, p + "torgb.affine.", next(it)) / math.sqrt(T[p + "torgb.weight"].shape[1])
        y = modulated_conv2d_ref(x, T[p + "torgb.weight"], styles, demodulate=False)
        y = (y + T[p + "torgb.bias"].reshape(1, -1, 1, 1)).clamp(-clamp, clamp)
        img = y if img is None else img + y
    return img


def discriminator_ref(T, img, group=4):
    """``Discriminator`` (resnet blocks, epilogue with minibatch stddev), unconditional."""
    f = T[f"b{SIZE}.conv1.resample_filter"]

    def conv(p, x, activation, down=1, gain=1.0):
        w = T[p + "weight"]
        x = conv2d_resample_ref(x, w / math.sqrt(w[0].numel()), f, down=down, padding=w.shape[-1] // 2)
        if p + "bias" in T:
            x = x + T[p + "bias"].reshape(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) * gain if activation == "lrelu" else x * gain

    x = None
    for k in range(int(math.log2(SIZE)), 2, -1):
        p = f"b{2**k}."
        if x is None:
            x = conv(p + "fromrgb.", img, "lrelu")
        y = conv(p + "skip.", x, "linear", down=2, gain=math.sqrt(0.5))
        x = conv(p + "conv0.", x, "lrelu")
        x = y + conv(p + "conv1.", x, "lrelu", down=2, gain=math.sqrt(0.5))
    n, c, h, w = x.shape
    gs = min(group, n)
    y = x.reshape(gs, -1, 1, c, h, w)
    y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, 1, 1, 1).repeat(gs, 1, h, w)
    x = conv("b4.conv.", torch.cat([x, y], dim=1), "lrelu")
    x = fc_ref(T, "b4.fc.", x.flatten(1), activation="lrelu")
    return fc_ref(T, "b4.out.", x)


# ----------------------------------------------------------------------------------------------
# Tests.


@pytest.fixture()
def ada_pkl(tmp_path, nvlabs_modules):
    """A StyleGAN2-ADA-style pickle with G, G_ema, D, training_set_kwargs, augment_pipe, and code
    that a plain unpickler would run (in G's init kwargs, at the top level, in the module source)."""
    EasyDict = nvlabs_modules()
    G, TG = build_generator(0, EasyDict)
    G_ema, TE = build_generator(2, EasyDict)
    D, TD = build_discriminator(1)
    marker = tmp_path / "pwned"
    G_ema.kwargs["synthesis_kwargs"]["evil"] = Payload(marker)
    G_ema.module_src = f"open({str(marker)!r}, 'w').write('ran')\n"  # NVIDIA's loader would exec this
    data = {
        "G": G,
        "D": D,
        "G_ema": G_ema,
        "training_set_kwargs": EasyDict(path="ffhq.zip", resolution=SIZE),
        "augment_pipe": Node("AugmentPipe", dict(xflip=1), buffers={"p": torch.zeros([])}),
        "payload": Payload(marker),
    }
    path = write_pkl(tmp_path / "network-snapshot.pkl", data, nvlabs_modules)
    return path, marker, TE, TD, TG


def test_payloads_are_live_under_plain_pickle(tmp_path):
    """The payload the files carry does run under a plain unpickler (so the next tests mean something)."""
    marker = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "ran"


def test_nothing_in_the_file_runs(ada_pkl):
    path, marker, *_ = ada_pkl
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    data, placeholders = restricted_load(path)
    assert not marker.exists()
    assert "builtins.exec" in placeholders  # the payload became an inert placeholder
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules  # nothing was imported
    G = data["G_ema"]
    assert isinstance(G, PersistentRecord) and G.class_name == "Generator"
    assert isinstance(G.init_kwargs["synthesis_kwargs"]["evil"], Placeholder)
    assert G.init_kwargs["mapping_kwargs"] == {"num_layers": N_MLP, "lr_multiplier": LR_MUL}
    assert isinstance(data["payload"], Placeholder)
    assert G.module_src.startswith("open(")  # kept as text, never run
    Generator.from_checkpoint(path)
    Discriminator.from_checkpoint(path)
    assert not marker.exists()


def test_generator_matches_stylegan2_ada_forward(ada_pkl):
    path, _, TE, _, TG = ada_pkl
    G = Generator.from_checkpoint(path).double().eval()  # G_ema
    assert G.size == SIZE and G.w_dim == W_DIM and G.synthesis.channels == G_CH and G.arch["lr_mlp"] == LR_MUL
    torch.testing.assert_close(G.latent_avg, TE["mapping.w_avg"])
    z = torch.randn(3, W_DIM, dtype=torch.float64)
    torch.testing.assert_close(G.mapping(z), mapping_ref(TE, z), rtol=0, atol=1e-9)
    ws = torch.randn(3, G.num_ws, W_DIM, dtype=torch.float64)
    ours, ref = G.synthesis(ws, noise="const").image, synthesis_ref(TE, ws)
    assert ref.abs().max() > 0.5  # not a degenerate comparison
    # only the demodulation's 1e-8 sits at a different scale (NVIDIA demodulates the unscaled weight)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    # "G" is the other (non-EMA) generator of the file
    G_raw = Generator.from_checkpoint(path, key="g").double()
    torch.testing.assert_close(G_raw.synthesis(ws, noise="const").image, synthesis_ref(TG, ws), rtol=0, atol=1e-6)


def test_discriminator_matches_stylegan2_ada_forward(ada_pkl):
    path, _, _, TD, _ = ada_pkl
    D = load_discriminator(str(path)).double()
    img = torch.randn(4, 3, SIZE, SIZE, dtype=torch.float64)
    ours, ref = D(img), discriminator_ref(TD, img)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-8)
    assert read_nvidia_pkl(path)["d_arch"] == {"stddev_group": 4, "stddev_feat": 1}


def test_pkl_through_the_loaders(ada_pkl):
    """The YAML loaders and G_ds take .pkl paths (a G_ds stage can start from an NVIDIA network)."""
    path, *_ = ada_pkl
    G = load_generator(str(path))
    assert isinstance(G, Generator) and G.size == SIZE
    gds = load_gds(str(path), lr_size=8, require_heads=False)
    assert gds.resolutions == [16]
    assert gds(G.to_ws(G.latent_avg[None])).image.shape == (1, 3, SIZE, SIZE)


def refusal(tmp_path, nvlabs_modules, **changes) -> str:
    EasyDict = nvlabs_modules()
    g_kwargs = {k: v for k, v in changes.items() if k in ("architecture", "c_dim")}
    G, _ = build_generator(0, EasyDict, **g_kwargs)
    D, _ = build_discriminator(1, architecture=changes.get("d_architecture", "resnet"))
    if changes.get("stylegan3"):
        syn = G.children["synthesis"]
        syn.children = {"input": Node("SynthesisInput", dict(w_dim=W_DIM, channels=16, size=36)), "L0_36_512": Node("SynthesisLayer")}
    path = write_pkl(tmp_path / "net.pkl", {"G": G, "D": D, "G_ema": G}, nvlabs_modules)
    with pytest.raises(CheckpointError) as e:
        Generator.from_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


@pytest.mark.parametrize(
    "changes, expected",
    [
        (dict(stylegan3=True), "StyleGAN3 (alias-free) generator"),
        (dict(architecture="orig"), "'orig' generator architecture"),
        (dict(architecture="resnet"), "'resnet' generator architecture"),
        (dict(c_dim=10), "conditional generator (c_dim=10)"),
        (dict(d_architecture="orig"), "'orig' discriminator architecture"),
    ],
)
def test_other_architectures_are_refused(tmp_path, nvlabs_modules, changes, expected):
    assert expected in refusal(tmp_path, nvlabs_modules, **changes)


def test_other_files_are_refused(tmp_path, nvlabs_modules, capsys):
    marker = tmp_path / "pwned"
    # any other pickle, carrying a payload
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"model": Payload(marker), "weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="holds no StyleGAN2-ADA networks.*builtins.exec"):
        Generator.from_checkpoint(other)
    # a TensorFlow StyleGAN2 pickle: (G, D, Gs) as dnnlib.tflib.network.Network objects
    nvlabs_modules()
    tflib = types.ModuleType("dnnlib.tflib.network")
    Network = type("Network", (), {"__module__": "dnnlib.tflib.network", "__reduce__": lambda self: (Network, ())})
    tflib.Network = Network
    sys.modules["dnnlib.tflib.network"] = tflib
    try:
        tf = write_pkl(tmp_path / "stylegan2-ffhq-config-f.pkl", (Network(), Network(), Network()), nvlabs_modules)
    finally:
        del sys.modules["dnnlib.tflib.network"]
    with pytest.raises(CheckpointError, match="TensorFlow StyleGAN2 pickle"):
        Generator.from_checkpoint(tf)
    # a torch.save file named .pkl, a truncated pickle, an empty file
    zipped = tmp_path / "saved.pkl"
    torch.save({"g_ema": {}}, zipped)
    with pytest.raises(CheckpointError, match="is a torch.save file"):
        Generator.from_checkpoint(zipped)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps({"G": list(range(1000))})[:50])
    with pytest.raises(CheckpointError, match="not a readable NVIDIA pickle"):
        Generator.from_checkpoint(cut)
    assert not marker.exists()
    # the CLI prints the refusal as one line
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "lr.png")
    assert main(["pulse", "--generator", str(other), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "holds no StyleGAN2-ADA networks" in err[-1]
    assert not marker.exists()
