"""Settings of a PULSE search (Menon et al., CVPR 2020): the noise inputs (App. B 2.5), the loss
terms (Sec. 3.1, App. B 2.3) and every other knob of the search (Sec. 3.2, Sec. 4; defaults = the
official run.py). Frozen dataclasses that validate on construction.

Two named presets (:data:`PRESETS`, :meth:`PULSEConfig.preset`), both reported by name:

* ``"corrected"`` (the defaults): the best iterate by L_DS is returned, GEOCROSS measures the exact
  angles (unit vectors), the Gaussian fit uses 100k z.
* ``"published"``: PULSE as the official code runs it: the *last* iterate is returned, GEOCROSS is
  the official formula on the raw W rows, the Gaussian fit uses 1M z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from lit_propulse.pulse.optim import OPTIMIZERS, LRSchedule, OptimizerFactory, lr_factor

__all__ = ["PRESETS", "NoiseConfig", "NoiseMode", "PULSEConfig", "PULSELossConfig", "Preset"]

NoiseMode = Literal["trainable", "fixed", "zero"]


@dataclass(frozen=True)
class NoiseConfig:
    """The noise inputs of the synthesis network during the search (PULSE App. B 2.5).

    Noise map i (port order) is the noise of the conv styled by w+ row i, exactly as StyleGAN1's
    noise i sits on the layer of w row i; StyleGAN2 has one map fewer (no noise on the 4x4 const),
    so 17 maps at 1024 instead of 18. The official StyleGAN1 settings map by that index: "first 5
    trainable" stays ``num_trainable=5`` (the convs of w rows 0-4), and the zeroed "bad" layer 17
    (the last conv at the output resolution) becomes the last map, ``-1`` (16 at 1024).

    Args:
        mode: "trainable" = fresh Gaussian maps, the first ``num_trainable`` optimised and projected
            to their sphere (radius r for an r×r map) — the official default; "fixed" = fresh
            Gaussian maps kept fixed; "zero" = no noise.
        num_trainable: how many leading maps are optimised in mode "trainable" (0 = none); must not
            exceed the generator's number of maps.
        bad_layers: maps set to zero and never optimised, in every mode; negative indices count
            from the end; () = none. Default (-1,): the last map (the official ``bad_noise_layers=17``).
    """

    mode: NoiseMode = "trainable"
    num_trainable: int = 5
    bad_layers: tuple[int, ...] = (-1,)

    def __post_init__(self) -> None:
        if self.mode not in ("trainable", "fixed", "zero"):
            raise ValueError(f"noise mode must be 'trainable', 'fixed' or 'zero', got {self.mode!r}")
        if self.num_trainable < 0:
            raise ValueError(f"num_trainable must be >= 0, got {self.num_trainable}")
        object.__setattr__(self, "bad_layers", tuple(int(i) for i in self.bad_layers))

    def roles(self, num_noise: int) -> list[NoiseMode]:
        """The role of each of ``num_noise`` maps: "trainable", "fixed" or "zero"."""
        bad = set()
        for i in self.bad_layers:
            if not -num_noise <= i < num_noise:
                raise ValueError(f"bad noise layer {i} out of range for a generator with {num_noise} noise maps")
            bad.add(i % num_noise)
        if self.mode == "trainable" and self.num_trainable > num_noise:
            raise ValueError(f"num_trainable={self.num_trainable} exceeds the generator's {num_noise} noise maps")
        roles: list[NoiseMode] = []
        for i in range(num_noise):
            if self.mode == "zero" or i in bad:
                roles.append("zero")
            elif self.mode == "trainable" and i < self.num_trainable:
                roles.append("trainable")
            else:
                roles.append("fixed")
        return roles


@dataclass(frozen=True)
class PULSELossConfig:
    """Terms and weights of the PULSE objective (official ``"100*L2+0.05*GEOCROSS"``).

    Args:
        downscale_weight: weight of the downscaling loss L_DS (Sec. 3.1; per-image mean squared
            error in [0, 1] units, :mod:`lit_propulse.losses.pulse`).
        geocross_weight: weight of GEOCROSS (App. B 2.3); 0 = off.
        geocross_on: "w" = the k per-layer vectors fed to the synthesis (what the official code
            does); "latent" = the sphere latents before the Gaussian-fit transform.
        geocross_normalize: True = the official scaling d/(4k²)·Σ_{i<j}θ², False = plain Σ_{i<j}θ².
        clamp_at_eps: clamp L_DS from below at ε in the optimised loss, as the official code does
            (an image within ε gets no more downscaling gradient); False = no clamp.
        geocross_unit_vectors: True = GEOCROSS on the unit vectors, θ the exact angle (ours);
            False = the official formula on the raw rows (as published).
    """

    downscale_weight: float = 100.0
    geocross_weight: float = 0.05
    geocross_on: Literal["w", "latent"] = "w"
    geocross_normalize: bool = True
    clamp_at_eps: bool = True
    geocross_unit_vectors: bool = True

    def __post_init__(self) -> None:
        if self.geocross_on not in ("w", "latent"):
            raise ValueError(f"geocross_on must be 'w' or 'latent', got {self.geocross_on!r}")


@dataclass(frozen=True)
class PULSEConfig:
    """Every setting of a PULSE search (defaults = the official run.py; paper Sec. 4).

    Args:
        steps: optimisation steps (100).
        keep: which evaluated iterate is the result: "best" (lowest L_DS per image; ours) or "last"
            (the official code's returned image).
        learning_rate: base learning rate (0.4).
        optimizer: a name in :data:`OPTIMIZERS` ("adam", "sgd", "sgdm", "adamax") or any
            ``factory(params, lr=...)`` returning a torch optimizer.
        lr_schedule: "linear1cycledrop" (default), "linear1cycle" or "fixed" (:func:`lr_factor`).
        eps: ε of Sec. 3 Eq. (5)/(9): the success threshold on the per-image L_DS and the floor of the
            optimised L_DS (``loss.clamp_at_eps``); one value for both (2e-3 as the code; the paper's
            tables used 1e-3, which the paper configs set).
        tile_latent: one latent for every layer (no GEOCROSS needed) instead of one per w+ row.
        noise: noise handling (:class:`NoiseConfig`).
        loss: loss terms and weights (:class:`PULSELossConfig`).
        seed: base seed of the initialisations (each item's own seed is :func:`mix_seed` of it).
        gaussian_fit_samples: z samples for the Gaussian fit (100k; the official code used 1M).
        gaussian_fit_seed: seed of those samples.
    """

    steps: int = 100
    keep: Literal["best", "last"] = "best"
    learning_rate: float = 0.4
    optimizer: Literal["adam", "sgd", "sgdm", "adamax"] | OptimizerFactory = "adam"
    lr_schedule: LRSchedule = "linear1cycledrop"
    eps: float = 2e-3
    tile_latent: bool = False
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: PULSELossConfig = field(default_factory=PULSELossConfig)
    seed: int = 0
    gaussian_fit_samples: int = 100_000
    gaussian_fit_seed: int = 0

    def __post_init__(self) -> None:
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite value > 0, got {self.learning_rate}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} or a callable, got {self.optimizer!r}")
        lr_factor(self.lr_schedule, 0, self.steps)  # validates the name

    def optimizer_factory(self) -> OptimizerFactory:
        return OPTIMIZERS[self.optimizer] if isinstance(self.optimizer, str) else self.optimizer

    @classmethod
    def preset(cls, name: Preset = "corrected", **overrides) -> PULSEConfig:
        """The named preset (:data:`PRESETS`) with ``overrides`` (e.g. ``eps=1e-3``, ``steps=100``)."""
        if name not in PRESETS:
            raise ValueError(f"PULSE preset must be one of {sorted(PRESETS)}, got {name!r}")
        return replace(PRESETS[name], **overrides)


Preset = Literal["corrected", "published"]

#: The named PULSE settings: ours (the defaults) and the official code's behaviour.
PRESETS: dict[str, PULSEConfig] = {
    "corrected": PULSEConfig(),
    "published": PULSEConfig(keep="last", loss=PULSELossConfig(geocross_unit_vectors=False), gaussian_fit_samples=1_000_000),
}
