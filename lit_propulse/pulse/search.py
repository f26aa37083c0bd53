"""The PULSE search (Menon et al., CVPR 2020) on any StyleGAN2 of :mod:`lit_propulse.networks.stylegan2`.

* Sec. 3.2 + App. B 2.2: per-layer latents on the sphere √d·S^{d-1}, one tiled to every layer or
  one per w+ row (W+), searched by projected gradient descent (:class:`~lit_propulse.pulse.optim.SphericalOptimizer`)
  with the official learning-rate schedule (:func:`~lit_propulse.pulse.optim.lr_factor`).
* App. B 2.4: latents reach W through the generator's :class:`~lit_propulse.pulse.fit.GaussianFit`.
* App. B 2.5: noise maps fixed, zero, or the first k trainable on their own sphere (:class:`~lit_propulse.pulse.config.NoiseConfig`).
* Sec. 3.1 + App. B 2.3: the loss ``100·L_DS + 0.05·GEOCROSS`` (:mod:`lit_propulse.losses.pulse`).
* Sec. 3.1 Eq. (9) / Sec. 6: ε per image: an item succeeds when the L_DS of its returned iterate
  is ≤ ε, in any batch size; the returned iterate is the best (lowest L_DS) per item, or, with
  ``config.keep="last"`` (the "published" preset), the last one, as the official code returns.
* Sec. 4.4: one-to-many, :meth:`PULSE.sample`. Every item's initialisation is seeded by
  :func:`lit_propulse.core.seeding.mix_seed`, so a result does not depend on its batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_propulse.core.seeding import mix_seed
from lit_propulse.losses.pulse import PULSELoss
from lit_propulse.networks.stylegan2 import Generator, synthesis_layout
from lit_propulse.pulse.config import PULSEConfig
from lit_propulse.pulse.fit import GaussianFit
from lit_propulse.pulse.optim import SphericalOptimizer, lr_factor, project_to_sphere

__all__ = ["PULSE", "PULSEResult", "PULSEStep", "noise_resolutions"]


def noise_resolutions(size: int) -> list[int]:
    """Resolution of every noise map of a ``size`` generator, in the port's order (from
    :func:`synthesis_layout`). Noise map i is the noise of the conv styled by w+ row i."""
    specs = sorted((s for s in synthesis_layout(size) if s.noise_index is not None), key=lambda s: s.noise_index)
    assert all(s.noise_index == s.w_index for s in specs), "noise i <-> w row i no longer holds in synthesis_layout"
    return [s.resolution for s in specs]


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

    image: [B, 3, H, W] the returned iterate per item: the best (lowest L_DS over the evaluated
        steps) or, with ``keep="last"``, the last; raw generator range (clamp to [-1, 1] to save).
    ws: [B, num_ws, w_dim] its w+ (what the synthesis network received).
    latent: [B, L, w_dim] its sphere latents (L = 1 when tiled, else num_ws).
    noise: num_noise maps [B, 1, r, r] (port order) it was generated with.
    loss: [B] its L_DS against the LR the search was given (the degraded LR, if degraded).
    success: [B] bool, ``loss <= eps`` — per item, whatever the batch size.
    best_step: [B] long, the 0-based step of the returned iterate (steps - 1 with ``keep="last"``).
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

    def cpu(self) -> PULSEResult:
        def c(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().cpu()

        return PULSEResult(
            image=c(self.image),
            ws=c(self.ws),
            latent=c(self.latent),
            noise=[c(n) for n in self.noise],
            loss=c(self.loss),
            success=c(self.success),
            best_step=c(self.best_step),
            loss_history=c(self.loss_history),
            steps=self.steps,
            eps=self.eps,
            time_s=self.time_s,
            seeds=list(self.seeds),
            loss_clean=c(self.loss_clean),
        )


class PULSE(nn.Module):
    """Batched PULSE search on a StyleGAN2 (see the module docstring for the paper mapping).

    Args:
        generator: the StyleGAN2 to search (never modified; its parameters get no gradients).
        gaussian_fit: the mapping statistics of that generator (:meth:`GaussianFit.load_or_fit`).
        config: all settings (:class:`PULSEConfig`).
        bf16: run the generator under bf16 autocast (latents, loss and the kept best iterate stay
            float32); False = float32 throughout. Speed and L_DS deviation: docs/performance.md.

    ``forward(lr)`` runs one search per batch item and returns a :class:`PULSEResult`;
    :meth:`sample` runs N per LR (Sec. 4.4). Works on any device: everything is created on the
    generator's device.
    """

    def __init__(self, generator: Generator, gaussian_fit: GaussianFit, config: PULSEConfig | None = None, bf16: bool = False) -> None:
        super().__init__()
        self.config = config if config is not None else PULSEConfig()
        self.bf16 = bool(bf16)
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
            geocross_unit_vectors=cfg.loss.geocross_unit_vectors,
        )

    @classmethod
    def from_generator(
        cls,
        generator: Generator,
        config: PULSEConfig | None = None,
        cache_dir: str | os.PathLike | None = None,
        log: Callable[[str], None] | None = None,
        bf16: bool = False,
    ) -> PULSE:
        """Build with the generator's Gaussian fit from the cache (or fitted and cached)."""
        config = config if config is not None else PULSEConfig()
        config.noise.roles(generator.num_noise)  # fail on settings that do not fit this G before fitting
        fit = GaussianFit.load_or_fit(generator, cache_dir, config.gaussian_fit_samples, config.gaussian_fit_seed, log=log)
        return cls(generator, fit, config, bf16=bf16)

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
        seeds = self._check_inputs(lr, seeds, clean_lr)
        device = self.generator.latent_avg.device
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad(), _frozen(self.generator):
            # (clones: inputs made under inference mode, e.g. by a Lightning test loop, cannot be
            # saved for backward)
            lr = lr.detach().to(device, torch.float32).clone()
            best, history = self._search(lr, seeds, on_step)
            loss_clean = None
            if clean_lr is not None:
                with torch.no_grad():
                    loss_clean = self.loss.downscale(best.image, clean_lr.detach().to(device, torch.float32).clone())
        return PULSEResult(
            image=best.image,
            ws=best.ws,
            latent=best.latent,
            noise=best.noise,
            loss=best.loss,
            success=best.loss <= self.config.eps,
            best_step=best.step,
            loss_history=history,
            steps=self.config.steps,
            eps=self.config.eps,
            time_s=time.perf_counter() - start,
            seeds=seeds,
            loss_clean=loss_clean,
        )

    def _check_inputs(self, lr: Tensor, seeds: Sequence[int] | None, clean_lr: Tensor | None) -> list[int]:
        """Validate the shapes; the per-item seeds (``mix_seed(config.seed, i)`` when None)."""
        size = self.generator.size
        if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[2] != lr.shape[3] or lr.shape[2] > size:
            raise ValueError(f"PULSE expects square LR images [B, 3, h, h] with h <= {size}, got {tuple(lr.shape)}")
        if clean_lr is not None and clean_lr.shape != lr.shape:
            raise ValueError(f"clean_lr {tuple(clean_lr.shape)} must have the shape of lr {tuple(lr.shape)}")
        batch = lr.shape[0]
        seeds = [mix_seed(self.config.seed, i) for i in range(batch)] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}")
        return seeds

    def _search(self, lr: Tensor, seeds: list[int], on_step: Callable[[PULSEStep], None] | None) -> tuple[_BestIterate, Tensor]:
        """Projected gradient descent from each item's initial state (Sec. 3.2); returns the best
        iterate per item and the L_DS of every evaluated step, [steps, B]."""
        cfg, G = self.config, self.generator
        latent, noise = self.initial_state(seeds, lr.device)
        latent.requires_grad_(True)
        variables, dims = [latent], [(-1,)]
        for n, role in zip(noise, self.noise_roles):
            if role == "trainable":
                n.requires_grad_(True)
                variables.append(n)
                dims.append((1, 2, 3))
        opt = SphericalOptimizer(variables, dims, cfg.optimizer_factory(), lr=cfg.learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt.optimizer, lambda s: lr_factor(cfg.lr_schedule, s, cfg.steps))
        best = _BestIterate(lr.shape[0], lr.device, noise, keep_last=cfg.keep == "last")
        history = torch.zeros(cfg.steps, lr.shape[0], device=lr.device)
        for step in range(cfg.steps):
            per_layer, ws = self.latent_to_ws(latent)  # [B, num_ws, d] each
            with torch.autocast(lr.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                image = G.synthesis(ws, noise=noise).image.float()  # [B, 3, H, W]
            total, logs = self.loss(image, lr, ws if cfg.loss.geocross_on == "w" else per_layer)
            history[step] = logs["loss/downscale"]  # [B]
            best.update(step, logs["loss/downscale"], image, ws, latent, noise)
            if on_step is not None:
                on_step(PULSEStep(step, image.detach(), logs["loss/downscale"], opt.optimizer.param_groups[0]["lr"]))
            if step == cfg.steps - 1:
                break  # the update after the last evaluation could never be kept
            grads = torch.autograd.grad(total, variables)  # nothing flows into G's parameters
            for v, g in zip(variables, grads):
                v.grad = g
            opt.step()
            schedule.step()
        return best, history

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
        rep = lambda t: None if t is None else t.repeat_interleave(num_samples, dim=0)
        return self.forward(rep(lr), seeds=seeds, clean_lr=rep(clean_lr), on_step=on_step)


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """The module's parameters with ``requires_grad`` False for the duration (restored after): the
    search needs gradients through G, never for G, and a frozen G takes the generator's faster
    backward (no weight-gradient convolutions)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _BestIterate:
    """Per item, the evaluated iterate with the lowest L_DS so far (Sec. 3.1 Eq. (9): the result is
    the best iterate, not the last). Strict ``<``: a tie keeps the earlier step. With ``keep_last``
    every evaluation replaces it (the official code's returned image, the "published" preset).

    Args:
        batch: number of items.
        device: where the search runs.
        noise: the initial noise maps [B, 1, r, r] (replaced at the first evaluation).
    """

    def __init__(self, batch: int, device: torch.device, noise: Sequence[Tensor], keep_last: bool = False) -> None:
        self.keep_last = keep_last
        self.loss = torch.full((batch,), math.inf, device=device)  # [B]
        self.step = torch.zeros(batch, dtype=torch.long, device=device)  # [B]
        self.image: Tensor | None = None  # [B, 3, H, W]
        self.ws: Tensor | None = None  # [B, num_ws, d]
        self.latent: Tensor | None = None  # [B, L, d]
        self.noise = [n.detach().clone() for n in noise]

    def update(self, step: int, loss: Tensor, image: Tensor, ws: Tensor, latent: Tensor, noise: Sequence[Tensor]) -> None:
        better = torch.ones_like(loss, dtype=torch.bool) if self.keep_last else loss < self.loss  # [B]

        def keep(new: Tensor, old: Tensor | None) -> Tensor:
            if old is None:  # the first evaluation
                return new.detach().clone()
            return torch.where(better.view(-1, *[1] * (new.ndim - 1)), new.detach(), old)

        self.image, self.ws, self.latent = keep(image, self.image), keep(ws, self.ws), keep(latent, self.latent)
        self.noise = [keep(n, b) for n, b in zip(noise, self.noise)]
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)
        self.loss = torch.where(better, loss, self.loss)
