"""Weights files: the one safe reader (:func:`safe_load`, ``torch.load(weights_only=True)`` with one
clear error for every way a file can be bad), atomic writing (:func:`atomic_save`), and the export
format of networks other than StyleGAN2 (encoders, classifiers): the constructor arguments travel
with the weights, so a stage's export file rebuilds the exact network the next stage needs.

Classes opt in with :func:`record_init_args`; files are ``{"format", "class", "init_args",
"state_dict", ...}`` and load with ``torch.load(weights_only=True)``.

Security: a file is data, never code. The class a file names is looked up in :data:`EXPORTABLE`, an
explicit list of the network classes an export may build, *before* anything is imported or called;
any other name (a function such as ``lit_propulse.cli.main``, a class that is not a network, a
name from outside the list) is refused with one line naming the file and the class.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from lit_propulse.core.errors import DivergedError, MissingFilesError, WeightsFileError
from lit_propulse.core.files import needs_file

FORMAT = "lit_propulse.module/1"


def safe_load(path: str | os.PathLike, what: str, error: type[WeightsFileError] = WeightsFileError, allowed_globals: Iterable[type] = ()) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only
    (plus ``allowed_globals``), so no file can run code.

    ``what`` says what the file is and where it comes from; it ends every message. A missing file
    raises :class:`MissingFilesError`; a directory, an empty, truncated, corrupt or foreign file, or
    one holding Python objects raises ``error`` (a :class:`WeightsFileError`), in one line naming the
    file, without the unpickler's traceback.
    """
    path = str(path)
    if not os.path.exists(path):
        raise MissingFilesError(f"{path}: file not found; {what}")
    if os.path.isdir(path):
        raise error(f"{path}: is a directory, not a weights file; {what}")
    if os.path.getsize(path) == 0:
        raise error(f"{path}: file is empty (0 bytes); {what}")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        detail = msg.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if msg.strip() else type(e).__name__
        if "Unsupported global" in msg:
            raise error(f"{path}: refused to load: the file contains Python objects other than tensors and plain containers ({detail}); {what}") from None
        raise error(f"{path}: not a readable torch file ({detail}); {what}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{path}: not a readable torch file (corrupt or truncated: {first[:200]}); {what}") from None


