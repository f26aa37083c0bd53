"""NVIDIA's StyleGAN2-ADA ``.pkl`` networks, read without running their code (issue 17).

NVlabs' pickles (stylegan2-ada-pytorch, and the ``stylegan2`` config of the stylegan3 repo) hold
``{"G", "D", "G_ema", "training_set_kwargs", "augment_pipe"}``, every network stored as
``torch_utils.persistence`` reconstruction data: the *source code* of the module that defined the
class, the class name, the constructor arguments (``_init_args`` / ``_init_kwargs``) and the
object's state (``_parameters``, ``_buffers``, ``_modules``, attributes). ``pickle.load`` would
``exec`` that source. Here :class:`RestrictedUnpickler` never imports nor runs anything the file
names: ``find_class`` answers from a fixed table of inert rebuilders (tensors from their storages,
via ``torch.load(weights_only=True)``; ordered dicts; the persistence records, kept as plain data,
their source as text that is never run) and gives an inert :class:`Placeholder` for every other
name; ``persistent_load`` refuses. What comes out is data: :class:`PersistentRecord` trees of
tensors and constructor arguments.

Those are mapped onto our :class:`~lit_propulse.networks.stylegan2.Generator` and
:class:`~lit_propulse.networks.stylegan2.Discriminator` (StyleGAN2, Karras et al. CVPR 2020,
Sec. 2-4, config-f; trained with ADA, Karras et al. NeurIPS 2020) where the architectures are the
same computation, in the port's layout (:mod:`lit_propulse.networks.checkpoints` reads the result
like any port checkpoint, so ``Generator.from_checkpoint("ffhq.pkl")``, ``load_gds`` and the YAML
loaders take ``.pkl`` paths). What maps:

* generator: unconditional (``c_dim`` 0), RGB, ``architecture="skip"`` (ADA's default and
  config-f's), 3x3 synthesis convs with LeakyReLU, ``z_dim == w_dim`` and mapping layers of width
  ``w_dim``, any channel table, resample filter, mapping depth and learning-rate multiplier;
  ``use_noise=False`` maps to zero noise strength. Modulation/demodulation is one computation
  whether NVIDIA runs it fused (grouped conv, ``fused_modconv``) or not; ``num_fp16_res`` only
  says where NVIDIA runs float16 (ours runs float32, as theirs with ``force_fp32``); ``conv_clamp``
  (256 in ADA-trained pickles: a float16 overflow guard) is not applied, so outputs differ only
  where a layer's output exceeds ±256·√2 (a ToRGB's ±256);
* discriminator: unconditional, RGB, ``architecture="resnet"`` (ADA's default), minibatch-stddev
  with one feature (``mbstd_num_channels`` 1); its group size is written to ``d_arch``.

Refused, with one line naming the network and the reason: StyleGAN3 (alias-free) generators, the
``orig`` and ``resnet`` generator and ``orig``/``skip`` discriminator architectures, conditional or
non-RGB networks, TensorFlow pickles (``dnnlib.tflib``), and any other pickle.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lit_propulse.core.errors import CheckpointError
from lit_propulse.networks.upfirdn2d import make_kernel

__all__ = [
    "FORMAT",
    "Placeholder",
    "PersistentRecord",
    "RestrictedUnpickler",
    "discriminator_to_port",
    "generator_to_port",
    "named_tensors",
    "read_nvidia_pkl",
    "restricted_load",
]

#: the ``format`` tag of a converted pickle (informational)
FORMAT = "nvidia-stylegan2-ada-pkl (converted by lit_propulse.networks.nvidia_pkl)"

_SUPPORTED = (
    "only NVIDIA StyleGAN2-ADA networks load (stylegan2-ada-pytorch, or the stylegan3 repo's 'stylegan2' config): "
    "an unconditional RGB 'skip' generator and 'resnet' discriminator (docs/export.md)"
)


# ----------------------------------------------------------------------------------------------
# The restricted unpickler: data out, nothing run.


class Placeholder:
    """Inert stand-in for any global a pickle names that is not on the allow-list: constructing,
    filling (items, state) and building it only records the values; it has no other behaviour.
    Subclasses made by :class:`RestrictedUnpickler` carry the name the file gave
    (``pickled_module``, ``pickled_name``) for messages."""

    pickled_module: str = ""
    pickled_name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the values were recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    @classmethod
    def qualname(cls) -> str:
        return f"{cls.pickled_module}.{cls.pickled_name}"

    def __repr__(self) -> str:
        return f"<not loaded: {self.qualname()}>"


@dataclass
class PersistentRecord:
    """One ``torch_utils.persistence`` object as data.

    Args:
        class_name: the class name the file gives (e.g. "SynthesisLayer").
        module_src: the source of the module that defined it, as text; never run (it only names
            the network family, e.g. StyleGAN3's ``class SynthesisInput``).
        init_args, init_kwargs: the constructor arguments recorded at construction.
        parameters, buffers: the module's tensors (None entries dropped).
        modules: child name -> child (a record, a :class:`Placeholder`, or None).
        attrs: the other values of the object's state (plain attributes such as ``architecture``).
    """

    class_name: str
    module_src: str = ""
    init_args: tuple = ()
    init_kwargs: dict = field(default_factory=dict)
    parameters: dict[str, Tensor] = field(default_factory=dict)
    buffers: dict[str, Tensor] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


class _EasyDict(dict):
    """``dnnlib.EasyDict`` as a plain dict (its attribute access is not needed)."""


def _persistent_record(meta: Any) -> PersistentRecord | Placeholder:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` is mapped to: the record,
    never the class (its ``module_src`` is kept as text)."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        return Placeholder(meta)
    state = dict(meta["state"])

    def tensors(d: Any) -> dict[str, Tensor]:
        return {str(k): v for k, v in (d or {}).items() if isinstance(v, Tensor)} if isinstance(d, dict) else {}

    modules = state.pop("_modules", None)
    rec = PersistentRecord(
        class_name=str(meta.get("class_name", "")),
        module_src=meta.get("module_src") if isinstance(meta.get("module_src"), str) else "",
        init_args=tuple(state.pop("_init_args", ()) or ()),
        init_kwargs=dict(state.pop("_init_kwargs", {}) or {}),
        parameters=tensors(state.pop("_parameters", None)),
        buffers=tensors(state.pop("_buffers", None)),
        modules=dict(modules) if isinstance(modules, dict) else {},
    )
    rec.attrs = {k: v for k, v in state.items() if not k.startswith("_")}
    return rec


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes``: a storage saved by ``torch.save`` inside the pickle, read
    with ``weights_only=True`` (storages only)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor storage without its bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation: the storage only lives until its tensor is built
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"expected a tensor storage, found {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> Tensor:
    """``torch._utils._rebuild_tensor_v2``: a tensor viewing a storage (requires_grad, hooks and
    metadata ignored)."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("a tensor without a storage")
    if not (isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))):
        raise pickle.UnpicklingError("a tensor with a malformed size or stride")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any) -> Tensor:
    """``torch._utils._rebuild_parameter[_with_state]``: the plain tensor."""
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("a parameter without a tensor")
    return data.detach()


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
    """``torch._tensor._rebuild_from_type_v2``: ``func`` is itself from this table (or a placeholder);
    the subclass and its state are dropped, a plain tensor is kept."""
    out = func(*args) if callable(func) else Placeholder(func, args)
    return out.detach() if isinstance(out, Tensor) else Placeholder(out)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """``copyreg._reconstructor`` (protocols 0 and 1), for the classes of this table only."""
    if isinstance(cls, type) and issubclass(cls, (Placeholder, collections.OrderedDict, _EasyDict)):
        return cls()
    raise pickle.UnpicklingError(f"refused to reconstruct {cls!r}")


