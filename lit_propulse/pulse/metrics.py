"""PULSE's success rate (Menon et al., CVPR 2020, Sec. 6): the fraction of searches whose best L_DS
is within ε (Sec. 3.1 Eq. (9)), overall as a torchmetrics ``Metric`` and per group label as in the
paper's model card (Fig. 8)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_propulse.pulse.results import image_key, read_groups_csv

__all__ = ["GroupRate", "SuccessRate", "group_success_rates", "success_rate"]


def success_rate(success: Tensor) -> Tensor:
    """Fraction of True in a bool/0-1 tensor (nan when empty)."""
    s = success.float().flatten()
    return s.mean() if s.numel() else s.new_tensor(float("nan"))


class SuccessRate(Metric):
    """Fraction of searches whose best L_DS is within ε (PULSE Sec. 6). Keeps sums, not lists."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("successes", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, success: Tensor) -> None:  # success: [B] bool
        s = success.detach().flatten()
        self.successes += s.double().sum()
        self.total += s.numel()

    def compute(self) -> Tensor:
        return (self.successes / self.total).float() if self.total > 0 else torch.tensor(float("nan"))


@dataclass(frozen=True)
class GroupRate:
    """Success count of one group: column (e.g. "race"), label (e.g. "Black"), searches, successes.
    Images missing from the groups file are counted under the label "<unlabelled>"."""

    column: str
    label: str
    n: int
    successes: int

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")


def group_success_rates(
    names: Sequence[str],
    success: Sequence[bool] | Tensor,
    groups: str | os.PathLike | tuple[list[str], Mapping[str, Mapping[str, str]]],
) -> list[GroupRate]:
    """Success rate per group label, per group column (PULSE's model card, Fig. 8).

    ``names[i]``/``success[i]`` is one search (an image, or one sample of it: every sample counts);
    ``groups`` is a CSV path (:func:`~lit_propulse.pulse.results.read_groups_csv`) or its parsed
    (columns, table). Sorted by column order, then label."""
    columns, table = read_groups_csv(groups) if isinstance(groups, (str, os.PathLike)) else groups
    flags = [bool(s) for s in (success.tolist() if isinstance(success, Tensor) else success)]
    if len(flags) != len(names):
        raise ValueError(f"got {len(names)} names but {len(flags)} success flags")
    out: list[GroupRate] = []
    for col in columns:
        counts: dict[str, list[int]] = {}
        for name, ok in zip(names, flags):
            label = table.get(image_key(name), {}).get(col, "<unlabelled>")
            c = counts.setdefault(label, [0, 0])
            c[0] += 1
            c[1] += int(ok)
        out += [GroupRate(col, label, n, k) for label, (n, k) in sorted(counts.items())]
    return out
