"""Saving and loading networks that are not StyleGAN2 (encoders): the constructor arguments travel
with the weights, so a stage's export file rebuilds the exact network the next stage needs.

Classes opt in with :func:`record_init_args`; files are ``{"format", "class", "init_args",
"state_dict", ...}`` and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import Any

import torch
from torch import nn

from lit_propulse.errors import MissingFilesError, UserFacingError
from lit_propulse.pretrained import needs_file

FORMAT = "lit_propulse.module/1"


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
    return cls


def save_module(module: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write a module built by a :func:`record_init_args` class, with its constructor arguments."""
    if not hasattr(module, "init_args"):
        raise ValueError(f"{type(module).__name__} does not record its constructor arguments (decorate it with record_init_args)")
    cls = type(module)
    ckpt = {
        "format": FORMAT,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "init_args": module.init_args,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    ckpt.update(extra or {})
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    torch.save(ckpt, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


@needs_file("path", "a network exported by an earlier stage (e.g. ew.pt from the E_W stage)", "the stage that trains it writes it with its StageExport callback")
def load_module(path: str | os.PathLike, expected: type | None = None, what: str = "network") -> nn.Module:
    """Rebuild and load a module written by :func:`save_module`; ``expected`` checks its class."""
    path = str(path)
    if not os.path.isfile(path):
        raise MissingFilesError(f"{path}: {what} file not found (it is written by the stage that trains it)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise UserFacingError(f"{path}: not a readable lit_propulse {what} file ({str(e).strip().splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserFacingError(f"{path}: not a lit_propulse {what} file (expected format {FORMAT!r})")
    mod_name, _, cls_name = ckpt["class"].rpartition(".")
    if not mod_name.startswith("lit_propulse."):
        raise UserFacingError(f"{path}: refuses to build class {ckpt['class']!r} from outside lit_propulse")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    if expected is not None and not issubclass(cls, expected):
        raise UserFacingError(f"{path}: holds a {cls.__name__}, expected a {expected.__name__}")
    module = cls(**ckpt["init_args"])
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise UserFacingError(f"{path}: state dict does not match {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return module
