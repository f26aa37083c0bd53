"""What the folder and the prepared (memmap) datasets share: building one item from uint8 pixels
(HR -> DS -> optional degradations, or an LR read from disk) and the checks of their arguments."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from datamodules.degradations import Degradation, degrade_lr
from lit_propulse.core.images import uint8_to_tensor
from lit_propulse.core.seeding import seed_generator


def make_item(ds: Any, i: int, hr_u8: np.ndarray, lr_u8: np.ndarray | None) -> dict[str, Any]:
    """Build the item dict shared by the folder and prepared datasets (``ds`` provides
    ``names, lr_size, degradations, degradation_seed, attrs``)."""
    hr = uint8_to_tensor(hr_u8)  # [3, H, W]
    gen = None
    if len(ds.degradations) and ds.degradation_seed is not None:
        gen = seed_generator(ds.degradation_seed, zlib.crc32(ds.names[i].encode("utf-8")))
    if lr_u8 is None:
        lr = degrade_lr(hr[None], ds.lr_size, ds.degradations, generator=gen)[0]  # [3, h, w]
    else:
        lr = uint8_to_tensor(lr_u8)
        for d in ds.degradations:  # only "after_ds" ones are allowed with LR files
            lr = d(lr, generator=gen)
    return {
        "hr": hr,
        "lr": lr,
        "attrs": None if ds.attrs is None else torch.from_numpy(np.asarray(ds.attrs[i], dtype=np.float32)),
        "index": i,
        "name": ds.names[i],
    }


def check_sizes(hr_size: int, lr_size: int) -> None:
    if int(hr_size) <= 0 or int(lr_size) <= 0:
        raise ValueError(f"hr_size and lr_size must be positive, got hr_size={hr_size}, lr_size={lr_size}")
    if int(lr_size) > int(hr_size):
        raise ValueError(f"lr_size={lr_size} must not exceed hr_size={hr_size} (DS only shrinks)")


def check_attrs(attrs: np.ndarray | None, attr_names: Sequence[str] | None, n: int) -> tuple[np.ndarray | None, list[str] | None]:
    if attrs is None:
        return None, (list(attr_names) if attr_names is not None else None)
    attrs = np.asarray(attrs, dtype=np.float32)
    if attrs.ndim != 2 or attrs.shape[0] != n:
        raise ValueError(f"attrs must be [N={n}, A], got shape {attrs.shape}")
    if attr_names is None or len(attr_names) != attrs.shape[1]:
        raise ValueError(f"attr_names must name the {attrs.shape[1]} attribute columns, got {attr_names}")
    return attrs, list(attr_names)


def check_degradations(degradations: Sequence[Degradation] | None, lr_from_disk: bool) -> list[Degradation]:
    degs = list(degradations or [])
    for d in degs:
        if not isinstance(d, Degradation):
            raise ValueError(f"degradations must be Degradation modules, got {type(d).__name__}")
        if lr_from_disk and d.where == "before_ds" and len(d):
            raise ValueError("a 'before_ds' degradation cannot be applied when LR images are read from lr_root (no DS runs)")
    return degs