#: (module, name) -> what a pickle gets for that global; every other name is a Placeholder
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that cannot run code: ``find_class`` never imports, it answers from
    :data:`_ALLOWED` or with a :class:`Placeholder` subclass named after the global;
    ``persistent_load`` refuses (NVIDIA's pickles have no persistent ids)."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}
        self.placeholder_names: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        key = (str(module), str(name))
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key not in self._placeholders:
            self._placeholders[key] = type("Placeholder", (Placeholder,), {"pickled_module": key[0], "pickled_name": key[1]})
            self.placeholder_names.add(f"{key[0]}.{key[1]}")
        return self._placeholders[key]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of NVIDIA's pickles; refused")


def restricted_load(path: str | os.PathLike) -> tuple[Any, set[str]]:
    """The pickle at ``path`` as data (records, tensors, placeholders) and the global names that
    became placeholders. Every failure is one :class:`CheckpointError` line."""
    path = str(path)
    if zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: is a torch.save file, not an NVIDIA pickle; name it .pt to read it as a StyleGAN2 checkpoint")
    try:
        with open(path, "rb") as f:
            up = RestrictedUnpickler(f)
            data = up.load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable NVIDIA pickle ({type(e).__name__}: {first}); {_SUPPORTED}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    return data, up.placeholder_names


# ----------------------------------------------------------------------------------------------
# Records -> tensors in NVIDIA's names.


def named_tensors(rec: PersistentRecord, prefix: str = "") -> dict[str, Tensor]:
    """Every parameter and buffer of ``rec`` and its children, by NVIDIA's dotted names
    (``synthesis.b4.conv1.weight``...), like ``state_dict()``."""
    out = {prefix + k: v for k, v in {**rec.parameters, **rec.buffers}.items()}
    for name, child in rec.modules.items():
        if isinstance(child, PersistentRecord):
            out.update(named_tensors(child, f"{prefix}{name}."))
        elif child is not None:
            what = child.qualname() if isinstance(child, Placeholder) else type(child).__name__
            raise ValueError(f"submodule {prefix}{name} is a {what}, not a torch_utils.persistence network")
    return out


def _child(rec: PersistentRecord, name: str, where: str) -> PersistentRecord:
    child = rec.modules.get(name)
    if not isinstance(child, PersistentRecord):
        raise ValueError(f"{where} has no submodule {name!r}")
    return child


def _attr(rec: PersistentRecord, name: str, default: Any = None) -> Any:
    return rec.attrs.get(name, rec.init_kwargs.get(name, default))


def _filter_kernel(f: Tensor) -> Tensor:
    """An NVIDIA resample filter (``upfirdn2d.setup_filter``: 2-D, or 1-D separable) as our 2-D kernel."""
    return make_kernel(f.detach().double()).float()


def _same_filter(filters: list[Tensor], where: str) -> Tensor:
    k = _filter_kernel(filters[0])
    for f in filters[1:]:
        g = _filter_kernel(f)
        if g.shape != k.shape or not torch.allclose(g, k):
            raise ValueError(f"{where} uses different resample filters in different layers; ours uses one")
    return k


def _check_fc(rec: PersistentRecord, where: str, activation: str, lr: float = 1.0) -> None:
    act = _attr(rec, "activation", "linear")
    if act != activation:
        raise ValueError(f"{where} has activation {act!r}, expected {activation!r}")
    gain = rec.attrs.get("bias_gain")
    if isinstance(gain, (int, float)) and not math.isclose(float(gain), lr, rel_tol=1e-6):
        raise ValueError(f"{where} has learning-rate multiplier {gain}, expected {lr}")


# ----------------------------------------------------------------------------------------------
# Generator: NVIDIA -> the port's layout.


def _is_stylegan3(G: PersistentRecord) -> bool:
    syn = G.modules.get("synthesis")
    if isinstance(syn, PersistentRecord):
        inp = syn.modules.get("input")
        if isinstance(inp, PersistentRecord) and inp.class_name == "SynthesisInput":
            return True
        if any(k.startswith("L") and k[1:2].isdigit() for k in syn.modules):
            return True
    return "class SynthesisInput" in G.module_src


def generator_to_port(G: PersistentRecord) -> tuple[dict[str, Tensor], Tensor | None, float]:
    """A StyleGAN2-ADA generator record -> (port-layout state dict, ``w_avg`` or None, the mapping's
    learning-rate multiplier). Raises ValueError saying why the architecture does not map."""
    if _is_stylegan3(G):
        raise ValueError("is a StyleGAN3 (alias-free) generator (SynthesisInput, L0..Ln layers): it has no StyleGAN2 counterpart here")
    if G.class_name != "Generator" or "synthesis" not in G.modules or "mapping" not in G.modules:
        raise ValueError(f"is a {G.class_name or 'nameless'} object, not a StyleGAN2-ADA Generator (mapping + synthesis)")
    c_dim, img_channels = int(_attr(G, "c_dim", 0) or 0), int(_attr(G, "img_channels", 3))
    if c_dim:
        raise ValueError(f"is a conditional generator (c_dim={c_dim}); ours is unconditional")
    if img_channels != 3:
        raise ValueError(f"has {img_channels} image channels; ours has 3 (RGB)")
    syn, mapping = _child(G, "synthesis", "G"), _child(G, "mapping", "G")
    T = named_tensors(G)
    res_log2 = int(math.log2(int(_attr(syn, "img_resolution", _attr(G, "img_resolution")))))
    out: dict[str, Tensor] = {}

    # mapping: normalize_2nd_moment + fc{i} -> PixelNorm + style.{i+1} (the same EqualLinear storage)
    if "embed" in mapping.modules:
        raise ValueError("has a label embedding in its mapping network; ours is unconditional")
    lr_mul = float(mapping.init_kwargs.get("lr_multiplier", 0.01))
    n_mlp = int(_attr(mapping, "num_layers", 8))
    w_dim = int(_attr(G, "w_dim"))
    for i in range(n_mlp):
        fc = _child(mapping, f"fc{i}", "G.mapping")
        _check_fc(fc, f"G.mapping.fc{i}", "lrelu", lr_mul)
        wt = T[f"mapping.fc{i}.weight"]
        if tuple(wt.shape) != (w_dim, w_dim):
            raise ValueError(f"has mapping layer fc{i} of shape {tuple(wt.shape)}; ours needs z_dim = layer width = w_dim = {w_dim}")
        out[f"style.{i + 1}.weight"], out[f"style.{i + 1}.bias"] = wt, T[f"mapping.fc{i}.bias"]
    w_avg = T.get("mapping.w_avg")

    # synthesis: blocks b4 .. b<size>
    filters, noise_index = [], 0

    def layer(block: PersistentRecord, res: int, name: str, port: str, up: int) -> None:
        nonlocal noise_index
        rec = _child(block, name, f"G.synthesis.b{res}")
        pre = f"synthesis.b{res}.{name}."
        where = f"G.synthesis.b{res}.{name}"
        if _attr(rec, "activation", "lrelu") != "lrelu":
            raise ValueError(f"{where} has activation {_attr(rec, 'activation')!r}; ours uses lrelu")
        if int(_attr(rec, "up", 1)) != up:
            raise ValueError(f"{where} upsamples by {_attr(rec, 'up')}, expected {up}")
        wt = T[pre + "weight"]
        if wt.shape[-1] != 3 or wt.shape[-2] != 3:
            raise ValueError(f"{where} has a {wt.shape[-2]}x{wt.shape[-1]} kernel; ours uses 3x3")
        _check_fc(_child(rec, "affine", where), f"{where}.affine", "linear")
        out[f"{port}.conv.weight"] = wt.unsqueeze(0)  # [1, out, in, 3, 3]
        out[f"{port}.conv.modulation.weight"], out[f"{port}.conv.modulation.bias"] = T[pre + "affine.weight"], T[pre + "affine.bias"]
        out[f"{port}.activate.bias"] = T[pre + "bias"]
        use_noise = bool(_attr(rec, "use_noise", True))
        out[f"{port}.noise.weight"] = T[pre + "noise_strength"].reshape(1) if use_noise else torch.zeros(1)
        out[f"noises.noise_{noise_index}"] = (T[pre + "noise_const"] if use_noise else torch.zeros(res, res)).reshape(1, 1, res, res)
        noise_index += 1
        if pre + "resample_filter" in T:
            filters.append(T[pre + "resample_filter"])

    def torgb(block: PersistentRecord, res: int, port: str) -> None:
        rec = _child(block, "torgb", f"G.synthesis.b{res}")
        pre = f"synthesis.b{res}.torgb."
        wt = T[pre + "weight"]
        if tuple(wt.shape[-2:]) != (1, 1):
            raise ValueError(f"G.synthesis.b{res}.torgb has a {wt.shape[-2]}x{wt.shape[-1]} kernel; ours uses 1x1")
        _check_fc(_child(rec, "affine", f"G.synthesis.b{res}.torgb"), f"G.synthesis.b{res}.torgb.affine", "linear")
        out[f"{port}.conv.weight"] = wt.unsqueeze(0)  # [1, 3, C, 1, 1]
        out[f"{port}.conv.modulation.weight"], out[f"{port}.conv.modulation.bias"] = T[pre + "affine.weight"], T[pre + "affine.bias"]
        out[f"{port}.bias"] = T[pre + "bias"].reshape(1, 3, 1, 1)

    for k in range(2, res_log2 + 1):
        res = 2**k
        block = _child(syn, f"b{res}", "G.synthesis")
        arch = _attr(block, "architecture", "skip")
        if arch != "skip":
            raise ValueError(f"has the {arch!r} generator architecture (block b{res}); ours is StyleGAN2's 'skip' generator")
        if "torgb" not in block.modules:
            raise ValueError(f"block b{res} has no ToRGB; ours is StyleGAN2's 'skip' generator")
        if f"synthesis.b{res}.resample_filter" in T:
            filters.append(T[f"synthesis.b{res}.resample_filter"])
        if res == 4:
            const = T["synthesis.b4.const"]  # [C, 4, 4]
            out["input.input"] = const.unsqueeze(0)
            layer(block, 4, "conv1", "conv1", 1)
            torgb(block, 4, "to_rgb1")
        else:
            j = k - 3
            layer(block, res, "conv0", f"convs.{2 * j}", 2)
            layer(block, res, "conv1", f"convs.{2 * j + 1}", 1)
            torgb(block, res, f"to_rgbs.{j}")
    kernel = _same_filter(filters, "G") if filters else make_kernel([1, 3, 3, 1])
    for j in range(res_log2 - 2):  # the port's blur buffers: the kernel times factor**2
        out[f"convs.{2 * j}.conv.blur.kernel"] = kernel * 4
        out[f"to_rgbs.{j}.upsample.kernel"] = kernel * 4
    return {k: v.detach().float().contiguous() for k, v in out.items()}, (None if w_avg is None else w_avg.detach().float()), lr_mul


# ----------------------------------------------------------------------------------------------
# Discriminator: NVIDIA -> the port's layout.


def discriminator_to_port(D: PersistentRecord) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A StyleGAN2-ADA discriminator record -> (port-layout state dict, {"stddev_group",
    "stddev_feat"}). Raises ValueError saying why the architecture does not map."""
    if D.class_name != "Discriminator" or "b4" not in D.modules:
        raise ValueError(f"is a {D.class_name or 'nameless'} object, not a StyleGAN2-ADA Discriminator")
    c_dim, img_channels = int(_attr(D, "c_dim", 0) or 0), int(_attr(D, "img_channels", 3))
    if c_dim or "mapping" in D.modules:
        raise ValueError(f"is a conditional discriminator (c_dim={c_dim}); ours is unconditional")
    if img_channels != 3:
        raise ValueError(f"has {img_channels} image channels; ours has 3 (RGB)")
    T = named_tensors(D)
    size = int(_attr(D, "img_resolution"))
    log2 = int(math.log2(size))
    out: dict[str, Tensor] = {}
    filters = []

    def put(name: str, weight_key: str, bias_key: str | None) -> None:
        out[weight_key] = T[f"{name}.weight"]
        if bias_key is not None:
            out[bias_key] = T[f"{name}.bias"]
        elif T.get(f"{name}.bias") is not None:
            raise ValueError(f"D.{name} has a bias; ours has none there")

    def check(name: str, activation: str, down: int) -> PersistentRecord:
        rec = D
        for part in name.split("."):
            rec = _child(rec, part, "D")
        act = _attr(rec, "activation", "linear")
        if act != activation:
            raise ValueError(f"D.{name} has activation {act!r}, expected {activation!r}")
        if int(_attr(rec, "down", 1)) != down:
            raise ValueError(f"D.{name} downsamples by {_attr(rec, 'down', 1)}, expected {down}")
        if down > 1 and f"{name}.resample_filter" in T:
            filters.append(T[f"{name}.resample_filter"])
        return rec

    for i, k in enumerate(range(log2, 2, -1)):
        res = 2**k
        block = _child(D, f"b{res}", "D")
        arch = _attr(block, "architecture", "resnet")
        if arch != "resnet":
            raise ValueError(f"has the {arch!r} discriminator architecture (block b{res}); ours is StyleGAN2's residual ('resnet') one")
        if i == 0:
            check(f"b{res}.fromrgb", "lrelu", 1)
            put(f"b{res}.fromrgb", "convs.0.0.weight", "convs.0.1.bias")
        elif "fromrgb" in block.modules:
            raise ValueError(f"block b{res} reads the image again (fromrgb); ours reads it once")
        check(f"b{res}.conv0", "lrelu", 1)
        check(f"b{res}.conv1", "lrelu", 2)
        check(f"b{res}.skip", "linear", 2)
        put(f"b{res}.conv0", f"convs.{i + 1}.conv1.0.weight", f"convs.{i + 1}.conv1.1.bias")
        put(f"b{res}.conv1", f"convs.{i + 1}.conv2.1.weight", f"convs.{i + 1}.conv2.2.bias")
        put(f"b{res}.skip", f"convs.{i + 1}.skip.1.weight", None)
    epi = _child(D, "b4", "D")
    if _attr(epi, "architecture", "resnet") == "skip" or "fromrgb" in epi.modules:
        raise ValueError("has the 'skip' discriminator epilogue; ours is StyleGAN2's residual ('resnet') one")
    if int(_attr(epi, "cmap_dim", 0) or 0):
        raise ValueError("has a conditioning projection in its epilogue; ours is unconditional")
    mbstd = epi.modules.get("mbstd")
    if not isinstance(mbstd, PersistentRecord):
        raise ValueError("has no minibatch-stddev layer; ours always has one")
    group, feat = _attr(mbstd, "group_size", 4), int(_attr(mbstd, "num_channels", 1))
    if feat != 1:
        raise ValueError(f"has {feat} minibatch-stddev features; ours has 1")
    check("b4.conv", "lrelu", 1)
    fc, last = _child(epi, "fc", "D.b4"), _child(epi, "out", "D.b4")
    _check_fc(fc, "D.b4.fc", "lrelu")
    _check_fc(last, "D.b4.out", "linear")
    put("b4.conv", "final_conv.0.weight", "final_conv.1.bias")
    put("b4.fc", "final_linear.0.weight", "final_linear.0.bias")
    put("b4.out", "final_linear.1.weight", "final_linear.1.bias")
    kernel = _same_filter(filters, "D") if filters else make_kernel([1, 3, 3, 1])
    for i in range(1, log2 - 1):  # the port's blur buffers (no gain when downsampling)
        out[f"convs.{i}.conv2.0.kernel"] = kernel.clone()
        out[f"convs.{i}.skip.0.kernel"] = kernel.clone()
    arch = {"stddev_group": int(group) if group is not None else None, "stddev_feat": feat}
    return {k: v.detach().float().contiguous() for k, v in out.items()}, arch


# ----------------------------------------------------------------------------------------------
# The whole file.


def read_nvidia_pkl(path: str | os.PathLike) -> dict[str, Any]:
    """An NVIDIA StyleGAN2-ADA pickle as a checkpoint in the port's layout:
    ``{"g_ema", ["g"], ["d", "d_arch"], "latent_avg", "arch": {"lr_mlp"}, "format"}`` (the generators
    and discriminator present in the file; ``latent_avg`` = G_ema's ``w_avg``). This is what
    :func:`lit_propulse.networks.checkpoints.load_checkpoint_file` returns for a ``.pkl`` path.

    Nothing in the file is imported or run (:class:`RestrictedUnpickler`). A network whose
    architecture does not map, a TensorFlow pickle or any other file raises one
    :class:`CheckpointError` line naming the file, the network and the reason.
    """
    path = str(path)
    data, placeholders = restricted_load(path)
    if isinstance(data, tuple) and any(isinstance(x, Placeholder) and x.qualname().startswith("dnnlib.tflib") for x in data):
        raise CheckpointError(
            f"{path}: is a TensorFlow StyleGAN2 pickle (dnnlib.tflib networks); convert it first, to a PyTorch .pkl "
            f"with NVlabs stylegan2-ada-pytorch's legacy.py or to a .pt with rosinality/stylegan2-pytorch's convert_weight.py"
        )
    nets = {k: v for k, v in data.items() if k in ("G", "G_ema", "D")} if isinstance(data, dict) else {}
    if not any(isinstance(v, PersistentRecord) for v in nets.values()):
        found = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        names = f"; it names {sorted(placeholders)[:4]}" if placeholders else ""
        raise CheckpointError(
            f"{path}: holds no StyleGAN2-ADA networks ('G', 'G_ema', 'D' as torch_utils.persistence objects; found {found}{names}); {_SUPPORTED}"
        )
    ckpt: dict[str, Any] = {"format": FORMAT}
    try:
        for key, port_key in (("G_ema", "g_ema"), ("G", "g")):
            rec = nets.get(key)
            if rec is None:
                continue
            if not isinstance(rec, PersistentRecord):
                raise ValueError(f"is not a torch_utils.persistence network ({rec!r})")
            state, w_avg, lr_mul = generator_to_port(rec)
            ckpt[port_key] = state
            ckpt.setdefault("arch", {"lr_mlp": lr_mul})
            if w_avg is not None and "latent_avg" not in ckpt:
                ckpt["latent_avg"] = w_avg
        rec, key = nets.get("D"), "D"
        if rec is not None:
            if not isinstance(rec, PersistentRecord):
                raise ValueError(f"is not a torch_utils.persistence network ({rec!r})")
            ckpt["d"], ckpt["d_arch"] = discriminator_to_port(rec)
    except (ValueError, KeyError) as e:
        what = f"missing tensor {e}" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(f"{path}: {key!r} {what}; {_SUPPORTED}") from None
    if "g_ema" not in ckpt and "g" in ckpt:
        ckpt["g_ema"] = ckpt["g"]
    return ckpt
