"""PULSE: self-supervised upsampling by latent-space exploration (Menon et al., CVPR 2020), on any
StyleGAN2 of :mod:`lit_propulse.networks.stylegan2`.

What is where (paper -> code):

* Sec. 3.2 + App. B 2.2: the search space. Per-layer latents on the sphere √d·S^{d-1}, either one
  latent tiled to every layer (``tile_latent``) or one per w+ row ("free", W+), searched by
  projected gradient descent (:class:`SphericalOptimizer`).
* App. B 2.4: :class:`GaussianFit` — the latents reach W through the generator's own mapping
  statistics, w = LeakyReLU_0.2(latent·std + mean), with mean/std fitted to
  LeakyReLU_5(mapping(z)); fitted from the loaded generator and cached per mapping-weights hash in a
  user cache dir (:func:`default_cache_dir`), never the working directory.
* App. B 2.5: noise — fixed, zero, or the first k maps trainable and projected to their own
  sphere (√(r²) = r for an r×r map); "bad" maps zeroed (:class:`NoiseConfig`).
* Sec. 3.1 + App. B 2.3: the loss, ``100·L_DS + 0.05·GEOCROSS`` (:mod:`lit_propulse.losses.pulse`).
* Sec. 3.1 Eq. (9) / Sec. 6: ε per image: an image succeeds when its own best L_DS ≤ ε, in any
  batch size; the best (lowest L_DS) iterate is kept per image (:class:`PULSEResult`).
* Sec. 4.4: one-to-many — :meth:`PULSE.sample` draws N initialisations and noises per LR.
* Sec. 6 / Fig. 8 (model card): success rates per group (:func:`group_success_rates`).

Fixes relative to the official code (adamian98/pulse): it returned the *last* step's image instead
of the best; its ε check compared the batch *sum* of the clamped per-image losses with ε, which
cannot pass for a batch of more than one image; it tracked the best step by the total loss of the
whole batch; it read/wrote ``gaussian_fit.pt`` in the working directory; it was StyleGAN1-, CUDA-
and 1024-only. See the README, section "PULSE baseline".
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from lit_propulse.core.seeding import mix_seed
from lit_propulse.losses.pulse import PULSELoss
from lit_propulse.networks.stylegan2 import Generator, synthesis_layout

__all__ = [
    "GaussianFit",
    "GroupRate",
    "NoiseConfig",
    "OPTIMIZERS",
    "PULSE",
    "PULSEConfig",
    "PULSELossConfig",
    "PULSEResult",
    "PULSEStep",
    "SphericalOptimizer",
    "SuccessRate",
    "default_cache_dir",
    "group_success_rates",
    "lr_factor",
    "mapping_fingerprint",
    "noise_resolutions",
    "project_to_sphere",
    "read_groups_csv",
    "success_rate",
]

OptimizerFactory = Callable[..., torch.optim.Optimizer]

#: the official code's optimizer choices (any ``factory(params, lr=...)`` is accepted too)
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "sgdm": partial(torch.optim.SGD, momentum=0.9),
    "adamax": torch.optim.Adamax,
}

LRSchedule = Literal["fixed", "linear1cycle", "linear1cycledrop"]
NoiseMode = Literal["trainable", "fixed", "zero"]


# ----------------------------------------------------------------------------------------------
# Seeds, schedule, spheres.


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


# ----------------------------------------------------------------------------------------------
# The Gaussian fit of the mapping's output (App. B 2.4), cached per generator.


def default_cache_dir() -> Path:
    """Where PULSE caches its Gaussian fits: ``$LIT_PROPULSE_CACHE/pulse`` if that variable is set,
    else ``$XDG_CACHE_HOME/lit_propulse/pulse``, else ``~/.cache/lit_propulse/pulse``."""
    root = os.environ.get("LIT_PROPULSE_CACHE")
    if root:
        return Path(root).expanduser() / "pulse"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lit_propulse" / "pulse"


def mapping_fingerprint(generator: Generator) -> str:
    """SHA-256 of what the Gaussian fit depends on: the mapping network's weights (names, shapes,
    float32 bytes) and its lr multiplier (part of the forward pass, not of the weights)."""
    h = hashlib.sha256()
    h.update(f"lr_mlp={generator.arch.get('lr_mlp')};".encode())
    for name, t in sorted(generator.mapping.state_dict().items()):
        arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(f"{name}:{tuple(arr.shape)};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class GaussianFit(nn.Module):
    """w = LeakyReLU_0.2(latent·std + mean) and its inverse (PULSE App. B 2.4).

    ``mean``/``std`` are the per-dimension statistics of LeakyReLU_5(mapping(z)), z ~ N(0, I).
    LeakyReLU_5 inverts the mapping's last activation LeakyReLU_0.2 exactly. StyleGAN2's mapping
    ends in the fused ``lrelu(x)·√2``: because a positive gain commutes with a leaky ReLU
    (lrelu(c·x) = c·lrelu(x) for c > 0), LeakyReLU_5(√2·lrelu_0.2(x)) = √2·x, so the fit describes
    the last pre-activation up to the constant √2, and LeakyReLU_0.2(√2·x) is again the mapping's
    output. The gain therefore needs no special handling: :meth:`to_w` ∘ :meth:`to_latent` is the
    identity on W (tests/test_pulse.py checks it on mapping(z)).

    Args:
        w_dim: width of w.
    """

    def __init__(self, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(w_dim))
        self.register_buffer("std", torch.ones(w_dim))

    @property
    def w_dim(self) -> int:
        return self.mean.numel()

    def to_w(self, latent: Tensor) -> Tensor:
        """[..., w_dim] sphere latents -> W vectors."""
        return F.leaky_relu(latent * self.std.to(latent) + self.mean.to(latent), 0.2)

    def to_latent(self, w: Tensor) -> Tensor:
        """[..., w_dim] W vectors -> latents (the inverse of :meth:`to_w`)."""
        return (F.leaky_relu(w, 5.0) - self.mean.to(w)) / self.std.to(w)

    @classmethod
    @torch.no_grad()
    def fit(cls, generator: Generator, num_samples: int = 100_000, seed: int = 0, batch_size: int = 10_000) -> "GaussianFit":
        """Fit mean/std of LeakyReLU_5(mapping(z)) over ``num_samples`` z (drawn on the CPU from
        ``seed``, so the same on every device), in batches, accumulated in float64."""
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        device = generator.latent_avg.device
        gen = torch.Generator().manual_seed(int(seed))
        s1 = torch.zeros(generator.w_dim, dtype=torch.float64)
        s2 = torch.zeros(generator.w_dim, dtype=torch.float64)
        done = 0
        while done < num_samples:
            b = min(batch_size, num_samples - done)
            z = torch.randn(b, generator.z_dim, generator=gen).to(device)
            y = F.leaky_relu(generator.mapping(z), 5.0).double().cpu()  # [b, w_dim]
            s1 += y.sum(0)
            s2 += y.square().sum(0)
            done += b
        mean = s1 / num_samples
        var = (s2 - num_samples * mean.square()) / (num_samples - 1)
        out = cls(generator.w_dim)
        out.mean.copy_(mean.float())
        out.std.copy_(var.clamp_min(0).sqrt().float())
        return out.to(device)

    @classmethod
    def load_or_fit(
        cls,
        generator: Generator,
        cache_dir: str | os.PathLike | None = None,
        num_samples: int = 100_000,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> "GaussianFit":
        """The fit for ``generator``, from the cache when present, else fitted and cached.

        The cache file ``gaussian_fit_<sha256[:20]>_n<num_samples>_seed<seed>.pt`` lives in
        ``cache_dir`` (None = :func:`default_cache_dir`); the hash is :func:`mapping_fingerprint`,
        so a different checkpoint never reuses another's fit. A cache that cannot be written only
        warns; a corrupt cache file is refitted and replaced.
        """
        directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        fp = mapping_fingerprint(generator)
        path = directory / f"gaussian_fit_{fp[:20]}_n{int(num_samples)}_seed{int(seed)}.pt"
        device = generator.latent_avg.device
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if data.get("mapping_sha256") == fp and data["mean"].numel() == generator.w_dim:
                    out = cls(generator.w_dim)
                    out.mean.copy_(data["mean"])
                    out.std.copy_(data["std"])
                    if log:
                        log(f"PULSE: Gaussian fit loaded from {path}")
                    return out.to(device)
            except Exception as e:  # noqa: BLE001 - any unreadable cache is refitted
                warnings.warn(f"PULSE: ignoring unreadable Gaussian-fit cache {path} ({type(e).__name__}: {e}); refitting")
        if log:
            log(f"PULSE: fitting the mapping's output statistics ({num_samples} z, seed {seed}) ...")
        out = cls.fit(generator, num_samples=num_samples, seed=seed)
        payload = {
            "mean": out.mean.detach().cpu(),
            "std": out.std.detach().cpu(),
            "mapping_sha256": fp,
            "num_samples": int(num_samples),
            "seed": int(seed),
            "format": "lit_propulse.pulse.gaussian_fit/1",
        }
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".gaussian_fit_", suffix=".tmp")
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a cache is as readable as any file
            torch.save(payload, tmp)
            os.replace(tmp, path)
            if log:
                log(f"PULSE: Gaussian fit cached in {path}")
        except OSError as e:
            warnings.warn(f"PULSE: could not cache the Gaussian fit in {directory} ({e}); it will be refitted next time")
        return out


# ----------------------------------------------------------------------------------------------
# Configuration.


def noise_resolutions(size: int) -> list[int]:
    """Resolution of every noise map of a ``size`` generator, in the port's order (from
    :func:`synthesis_layout`). Noise map i is the noise of the conv styled by w+ row i."""
    specs = sorted((s for s in synthesis_layout(size) if s.noise_index is not None), key=lambda s: s.noise_index)
    assert all(s.noise_index == s.w_index for s in specs), "noise i <-> w row i no longer holds in synthesis_layout"
    return [s.resolution for s in specs]


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
    """

    downscale_weight: float = 100.0
    geocross_weight: float = 0.05
    geocross_on: Literal["w", "latent"] = "w"
    geocross_normalize: bool = True
    clamp_at_eps: bool = True

    def __post_init__(self) -> None:
        if self.geocross_on not in ("w", "latent"):
            raise ValueError(f"geocross_on must be 'w' or 'latent', got {self.geocross_on!r}")


