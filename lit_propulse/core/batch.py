"""The batch every DataModule yields: a small typed structure, not a tuple.

Image convention for the whole project: float tensors in [-1, 1], NCHW, RGB (StyleGAN2's output
range), so generator outputs, HR and LR compare directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class SRBatch:
    """One batch of super-resolution pairs.

    hr: [B, 3, H, W] ground-truth high-resolution images in [-1, 1].
    lr: [B, 3, h, w] low-resolution inputs in [-1, 1] (made by ``DS`` from ``hr`` unless read from disk).
    attrs: [B, A] binary attribute labels as float, or None when the dataset has none.
    index: [B] dataset indices (long), unique per item: metrics use them to count each image once.
    name: B file names (or synthetic names) for writing outputs.
    """

    hr: Tensor
    lr: Tensor
    index: Tensor
    name: list[str] = field(default_factory=list)
    attrs: Tensor | None = None

    def __len__(self) -> int:
        return self.hr.shape[0]

    def to(self, device: torch.device | str) -> SRBatch:
        return SRBatch(
            hr=self.hr.to(device),
            lr=self.lr.to(device),
            index=self.index.to(device),
            name=list(self.name),
            attrs=None if self.attrs is None else self.attrs.to(device),
        )


def collate_sr(items: Sequence[dict[str, Any]]) -> SRBatch:
    """Collate dataset items ``{"hr", "lr", "index", "name", "attrs"?}`` into an :class:`SRBatch`."""
    if len(items) == 0:
        raise ValueError("collate_sr got an empty list of items")
    attrs = None
    if items[0].get("attrs") is not None:
        attrs = torch.stack([torch.as_tensor(it["attrs"], dtype=torch.float32) for it in items])
    return SRBatch(
        hr=torch.stack([it["hr"] for it in items]),
        lr=torch.stack([it["lr"] for it in items]),
        index=torch.as_tensor([int(it["index"]) for it in items], dtype=torch.long),
        name=[str(it["name"]) for it in items],
        attrs=attrs,
    )
