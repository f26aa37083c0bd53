"""Reading and writing StyleGAN2 checkpoint files (the role of NVlabs stylegan3's ``legacy.py``).

The networks are :mod:`lit_propulse.networks.stylegan2`; this module knows the files. Layouts read,
all in the standard PyTorch port's naming (rosinality/stylegan2-pytorch):

* the converter's ``{"g_ema", "latent_avg"}`` (``stylegan2-ffhq-config-f.pt``, as pSp/e4e use it;
  the StyleGAN2 that Pro-PULSE revises, Sec. III-F);
* the trainer's ``{"g", "d", "g_ema", "g_optim", "d_optim", "args"}`` (``args`` an
  ``argparse.Namespace``, the one Python object allowed);
* a bare generator or discriminator state dict;
* our own saves (:func:`write_generator`): the port's layout plus ``arch`` / ``d_arch`` dicts and a
  ``format`` tag, and, for G_ds exports, ``side_heads`` / ``side_arch``
  (:mod:`lit_propulse.networks.gds`). No file stores a class or module name, so moving code never
  breaks a saved file.

Files are read with :func:`lit_propulse.core.weights.safe_load` (``weights_only``: no file runs
code); the architecture is inferred from the tensors' shapes; anything wrong is one
:class:`~lit_propulse.core.errors.CheckpointError` naming the file and what was expected. The
YAML loaders (:func:`load_generator`, :func:`load_discriminator`) are what experiment configs name
by ``class_path``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from torch import Tensor, nn

from lit_propulse.core.errors import CheckpointError
from lit_propulse.core.files import needs_file
from lit_propulse.core.weights import safe_load, state_dict_mismatch
from lit_propulse.networks.stylegan2 import Discriminator, Generator

__all__ = [
    "D_SOURCE",
    "PORT_HINT",
    "SG2_SOURCE",
    "discriminator_file_problem",
    "infer_discriminator_arch",
    "infer_generator_arch",
    "load_checkpoint_file",
    "load_discriminator",
    "load_exact",
    "load_generator",
    "ours_to_port",
    "peek_keys",
    "port_to_ours",
    "read_discriminator",
    "read_generator",
    "widen_trainer_checkpoint",
    "write_generator",
]

PORT_HINT = (
    "expected a StyleGAN2 checkpoint in the layout of rosinality/stylegan2-pytorch "
    "(e.g. stylegan2-ffhq-config-f.pt: {'g_ema', 'latent_avg'} from its convert_weight.py, or "
    "{'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args'} from its train.py) or one saved by lit_propulse"
)

#: Where a pretrained StyleGAN2 comes from (the missing-file registry prints it).
SG2_SOURCE = (
    "a StyleGAN2 checkpoint in the rosinality/stylegan2-pytorch layout: stylegan2-ffhq-config-f.pt (converted "
    "from NVlabs' FFHQ config-f with the port's convert_weight.py, as pSp/e4e distribute it), or one trained here "
    "(python -m lit_propulse fit --config experiments/toy/stylegan2.yaml)"
)

#: Where Pro-PULSE's WGAN critic comes from (Eq. (8)/(9); the missing-file registry prints it). The file
#: pSp/e4e distribute as stylegan2-ffhq-config-f.pt is the converter's output *without* its --disc
#: option, {"g_ema", "latent_avg"} only, so the critic needs its own file.
D_SOURCE = (
    "the StyleGAN2 discriminator 'd' in the rosinality/stylegan2-pytorch layout, its own file (config key "
    "model.init_args.discriminator.init_args.path): convert NVIDIA's stylegan2-ffhq-config-f.pkl with the port's "
    "convert_weight.py --disc (python convert_weight.py --repo <NVlabs/stylegan2 clone> --disc stylegan2-ffhq-config-f.pkl; "
    "the output holds g_ema, latent_avg and d), or NVIDIA's PyTorch pickle of the same network (stylegan2-ffhq-1024x1024.pkl, "
    "listed in NVlabs/stylegan3's README; a .pkl is read as data), or a port trainer checkpoint ({'g', 'd', 'g_ema', ...}); the "
    "stylegan2-ffhq-config-f.pt that pSp/e4e distribute has no 'd'. Without a critic set lambda_adv: 0 and "
    "discriminator: null (the 'without L_adv' ablation, not the paper's setting)"
)

#: The format tag of our own saves (informational: loading goes by keys and shapes, never by this tag).
FORMAT = "lit_propulse.stylegan2/1"


# ----------------------------------------------------------------------------------------------
# Parameter names: the port's <-> ours.


def port_to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a port generator state dict (``style.*``, ``convs.*``...) to :class:`Generator` keys."""
    out = {}
    for k, v in state.items():
        out[("mapping.net." + k[len("style.") :]) if k.startswith("style.") else ("synthesis." + k)] = v
    return out


