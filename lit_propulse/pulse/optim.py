"""PULSE's search machinery (Menon et al., CVPR 2020, Sec. 3.2): the sphere √n·S^{n-1} a
standard Gaussian of n entries concentrates on, projected gradient descent on it, and the official
code's optimizer choices and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
from torch import Tensor

__all__ = ["OPTIMIZERS", "LRSchedule", "OptimizerFactory", "SphericalOptimizer", "lr_factor", "project_to_sphere"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]

#: the official code's optimizer choices (any ``factory(params, lr=...)`` is accepted too)
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "sgdm": partial(torch.optim.SGD, momentum=0.9),
    "adamax": torch.optim.Adamax,
}

LRSchedule = Literal["fixed", "linear1cycle", "linear1cycledrop"]


def lr_factor(schedule: LRSchedule, step: int, steps: int) -> float:
    """Learning-rate multiplier at ``step`` of ``steps`` (the official code's LambdaLR schedules).

    "fixed": 1. "linear1cycle": linear 0.1 -> 1 at steps/2 -> 0.1. "linear1cycledrop" (default):
    the same cycle compressed into the first 90% of the steps (0.1 -> 1 at 0.45·steps -> 0.1 at
    0.9·steps), then a linear drop 0.1 -> 0.001 over the last 10%.
    """
    x = float(step)
    if schedule == "fixed":
        return 1.0
    if schedule == "linear1cycle":
        return (9 * (1 - abs(x / steps - 0.5) * 2) + 1) / 10
    if schedule == "linear1cycledrop":
        if x < 0.9 * steps:
            return (9 * (1 - abs(x / (0.9 * steps) - 0.5) * 2) + 1) / 10
        return 0.1 + (x - 0.9 * steps) / (0.1 * steps) * (1e-3 - 0.1)
    raise ValueError(f"lr_schedule must be 'fixed', 'linear1cycle' or 'linear1cycledrop', got {schedule!r}")


def project_to_sphere(x: Tensor, dims: Sequence[int]) -> Tensor:
    """Scale ``x`` so that its norm over ``dims`` is √n, n = number of entries over ``dims``:
    the sphere a standard Gaussian of that size concentrates on (PULSE Sec. 3.2)."""
    dims = tuple(dims)
    n = math.prod(x.shape[d] for d in dims)
    return x * (math.sqrt(n) / x.square().sum(dims, keepdim=True).sqrt().clamp_min(1e-12))


class SphericalOptimizer:
    """Projected gradient descent on spheres (PULSE Sec. 3.2) around any torch optimizer.

    After every ``step`` of the wrapped optimizer each parameter is projected back onto its sphere
    of radius √n over ``dims`` (:func:`project_to_sphere`); the parameters are projected once at
    construction too. (The official code kept each tensor's *initial* radius, ≈ √n for a Gaussian
    draw; here the radius is exactly √d, as in the paper.)

    Args:
        params: leaf tensors to optimise (``requires_grad=True``).
        dims: for each parameter, the dimensions that form one sphere (e.g. ``(-1,)`` for latents
            [B, L, d] -> one √d sphere per layer; ``(1, 2, 3)`` for a noise map [B, 1, r, r]).
        optimizer: ``factory(params, lr=...)``, e.g. ``torch.optim.Adam``.
        lr: learning rate given to the factory.
    """

    def __init__(self, params: Sequence[Tensor], dims: Sequence[Sequence[int]], optimizer: OptimizerFactory, lr: float) -> None:
        self.params = list(params)
        self.dims = [tuple(d) for d in dims]
        if len(self.params) != len(self.dims):
            raise ValueError(f"got {len(self.params)} parameters but {len(self.dims)} sphere dims")
        self.optimizer = optimizer(self.params, lr=lr)
        self.project()

    @torch.no_grad()
    def project(self) -> None:
        for p, d in zip(self.params, self.dims):
            p.copy_(project_to_sphere(p, d))

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()
        self.project()