@dataclass(frozen=True)
class PULSEConfig:
    """Every setting of a PULSE search (defaults = the official run.py; paper Sec. 4).

    Args:
        steps: optimisation steps (100); the best of the ``steps`` evaluated iterates is returned.
        learning_rate: base learning rate (0.4).
        optimizer: a name in :data:`OPTIMIZERS` ("adam", "sgd", "sgdm", "adamax") or any
            ``factory(params, lr=...)`` returning a torch optimizer.
        lr_schedule: "linear1cycledrop" (default), "linear1cycle" or "fixed" (:func:`lr_factor`).
        eps: success threshold on the per-image L_DS (2e-3 as the code; the paper's tables used 1e-3).
        tile_latent: one latent for every layer (no GEOCROSS needed) instead of one per w+ row.
        noise: noise handling (:class:`NoiseConfig`).
        loss: loss terms and weights (:class:`PULSELossConfig`).
        seed: base seed of the initialisations (each item's own seed is :func:`mix_seed` of it).
        gaussian_fit_samples: z samples for the Gaussian fit (100k; the official code used 1M).
        gaussian_fit_seed: seed of those samples.
    """

    steps: int = 100
    learning_rate: float = 0.4
    optimizer: Union[Literal["adam", "sgd", "sgdm", "adamax"], OptimizerFactory] = "adam"
    lr_schedule: LRSchedule = "linear1cycledrop"
    eps: float = 2e-3
    tile_latent: bool = False
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: PULSELossConfig = field(default_factory=PULSELossConfig)
    seed: int = 0
    gaussian_fit_samples: int = 100_000
    gaussian_fit_seed: int = 0

    def __post_init__(self) -> None:
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