def ours_to_port(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`port_to_ours` (``latent_avg`` is not part of the port's state dict)."""
    out = {}
    for k, v in state.items():
        if k.startswith("mapping.net."):
            out["style." + k[len("mapping.net.") :]] = v
        elif k.startswith("synthesis."):
            out[k[len("synthesis.") :]] = v
    return out


# ----------------------------------------------------------------------------------------------
# Reading: safe, shape-inferring, one clear error.


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's top-level dict, via :func:`~lit_propulse.core.weights.safe_load`; only the
    port trainer's ``argparse.Namespace`` is allowed beyond tensors and plain containers. Every
    failure, a missing file included, is a :class:`CheckpointError`."""
    path = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: file not found; {PORT_HINT}")
    if path.lower().endswith(".pkl"):  # NVIDIA StyleGAN2-ADA pickle: read as data (nothing in it runs), in the port's layout
        from lit_propulse.networks.nvidia_pkl import read_nvidia_pkl

        return read_nvidia_pkl(path)
    what = f"{PORT_HINT} (NVlabs .pkl networks must be converted first, with the port's convert_weight.py)"
    ckpt = safe_load(path, what, error=CheckpointError, allowed_globals=[argparse.Namespace])
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a dict; {PORT_HINT}")
    return ckpt


def read_generator(
    path: str | os.PathLike,
    key: str = "g_ema",
    lr_mlp: float | None = None,
    map_location: str | torch.device = "cpu",
    cls: type[Generator] = Generator,
) -> Generator:
    """A :class:`Generator` (or subclass ``cls``) from any layout above; see ``Generator.from_checkpoint``.

    Architecture from the tensors' shapes; ``key`` "g_ema" falls back to "g" in trainer files;
    ``lr_mlp`` None = the file's ``arch`` value or 0.01. ``latent_avg`` is kept when present,
    computed (10k z, seed 0) and stored when absent.
    """
    ckpt = load_checkpoint_file(path)
    path = str(path)
    state = _pick_state(ckpt, path, key, kind="generator")
    arch = infer_generator_arch(state, path)
    saved = ckpt.get("arch") if isinstance(ckpt.get("arch"), dict) else {}
    arch["lr_mlp"] = float(lr_mlp if lr_mlp is not None else saved.get("lr_mlp", 0.01))
    G = cls(**arch)
    G.load_port_state_dict(state, source=path)
    avg = ckpt.get("latent_avg")
    if isinstance(avg, Tensor):
        avg = avg.reshape(-1)
        if avg.numel() != G.w_dim:
            raise CheckpointError(f"{path}: 'latent_avg' has {avg.numel()} values, expected w_dim = {G.w_dim}")
        G.latent_avg.copy_(avg)
        G.has_latent_avg.fill_(True)
    else:
        G.compute_latent_avg()
    return G.to(map_location)


def read_discriminator(
    path: str | os.PathLike, key: str = "d", map_location: str | torch.device = "cpu", cls: type[Discriminator] = Discriminator
) -> Discriminator:
    """The discriminator (``key``, "d") of a port trainer checkpoint or our own save; architecture from shapes."""
    ckpt = load_checkpoint_file(path)
    path = str(path)
    state = _pick_state(ckpt, path, key, kind="discriminator")
    D = cls(**infer_discriminator_arch(state, path))
    load_exact(D, state, path, ignore=set(), port_names=True)
    return D.to(map_location)


def _pick_state(ckpt: dict[str, Any], path: str, key: str, kind: str) -> dict[str, Tensor]:
    if key in ckpt and isinstance(ckpt[key], dict):
        return ckpt[key]
    if kind == "generator" and key == "g_ema" and isinstance(ckpt.get("g"), dict):
        return ckpt["g"]
    if all(isinstance(v, Tensor) for v in ckpt.values()) and any(k.startswith(("style.", "convs.", "final_conv")) for k in ckpt):
        return ckpt  # a bare state dict
    found = sorted(str(k) for k in ckpt)[:12]
    raise CheckpointError(f"{path}: no {kind} state dict under key {key!r}; found keys {found}; {D_SOURCE if kind == 'discriminator' else PORT_HINT}")


def _shape(state: dict[str, Tensor], path: str, key: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{path}: missing tensor {key!r}; {PORT_HINT}")
    return state[key].shape


def _kernel_spec(kernel: Tensor) -> list[float] | list[list[float]]:
    """The blur kernel spec from a stored 2-D kernel: 1-D when separable, else 2-D (normalised)."""
    k = kernel.double() / kernel.double().sum()
    row = k.sum(0)
    if torch.allclose(torch.outer(row, row), k, atol=1e-6):
        return [float(v) for v in row]
    return k.tolist()


def infer_generator_arch(state: dict[str, Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """size, style_dim, n_mlp, channels and blur_kernel of a port-layout generator state dict."""
    style_dim = _shape(state, path, "style.1.weight")[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    n_conv = 0
    while f"convs.{n_conv}.conv.weight" in state:
        n_conv += 1
    if n_conv < 2 or n_conv % 2:
        raise CheckpointError(f"{path}: found {n_conv} 'convs.N.conv.weight' tensors, expected an even number >= 2; {PORT_HINT}")
    log_size = n_conv // 2 + 2
    channels = {4: int(_shape(state, path, "input.input")[1])}
    for j in range(n_conv // 2):
        channels[2 ** (j + 3)] = int(_shape(state, path, f"convs.{2 * j}.conv.weight")[1])
    blur = state.get("convs.0.conv.blur.kernel")
    return {
        "size": 2**log_size,
        "style_dim": int(style_dim),
        "n_mlp": n_mlp,
        "channels": channels,
        "blur_kernel": (1, 3, 3, 1) if blur is None else _kernel_spec(blur),
    }


def infer_discriminator_arch(state: dict[str, Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """size, channels and blur_kernel of a port-layout discriminator state dict."""
    n_blocks = 0
    while f"convs.{n_blocks + 1}.conv1.0.weight" in state:
        n_blocks += 1
    if n_blocks < 1:
        raise CheckpointError(f"{path}: no 'convs.1.conv1.0.weight'; not a discriminator state dict; {PORT_HINT}")
    size = 2 ** (n_blocks + 2)
    channels = {size: int(_shape(state, path, "convs.0.0.weight")[0])}
    for b in range(1, n_blocks + 1):
        channels[size // 2**b] = int(_shape(state, path, f"convs.{b}.conv2.1.weight")[0])
    blur = state.get("convs.1.conv2.0.kernel")
    return {"size": size, "channels": channels, "blur_kernel": (1, 3, 3, 1) if blur is None else _kernel_spec(blur)}


def load_exact(module: nn.Module, state: dict[str, Tensor], source: str, ignore: set[str], port_names: bool) -> None:
    """load_state_dict(strict) with one error listing every missing, unexpected and mis-shaped key."""
    own = {k: v for k, v in module.state_dict().items() if k not in ignore}
    state = {k: v for k, v in state.items() if k not in ignore}

    def name(k: str) -> str:  # report the file's own (port) key names
        return next(iter(ours_to_port({k: None})), k) if port_names and isinstance(module, Generator) else k

    problem = state_dict_mismatch(own, state, name)
    if problem:
        raise CheckpointError(f"{source}: does not match the architecture inferred from it: {problem}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k])


# ----------------------------------------------------------------------------------------------
# Writing.


def write_generator(G: Generator, path: str | os.PathLike, discriminator: Discriminator | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write ``{"g_ema", "latent_avg", "arch", "format", ["d", "d_arch"], **extra}``: the port's
    layout (readable by the port too) plus our architecture dicts (plain values only)."""
    ckpt: dict[str, Any] = {"g_ema": G.port_state_dict(), "latent_avg": G.latent_avg.detach().cpu().clone(), "arch": _plain_arch(G.arch), "format": FORMAT}
    if discriminator is not None:
        ckpt["d"] = {k: v.detach() for k, v in discriminator.state_dict().items()}
        ckpt["d_arch"] = _plain_arch(discriminator.arch)
    if extra:
        ckpt.update(extra)
    torch.save(ckpt, path)


def _plain_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """Arch dict with plain Python values only (safe under weights_only loading)."""
    out: dict[str, Any] = {}
    for k, v in arch.items():
        if isinstance(v, dict):
            out[k] = {int(a): int(b) for a, b in v.items()}
        elif isinstance(v, (list, tuple)):
            out[k] = [list(map(float, x)) if isinstance(x, (list, tuple)) else float(x) for x in v]
        else:
            out[k] = v
    return out


def widen_trainer_checkpoint(ckpt: dict[str, Any], channels: dict[int, int], seed: int = 0, source: str = "<checkpoint>") -> dict[str, Any]:
    """The same trainer export (``g_ema``, and ``g`` / ``d`` when present) with more channels at some
    resolutions, computing the same function: every generator image and discriminator logit is
    unchanged (up to float rounding), so training continues from where it was with more capacity.

    Each old tensor is embedded in the leading block of the wider one. New output channels of a layer
    get a fresh initialisation (``seed``); the next layer's weights that read them are zero, so they
    add nothing until training moves those weights. Layers whose equalised-lr scale 1/sqrt(fan_in)
    is not undone by demodulation (ToRGB, every discriminator conv) get their old weights multiplied
    by sqrt(new fan_in / old fan_in); the demodulated convs need no correction (the scale cancels).
    This is StyleGAN2's own remedy for missing capacity at high resolutions (Karras et al. 2020,
    Sec. 4.2, Fig. 8: doubling the feature maps there), applied to a network already trained.

    Args:
        ckpt: a trainer export (``StyleGAN2Module.export_port_checkpoint``; ``g_ema`` required).
        channels: resolution -> new channel count, each at least the current one; 4² cannot change
            (the discriminator's final layers flatten it).
        seed: seed for the new channels' initialisation.
        source: the file's name, for error messages.
    Returns:
        the new checkpoint dict (``arch`` / ``d_arch`` updated; other entries kept).
    """
    if "g_ema" not in ckpt:
        raise CheckpointError(f"{source}: no 'g_ema' to widen")
    old_g = infer_generator_arch(ckpt["g_ema"], source)
    old_c = old_g["channels"]
    channels = {int(r): int(c) for r, c in channels.items()}
    for r, c in channels.items():
        if r not in old_c:
            raise ValueError(f"{source}: no resolution {r} in the channel table {old_c}")
        if r == 4 and c != old_c[4]:
            raise ValueError(f"cannot widen 4x4 ({old_c[4]} -> {c}): the discriminator's final layers flatten it")
        if c < old_c[r]:
            raise ValueError(f"channels can only grow: {r}x{r} has {old_c[r]}, asked for {c}")
    saved = ckpt.get("arch") if isinstance(ckpt.get("arch"), dict) else {}
    g_arch = {**old_g, "channels": {**old_c, **channels}, "lr_mlp": float(saved.get("lr_mlp", 0.01))}
    out = dict(ckpt)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(**g_arch)
        fresh_g = G.port_state_dict()
        out["arch"] = _plain_arch(G.arch)
        for key in ("g_ema", "g"):
            if key in ckpt:  # [1, out, in, k, k] modulated convs; ToRGB (no demodulation) rescaled
                out[key] = {n: _embed(ckpt[key][n], fresh_g[n], out_dim=1, in_dim=2, rescale="to_rgb" in n) for n in fresh_g}
        if "d" in ckpt:
            d_arch = {**infer_discriminator_arch(ckpt["d"], source), **(ckpt.get("d_arch") or {})}
            d_arch["channels"] = {**{int(r): int(c) for r, c in d_arch["channels"].items()}, **channels}
            D = Discriminator(**d_arch)
            fresh_d = {k: v.detach() for k, v in D.state_dict().items()}
            out["d"] = {n: _embed(ckpt["d"][n], fresh_d[n], out_dim=0, in_dim=1, rescale=True) for n in fresh_d}  # [out, in, k, k]
            out["d_arch"] = _plain_arch(D.arch)
    return out


def _embed(old: Tensor, fresh: Tensor, out_dim: int, in_dim: int, rescale: bool) -> Tensor:
    """``old`` in the leading block of ``fresh``'s shape; for conv weights (ndim > 2), the old output
    channels read the new input channels through zeros, and ``rescale`` keeps the equalised-lr
    product scale * weight of the old entries."""
    if old.shape == fresh.shape:
        return old.clone()
    if old.ndim != fresh.ndim or any(a > b for a, b in zip(old.shape, fresh.shape)):
        raise ValueError(f"cannot embed a {tuple(old.shape)} tensor in {tuple(fresh.shape)}")
    new = fresh.clone().to(old.dtype)
    lead = tuple(slice(0, n) for n in old.shape)
    if old.ndim > 2:
        rows = [slice(None)] * old.ndim
        rows[out_dim] = slice(0, old.shape[out_dim])
        rows[in_dim] = slice(old.shape[in_dim], None)
        new[tuple(rows)] = 0
        if rescale:
            old = old * (fresh.shape[in_dim] / old.shape[in_dim]) ** 0.5
    new[lead] = old
    return new


# ----------------------------------------------------------------------------------------------
# YAML loaders (``class_path: lit_propulse.networks.checkpoints.load_generator`` ...).


@needs_file("path", "the pretrained StyleGAN2 generator", SG2_SOURCE)
def load_generator(path: str, key: str = "g_ema", lr_mlp: float | None = None) -> Generator:
    """YAML-friendly loader: ``class_path: lit_propulse.networks.checkpoints.load_generator``."""
    return Generator.from_checkpoint(path, key=key, lr_mlp=lr_mlp)


def peek_keys(path: str | os.PathLike) -> list[str]:
    """The top-level keys of a checkpoint file without reading its tensors (memory-mapped where the
    file is in torch's zip format; a legacy file is read whole). Raises what :func:`safe_load` raises."""
    path = str(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not mmap-able (legacy format) or unreadable: the full, checked reader
        ckpt = load_checkpoint_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a dict; {PORT_HINT}")
    return [str(k) for k in ckpt]


def discriminator_file_problem(path: str, init_args: dict) -> str | None:
    """Preflight check of :func:`load_discriminator`'s file (:func:`lit_propulse.core.files.needs_file`):
    None when it holds a discriminator under ``key`` (or is a bare discriminator state dict), else
    one line saying what it holds instead. Never raises."""
    key = str(init_args.get("key") or "d")
    if path.lower().endswith(".pkl"):
        return None  # an NVIDIA pickle: its reader checks it when the critic is built
    try:
        keys = peek_keys(path)
    except Exception as e:  # noqa: BLE001 - reported as a line, the run stops before building anything
        return (str(e).strip().splitlines() or [type(e).__name__])[0].removeprefix(f"{path}: ")
    if key in keys or any(k.startswith("convs.0.0.") for k in keys):
        return None
    return f"exists but holds no discriminator under key {key!r} (its keys: {sorted(keys)[:8]})"


@needs_file("path", "the WGAN critic's initialisation: a StyleGAN2 checkpoint holding the discriminator 'd'", D_SOURCE, check=discriminator_file_problem)
def load_discriminator(path: str, key: str = "d") -> Discriminator:
    """YAML-friendly loader of Pro-PULSE's WGAN critic (Eq. (8)/(9)), initialised from a StyleGAN2
    discriminator: ``class_path: lit_propulse.networks.checkpoints.load_discriminator``. Its file is
    its own config key (see :data:`D_SOURCE`: the converter's usual output has no "d")."""
    return Discriminator.from_checkpoint(path, key=key)