def nonfinite(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [k for k, v in tensors.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def assert_finite(tensors: Mapping[str, Any], source: str, error: type[Exception] = WeightsFileError) -> None:
    """Raise ``error`` naming ``source`` and the non-finite tensors (a diverged run's weights)."""
    bad = nonfinite(tensors)
    if bad:
        raise error(f"{source}: {len(bad)} of {len(tensors)} tensors are not finite (NaN/inf), e.g. {bad[:4]}: the weights come from a diverged run")


def state_dict_mismatch(
    own: Mapping[str, Any],
    state: Mapping[str, Any],
    name: Callable[[str], str] = str,
    may_lack: Callable[[str], bool] = lambda key: False,
    shown: int = 10,
) -> str:
    """Why ``state`` (a file's tensors) does not load key for key and shape for shape into a module
    whose state dict is ``own``: ``"missing keys [...]; unexpected keys [...]; shape mismatches [...]"``
    (the first ``shown`` of each in state-dict order, keys written by ``name``, e.g. in the file's own
    naming), or ``""`` when it fits. ``may_lack``: keys of ``own`` the file may leave out (they keep their value)."""

    def few(items: list[str]) -> str:
        return f"{items[:shown]}{f' ... ({len(items)} in all)' if len(items) > shown else ''}"

    missing = [name(k) for k in own if k not in state and not may_lack(k)]
    unexpected = [name(k) for k in state if k not in own]
    mismatched = [f"{name(k)}: file {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    parts = [("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)]
    return "; ".join(f"{what} {few(items)}" for what, items in parts if items)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path + ".tmp"`` then rename: a kill never leaves a half-written file."""
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def half_precision(obj: Any) -> Any:
    """``obj`` (a weights file's contents) with every floating-point tensor stored as float16, other
    tensors and values unchanged: half the bytes on disk. Loading needs nothing else:
    ``load_state_dict`` and ``Tensor.copy_`` cast into the network's own (float32) parameters. Used for
    the toy exports the package ships (``benchmarks/ship_toy_exports.py`` checks what it changes)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(torch.float16) if obj.is_floating_point() else obj
    if isinstance(obj, Mapping):
        return type(obj)((k, half_precision(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(half_precision(v) for v in obj)
    return obj


#: The classes an export file may build: the class name stored in a file -> "module:ClassName" of
#: the class today. A class moved to another module keeps its old stored name here as an alias, so
#: files written before the move still load. Nothing outside this table is ever imported or called.
#: (The table names higher layers by string only: core imports none of them statically.)
EXPORTABLE: dict[str, str] = {
    "lit_propulse.networks.encoders.EWEncoder": "lit_propulse.networks.encoders:EWEncoder",
    "lit_propulse.networks.encoders.EWPlusEncoder": "lit_propulse.networks.encoders:EWPlusEncoder",
    "lit_propulse.networks.attribute_classifier.AttributeClassifier": "lit_propulse.networks.attribute_classifier:AttributeClassifier",
    "lit_propulse.networks.psp.GradualStyleEncoder": "lit_propulse.networks.psp:GradualStyleEncoder",
}


def exportable_class(name: object, source: str) -> type:
    """The network class registered under ``name`` in :data:`EXPORTABLE`; refuses anything else.

    The name is checked against the table before any import; the class found must be an ``nn.Module``
    that records its constructor arguments (:func:`record_init_args`)."""
    if not isinstance(name, str) or name not in EXPORTABLE:
        raise WeightsFileError(f"{source}: refuses to build {name!r}: not one of the network classes an export may name ({', '.join(sorted(EXPORTABLE))})")
    mod_name, _, cls_name = EXPORTABLE[name].partition(":")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and getattr(cls, "_records_init_args", False)):
        raise WeightsFileError(f"{source}: refuses to build {name!r}: registered, but not a network class that records its arguments")
    return cls


def record_init_args(cls: type) -> type:
    """Class decorator: instances keep their constructor arguments in ``init_args`` (plain values)."""
    init = cls.__init__
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        self.init_args = {k: v for k, v in bound.arguments.items() if k != "self"}

    cls.__init__ = wrapped
    cls._records_init_args = True
    return cls


def save_module(module: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write a module built by a :func:`record_init_args` class, with its constructor arguments."""
    if not hasattr(module, "init_args"):
        raise ValueError(f"{type(module).__name__} does not record its constructor arguments (decorate it with record_init_args)")
    cls = type(module)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if EXPORTABLE.get(name) != f"{cls.__module__}:{cls.__qualname__}":
        raise ValueError(f"{name} is not in serialization.EXPORTABLE: register it there so its exports can be loaded")
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    assert_finite(state, f"{path} ({name})", DivergedError)
    ckpt = {
        "format": FORMAT,
        "class": name,
        "init_args": module.init_args,
        "state_dict": state,
    }
    ckpt.update(extra or {})
    atomic_save(ckpt, path)


@needs_file(
    "path", "a network exported by an earlier stage (e.g. ew.pt from the E_W stage)", "the stage that trains it writes it with its StageExport callback"
)
def load_module(path: str | os.PathLike, expected: type | None = None, what: str = "network") -> nn.Module:
    """Rebuild and load a module written by :func:`save_module`; ``expected`` checks its class."""
    path = str(path)
    ckpt = safe_load(path, f"expected a lit_propulse {what} file (it is written by the stage that trains it)")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise WeightsFileError(f"{path}: not a lit_propulse {what} file (expected format {FORMAT!r})")
    cls = exportable_class(ckpt.get("class"), path)
    if expected is not None and not issubclass(cls, expected):
        raise WeightsFileError(f"{path}: holds a {cls.__name__}, expected a {expected.__name__}")
    init_args = ckpt.get("init_args")
    if not isinstance(init_args, dict) or not all(isinstance(k, str) for k in init_args):
        raise WeightsFileError(f"{path}: its init_args are not a dict of named arguments")
    try:
        module = cls(**init_args)
    except (TypeError, ValueError) as e:
        raise WeightsFileError(f"{path}: cannot build {cls.__name__} from its stored arguments ({e})") from None
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: has no state_dict of tensors")
    assert_finite(state, path)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsFileError(f"{path}: state dict does not match {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return module