# ----------------------------------------------------------------------------------------------
# The search.


@dataclass
class PULSEStep:
    """What :meth:`PULSE.forward` passes to ``on_step`` after evaluating step ``step`` (0-based).

    image: [B, 3, H, W] the current (not the best) output, detached.
    loss: [B] its L_DS. learning_rate: the rate used for the update that follows.
    """

    step: int
    image: Tensor
    loss: Tensor
    learning_rate: float


@dataclass
class PULSEResult:
    """The outcome of one batched PULSE search; every tensor has the batch first.

    image: [B, 3, H, W] the best iterate per item (lowest L_DS over the evaluated steps), raw
        generator range (clamp to [-1, 1] to save).
    ws: [B, num_ws, w_dim] its w+ (what the synthesis network received).
    latent: [B, L, w_dim] its sphere latents (L = 1 when tiled, else num_ws).
    noise: num_noise maps [B, 1, r, r] (port order) it was generated with.
    loss: [B] its L_DS against the LR the search was given (the degraded LR, if degraded).
    success: [B] bool, ``loss <= eps`` — per item, whatever the batch size.
    best_step: [B] long, the 0-based step of the best iterate.
    loss_history: [steps, B] L_DS of every evaluated iterate.
    steps: steps run. eps: the threshold used. time_s: wall time of the whole batch.
    seeds: the per-item initialisation seeds.
    loss_clean: [B] L_DS of the best iterate against the clean LR, when one was given (Sec. 5).
    """

    image: Tensor
    ws: Tensor
    latent: Tensor
    noise: list[Tensor]
    loss: Tensor
    success: Tensor
    best_step: Tensor
    loss_history: Tensor
    steps: int
    eps: float
    time_s: float
    seeds: list[int]
    loss_clean: Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    def cpu(self) -> "PULSEResult":
        def c(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().cpu()

        return PULSEResult(
            image=c(self.image), ws=c(self.ws), latent=c(self.latent), noise=[c(n) for n in self.noise],
            loss=c(self.loss), success=c(self.success), best_step=c(self.best_step),
            loss_history=c(self.loss_history), steps=self.steps, eps=self.eps, time_s=self.time_s,
            seeds=list(self.seeds), loss_clean=c(self.loss_clean),
        )


class PULSE(nn.Module):
    """Batched PULSE search on a StyleGAN2 (see the module docstring for the paper mapping).

    Args:
        generator: the StyleGAN2 to search (never modified; its parameters get no gradients).
        gaussian_fit: the mapping statistics of that generator (:meth:`GaussianFit.load_or_fit`).
        config: all settings (:class:`PULSEConfig`).

    ``forward(lr)`` runs one search per batch item and returns a :class:`PULSEResult`;
    :meth:`sample` runs N per LR (Sec. 4.4). Works on any device: everything is created on the
    generator's device.
    """

    def __init__(self, generator: Generator, gaussian_fit: GaussianFit, config: PULSEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else PULSEConfig()
        if gaussian_fit.w_dim != generator.w_dim:
            raise ValueError(f"Gaussian fit has w_dim {gaussian_fit.w_dim}, the generator {generator.w_dim}")
        self.generator = generator
        self.gaussian_fit = gaussian_fit
        self.noise_roles = self.config.noise.roles(generator.num_noise)  # validates against this G
        self.noise_res = noise_resolutions(generator.size)
        cfg = self.config
        self.loss = PULSELoss(
            downscale_weight=cfg.loss.downscale_weight,
            geocross_weight=cfg.loss.geocross_weight,
            floor=cfg.eps if cfg.loss.clamp_at_eps else None,
            geocross_normalize=cfg.loss.geocross_normalize,
        )

    @classmethod
    def from_generator(
        cls,
        generator: Generator,
        config: PULSEConfig | None = None,
        cache_dir: str | os.PathLike | None = None,
        log: Callable[[str], None] | None = None,
    ) -> "PULSE":
        """Build with the generator's Gaussian fit from the cache (or fitted and cached)."""
        config = config if config is not None else PULSEConfig()
        config.noise.roles(generator.num_noise)  # fail on settings that do not fit this G before fitting
        fit = GaussianFit.load_or_fit(generator, cache_dir, config.gaussian_fit_samples, config.gaussian_fit_seed, log=log)
        return cls(generator, fit, config)

    @property
    def num_latents(self) -> int:
        """Rows of the sphere latent: 1 when tiled, else num_ws."""
        return 1 if self.config.tile_latent else self.generator.num_ws

    def initial_state(self, seeds: Sequence[int], device: torch.device) -> tuple[Tensor, list[Tensor]]:
        """Per-item initial latents [B, L, d] (on √d·S^{d-1} per row) and noise maps [B, 1, r, r].

        Each item draws from its own CPU generator, latents first and then every noise map (zeroed
        maps too, so a change of noise mode does not shift the latent draw)."""
        d = self.generator.w_dim
        latents, noises = [], [[] for _ in self.noise_res]
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            latents.append(torch.randn(self.num_latents, d, generator=g))
            for i, r in enumerate(self.noise_res):
                noises[i].append(torch.randn(1, r, r, generator=g))
        latent = project_to_sphere(torch.stack(latents), (-1,)).to(device)  # [B, L, d]
        maps = []
        for i, role in enumerate(self.noise_roles):
            n = torch.stack(noises[i]).to(device)  # [B, 1, r, r]
            maps.append(torch.zeros_like(n) if role == "zero" else project_to_sphere(n, (1, 2, 3)) if role == "trainable" else n)
        return latent, maps

    def latent_to_ws(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Sphere latents [B, L, d] -> (per-layer latents [B, num_ws, d], w+ [B, num_ws, d])."""
        per_layer = latent.expand(-1, self.generator.num_ws, -1) if self.config.tile_latent else latent
        return per_layer, self.gaussian_fit.to_w(per_layer)

    def forward(
        self,
        lr: Tensor,
        seeds: Sequence[int] | None = None,
        clean_lr: Tensor | None = None,
        on_step: Callable[[PULSEStep], None] | None = None,
    ) -> PULSEResult:
        """Search one HR image per LR.

        Args:
            lr: [B, 3, h, w] LR inputs in [-1, 1], square, h <= the generator's size.
            seeds: one initialisation seed per item; None = ``mix_seed(config.seed, i)`` for
                i in range(B).
            clean_lr: [B, 3, h, w] the clean LR when ``lr`` is degraded (Sec. 5): the result then
                also reports L_DS against it (``loss_clean``).
            on_step: called after every evaluated step with a :class:`PULSEStep`.
        """
        cfg = self.config
        G = self.generator
        if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[2] != lr.shape[3] or lr.shape[2] > G.size:
            raise ValueError(f"PULSE expects square LR images [B, 3, h, h] with h <= {G.size}, got {tuple(lr.shape)}")
        if clean_lr is not None and clean_lr.shape != lr.shape:
            raise ValueError(f"clean_lr {tuple(clean_lr.shape)} must have the shape of lr {tuple(lr.shape)}")
        batch = lr.shape[0]
        seeds = [mix_seed(cfg.seed, i) for i in range(batch)] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}")
        device = G.latent_avg.device
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            # (clones: inputs made under inference mode, e.g. by a Lightning test loop, cannot be
            # saved for backward)
            lr = lr.detach().to(device, torch.float32).clone()
            latent, noise = self.initial_state(seeds, device)
            latent.requires_grad_(True)
            variables, dims = [latent], [(-1,)]
            for n, role in zip(noise, self.noise_roles):
                if role == "trainable":
                    n.requires_grad_(True)
                    variables.append(n)
                    dims.append((1, 2, 3))
            opt = SphericalOptimizer(variables, dims, cfg.optimizer_factory(), lr=cfg.learning_rate)
            schedule = torch.optim.lr_scheduler.LambdaLR(opt.optimizer, lambda s: lr_factor(cfg.lr_schedule, s, cfg.steps))

            best_loss = torch.full((batch,), math.inf, device=device)
            best_step = torch.zeros(batch, dtype=torch.long, device=device)
            best_image = best_ws = best_latent = None
            best_noise: list[Tensor] = [n.detach().clone() for n in noise]
            history = torch.zeros(cfg.steps, batch, device=device)
            for step in range(cfg.steps):
                per_layer, ws = self.latent_to_ws(latent)  # [B, num_ws, d] each
                image = G.synthesis(ws, noise=noise).image  # [B, 3, H, W]
                vectors = ws if cfg.loss.geocross_on == "w" else per_layer
                total, logs = self.loss(image, lr, vectors)
                l_ds = logs["loss/downscale"]  # [B]
                history[step] = l_ds
                better = l_ds < best_loss  # strict: ties keep the earlier step
                if best_image is None:
                    best_image, best_ws, best_latent = image.detach().clone(), ws.detach().clone(), latent.detach().clone()
                else:
                    best_image = torch.where(better[:, None, None, None], image.detach(), best_image)
                    best_ws = torch.where(better[:, None, None], ws.detach(), best_ws)
                    best_latent = torch.where(better[:, None, None], latent.detach(), best_latent)
                best_noise = [torch.where(better[:, None, None, None], n.detach(), b) for n, b in zip(noise, best_noise)]
                best_step = torch.where(better, torch.full_like(best_step, step), best_step)
                best_loss = torch.where(better, l_ds, best_loss)
                if on_step is not None:
                    on_step(PULSEStep(step, image.detach(), l_ds, opt.optimizer.param_groups[0]["lr"]))
                if step == cfg.steps - 1:
                    break  # the update after the last evaluation could never be kept
                grads = torch.autograd.grad(total, variables)  # nothing flows into G's parameters
                for v, g in zip(variables, grads):
                    v.grad = g
                opt.step()
                schedule.step()
            loss_clean = None
            if clean_lr is not None:
                with torch.no_grad():
                    loss_clean = self.loss.downscale(best_image, clean_lr.detach().to(device, torch.float32).clone())
        return PULSEResult(
            image=best_image,
            ws=best_ws,
            latent=best_latent,
            noise=best_noise,
            loss=best_loss,
            success=best_loss <= cfg.eps,
            best_step=best_step,
            loss_history=history,
            steps=cfg.steps,
            eps=cfg.eps,
            time_s=time.perf_counter() - start,
            seeds=seeds,
            loss_clean=loss_clean,
        )

    def sample(
        self,
        lr: Tensor,
        num_samples: int,
        keys: Sequence[int] | None = None,
        clean_lr: Tensor | None = None,
        on_step: Callable[[PULSEStep], None] | None = None,
    ) -> PULSEResult:
        """One-to-many (Sec. 4.4): ``num_samples`` searches per LR from different initial latents
        and noise maps. Item ``i * num_samples + s`` of the result is sample s of LR i, seeded by
        ``mix_seed(config.seed, keys[i], s)`` (keys default to range(B); pass stable per-image keys,
        e.g. dataset indices, to make a sample independent of batching)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        keys = list(range(lr.shape[0])) if keys is None else [int(k) for k in keys]
        if len(keys) != lr.shape[0]:
            raise ValueError(f"got {len(keys)} keys for {lr.shape[0]} LR images")
        seeds = [mix_seed(self.config.seed, k, s) for k in keys for s in range(num_samples)]
        rep = lambda t: None if t is None else t.repeat_interleave(num_samples, dim=0)  # noqa: E731
        return self.forward(rep(lr), seeds=seeds, clean_lr=rep(clean_lr), on_step=on_step)


# ----------------------------------------------------------------------------------------------
# Success rates: overall (a torchmetrics Metric) and per group (the paper's model card, Fig. 8).


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


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _image_key(name: str) -> str:
    """Match "a.png", "a" and "dir/a.png" alike: the file name without an image extension."""
    base = Path(str(name).strip()).name
    return base[: -len(Path(base).suffix)] if Path(base).suffix.lower() in _IMAGE_SUFFIXES else base


def read_groups_csv(path: str | os.PathLike) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Read ``name,<group column>,...`` (header row first; labels are free text, e.g. FairFace's
    ``race``, ``gender``, ``age``). Returns (group columns, image key -> {column: label}).
    Image names match with or without their extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"groups file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"groups file {str(path)!r} needs a header 'name,<group column>,...' with at least one group column")
    columns = rows[0][1:]
    table: dict[str, dict[str, str]] = {}
    for ln, r in enumerate(rows[1:], start=2):
        if len(r) != len(rows[0]):
            raise ValueError(f"{path}:{ln}: expected {len(rows[0])} columns like the header, got {len(r)}")
        table[_image_key(r[0])] = dict(zip(columns, r[1:]))
    return columns, table


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
    ``groups`` is a CSV path (:func:`read_groups_csv`) or its parsed (columns, table). Sorted by
    column order, then label."""
    columns, table = read_groups_csv(groups) if isinstance(groups, (str, os.PathLike)) else groups
    flags = [bool(s) for s in (success.tolist() if isinstance(success, Tensor) else success)]
    if len(flags) != len(names):
        raise ValueError(f"got {len(names)} names but {len(flags)} success flags")
    out: list[GroupRate] = []
    for col in columns:
        counts: dict[str, list[int]] = {}
        for name, ok in zip(names, flags):
            label = table.get(_image_key(name), {}).get(col, "<unlabelled>")
            c = counts.setdefault(label, [0, 0])
            c[0] += 1
            c[1] += int(ok)
        out += [GroupRate(col, label, n, k) for label, (n, k) in sorted(counts.items())]
    return out

