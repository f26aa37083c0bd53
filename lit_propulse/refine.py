"""Consistent with the input at encoder speed: a few steps of per-image latent optimisation that start
from an encoder's answer and stop, image by image, once it downscales to its LR within ε.

Pro-PULSE's encoders answer in one pass (~5 ms on the toy domain) but meet PULSE's consistency
criterion ||DS(SR) - LR||² <= ε (PULSE Sec. 3, Eq. (5); :class:`~lit_propulse.losses.pulse.DownscaleLoss`)
only for a few images; PULSE meets it for every image after ~100 generator steps from a random start.
Starting PULSE's kind of search at the encoder's w+ (and noise) needs far fewer steps. Two variants
(:class:`RefineConfig`):

* ``"sphere"`` — PULSE's spherical search (PULSE Sec. 3.2, App. B 2.3, 2.4) around the encoder's code:
  each w+ row is mapped to PULSE's latent space by the Gaussian fit's inverse
  (:meth:`~lit_propulse.pulse.fit.GaussianFit.to_latent`), optimised with Adam on
  ``downscale_weight·L_DS + geocross_weight·GEOCROSS`` and projected after every step back onto
  its sphere; the radius is the row's own (the encoder's code is rarely on √d·S^{d-1}, and the
  official code too kept each tensor's initial radius).
* ``"wplus"`` — Adam directly in W+ on ``downscale_weight·L_DS + prior_weight·mean_i ||w_i - w0_i||²``,
  the prior keeping each row near the encoder's row w0_i; with ``radius`` also projected gradient
  (every row kept within that distance of w0_i).

Noise: the encoder's noise maps (the generator's stored maps); the first ``noise_trainable`` may be
optimised too, each projected back onto its own sphere (PULSE App. B 2.5).

Stopping is per image: at every evaluation an image whose L_DS (of the clamped output, as the metric
suite scores it) is <= ε is finished and leaves the batch, so easy images cost one evaluation and the
batch shrinks as it goes. Adam's state is per image (its own step count), so an image's result does
not depend on the batch it is in. An image that never meets ε returns its best iterate (lowest L_DS).

:class:`RefinedUpsampler` puts the refinement behind a :class:`~lit_propulse.inference.ProPulseUpsampler`
(``upsample --refine``, :class:`~lit_propulse.evaluation.refine_method.RefineMethod`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.losses.pulse import GeoCross, downscale_l2
from lit_propulse.pulse.fit import GaussianFit

__all__ = ["VARIANT_DEFAULTS", "RefineConfig", "RefineResult", "RefinedUpsampler", "Variant", "refine", "render_fn"]

Variant = Literal["wplus", "sphere"]

#: synthesis(ws [B, num_ws, d], noise maps) -> image [B, 3, H, W]
Synthesis = Callable[[Tensor, list], Tensor]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the refinement (module docstring).

    Args:
        variant: "wplus" (Adam in W+ with a prior toward the encoder's w+) or "sphere" (PULSE's
            spherical search in its latent space around the encoder's code).
        eps: ε, the per-image success threshold on L_DS (PULSE's units: mean squared error on [0, 1]
            images); an image stops as soon as its L_DS <= ε. 2e-3 = PULSE's code and the toy
            evaluation; the paper configs use 1e-3.
        max_steps: most updates per image (0 = only evaluate the encoder's answer); 100 = PULSE's
            step count, so no image costs more than a PULSE search (most stop after a few steps).
        learning_rate: Adam's step size (W units for "wplus", PULSE latent units for "sphere").
        betas: Adam's betas ((0.5, 0.9): less momentum than Adam's usual (0.9, 0.999) took fewer
            steps on the toy domain, docs/beyond.md).
        downscale_weight: weight of L_DS in the objective (100, PULSE's).
        prior_weight: "wplus": weight of mean_i ||w_i - w0_i||² (0 = no prior).
        radius: "wplus": each row kept within this L2 distance of the encoder's row after every step
            (projected gradient); None = no projection.
        geocross_weight: "sphere": weight of GEOCROSS on the w+ rows (0.05, PULSE's; 0 = off).
        noise_trainable: how many leading noise maps are optimised too (0 = the encoder's maps kept).
    """

    variant: Variant = "wplus"
    eps: float = 2e-3
    max_steps: int = 100
    learning_rate: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    downscale_weight: float = 100.0
    prior_weight: float = 0.01
    radius: float | None = None
    geocross_weight: float = 0.05
    noise_trainable: int = 0

    def __post_init__(self) -> None:
        if self.variant not in ("wplus", "sphere"):
            raise ValueError(f"variant must be 'wplus' or 'sphere', got {self.variant!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a finite value > 0, got {self.learning_rate}")
        for name in ("downscale_weight", "prior_weight", "geocross_weight"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite value >= 0, got {v}")
        if self.radius is not None and not self.radius > 0:
            raise ValueError(f"radius must be None or > 0, got {self.radius}")
        if self.noise_trainable < 0:
            raise ValueError(f"noise_trainable must be >= 0, got {self.noise_trainable}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    @classmethod
    def for_variant(cls, variant: Variant = "wplus", **overrides) -> RefineConfig:
        """The variant with its own defaults (:data:`VARIANT_DEFAULTS`), then ``overrides``."""
        if variant not in VARIANT_DEFAULTS:
            raise ValueError(f"variant must be one of {sorted(VARIANT_DEFAULTS)}, got {variant!r}")
        return cls(variant=variant, **{**VARIANT_DEFAULTS[variant], **overrides})

    def describe(self) -> str:
        """One line for reports."""
        if self.variant == "wplus":
            prior = f"prior {self.prior_weight:g}·mean||w-w0||²" + (f", rows within {self.radius:g} of w0" if self.radius else "")
            what = f"Adam in W+ (lr {self.learning_rate:g}), {prior}"
        else:
            what = f"PULSE's spherical search around the encoder's code (Adam lr {self.learning_rate:g}, GEOCROSS {self.geocross_weight:g})"
        noise = f", first {self.noise_trainable} noise maps trainable" if self.noise_trainable else ""
        return f"refinement: {what}{noise}; stop per image at L_DS <= ε = {self.eps:g}, at most {self.max_steps} steps"


#: each variant's step size and prior (tuned on the toy domain: docs/beyond.md); :meth:`RefineConfig.for_variant`
VARIANT_DEFAULTS: dict[str, dict] = {
    "wplus": {"learning_rate": 0.1, "prior_weight": 0.01},
    "sphere": {"learning_rate": 0.13, "geocross_weight": 0.05},
}


@dataclass
class RefineResult:
    """The outcome of one batched refinement; every tensor has the batch first.

    ws: [B, num_ws, w_dim] the returned w+ (the first iterate with L_DS <= ε, else the best one).
    noise: the noise maps it was generated with ([B or 1, 1, r, r] each; None = no noise).
    image: [B, 3, H, W] its image (raw generator range).
    loss: [B] its L_DS (of the clamped image). loss_start: [B] the encoder's L_DS.
    success: [B] bool, loss <= eps. steps: [B] long, updates the image took (0 = the encoder's answer
    already met ε; max_steps for a failure). time_s: wall time of the batch. eps: the threshold.
    """

    ws: Tensor
    noise: list[Tensor | None]
    image: Tensor
    loss: Tensor
    loss_start: Tensor
    success: Tensor
    steps: Tensor
    time_s: float
    eps: float
    history: list[Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return self.ws.shape[0]

    def per_image(self) -> list[dict[str, float | int | bool]]:
        """One record per image: success, steps used, L_DS (and the encoder's)."""
        return [
            {"success": bool(ok), "steps": int(n), "l_ds": float(loss), "l_ds_encoder": float(loss0)}
            for ok, n, loss, loss0 in zip(self.success.tolist(), self.steps.tolist(), self.loss.tolist(), self.loss_start.tolist())
        ]


def render_fn(synthesis: nn.Module) -> Synthesis:
    """``synthesis(ws, noise) -> image`` of a StyleGAN2 synthesis network (``G.synthesis``)."""
    return lambda ws, noise: synthesis(ws, noise=noise).image


def _l_ds(image: Tensor, lr: Tensor) -> Tensor:
    """L_DS per image of the clamped output, what the metric suite scores: [B, 3, H, W] -> [B]."""
    return downscale_l2(downscale(image.clamp(-1, 1), tuple(lr.shape[-2:])), lr)


def _row_norm(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.square().sum(dims, keepdim=True).sqrt().clamp_min(1e-12)


class _Adam:
    """Adam (Kingma & Ba 2015) with one step count per image, on a subset of images at a time."""

    def __init__(self, param: Tensor, betas: tuple[float, float]) -> None:
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = torch.zeros(param.shape[0], device=param.device)
        self.b1, self.b2 = betas

    def step(self, param: Tensor, grad: Tensor, idx: Tensor, lr: float) -> None:
        """param[idx] -= lr · m̂ / (√v̂ + 1e-8) for the images ``idx`` (grad: [len(idx), ...])."""
        shape = (-1,) + (1,) * (param.ndim - 1)
        self.t[idx] += 1
        t = self.t[idx].view(shape)
        m = self.m[idx].mul_(self.b1).add_(grad, alpha=1 - self.b1)
        v = self.v[idx].mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        self.m[idx], self.v[idx] = m, v
        update = (m / (1 - self.b1**t)) / ((v / (1 - self.b2**t)).sqrt() + 1e-8)
        param[idx] = param[idx] - lr * update


def refine(
    synthesis: Synthesis,
    ws0: Tensor,
    lr: Tensor,
    noise0: Sequence[Tensor | None],
    config: RefineConfig,
    gaussian_fit: GaussianFit | None = None,
) -> RefineResult:
    """Refine the encoder's w+ ``ws0`` [B, num_ws, d] (with its noise maps ``noise0``) until
    ||DS(synthesis(w+)) - LR||² <= ε per image (module docstring).

    Args:
        synthesis: ``synthesis(ws, noise) -> image`` (:func:`render_fn` of ``G.synthesis``); never trained.
        ws0: the encoder's w+.
        lr: [B, 3, h, w] the LR images in [-1, 1].
        noise0: the noise maps the encoder's answer uses (e.g. ``G.synthesis.resolve_noise("const", B)``).
        config: the settings.
        gaussian_fit: the generator's Gaussian fit (PULSE App. B 2.4), required by variant "sphere".
    """
    if ws0.ndim != 3 or lr.ndim != 4 or ws0.shape[0] != lr.shape[0]:
        raise ValueError(f"expected ws0 [B, num_ws, w_dim] and lr [B, 3, h, w] with one B, got {tuple(ws0.shape)} and {tuple(lr.shape)}")
    if config.variant == "sphere" and gaussian_fit is None:
        raise ValueError("variant 'sphere' searches PULSE's latent space: give the generator's gaussian_fit (GaussianFit.load_or_fit(G))")
    if config.noise_trainable > len(noise0):
        raise ValueError(f"noise_trainable={config.noise_trainable} exceeds the {len(noise0)} noise maps")
    if any(n is None for n in noise0[: config.noise_trainable]):
        raise ValueError("a trainable noise map is None (no noise): set noise_trainable to 0 or give noise maps")
    start = time.perf_counter()
    cfg, B = config, ws0.shape[0]
    with torch.inference_mode(False), torch.no_grad():
        # (clones: inputs made under inference mode, e.g. by a Lightning test loop, cannot be saved for backward)
        ws0 = ws0.detach().float().clone()
        lr = lr.detach().float().clone()
        noise = [None if n is None else n.detach().clone() for n in noise0]
        k = cfg.noise_trainable
        noise[:k] = [n.expand(B, -1, -1, -1).clone() for n in noise[:k]]  # per image: [B, 1, r, r]
        noise_radius = [_row_norm(n, (1, 2, 3)) for n in noise[:k]]
        if cfg.variant == "sphere":
            param = gaussian_fit.to_latent(ws0)  # [B, num_ws, d]
            radius = _row_norm(param, (-1,))  # [B, num_ws, 1]
            to_ws = gaussian_fit.to_w
            geocross = GeoCross()
        else:
            param = ws0.clone()
            to_ws = lambda p: p  # noqa: E731
        adams = [_Adam(param, cfg.betas)] + [_Adam(n, cfg.betas) for n in noise[:k]]

        best_loss = torch.full((B,), math.inf, device=ws0.device)
        best_ws, best_image = ws0.clone(), None
        best_noise = [None if n is None else n.clone() for n in noise]
        steps = torch.full((B,), cfg.max_steps, dtype=torch.long, device=ws0.device)
        loss_start = torch.zeros(B, device=ws0.device)
        active = torch.arange(B, device=ws0.device)
        history: list[Tensor] = []
        for step in range(cfg.max_steps + 1):
            with torch.enable_grad():
                p = param[active].requires_grad_(True)
                trainable = [n[active].requires_grad_(True) for n in noise[:k]]
                maps = trainable + [None if n is None else n[active] if n.shape[0] > 1 else n for n in noise[k:]]
                ws = to_ws(p)  # [b, num_ws, d]
                image = synthesis(ws, maps)  # [b, 3, H, W]
                l_ds = _l_ds(image.detach(), lr[active])  # [b], the criterion
                history.append(l_ds.detach().clone())
                if step == 0:
                    loss_start[active] = l_ds
                better = l_ds < best_loss[active]
                ids = active[better]
                best_loss[ids] = l_ds[better]
                best_ws[ids] = ws.detach()[better]
                if best_image is None:
                    best_image = torch.zeros((B,) + tuple(image.shape[1:]), device=image.device, dtype=image.dtype)
                best_image[ids] = image.detach()[better]
                for i in range(len(noise)):
                    if best_noise[i] is not None and best_noise[i].shape[0] > 1:
                        best_noise[i][ids] = maps[i].detach()[better]
                done = l_ds <= cfg.eps
                steps[active[done]] = step
                going = ~done
                if step == cfg.max_steps or not bool(going.any()):
                    break
                obj = cfg.downscale_weight * downscale_l2(downscale(image, tuple(lr.shape[-2:])), lr[active])  # [b]
                if cfg.variant == "wplus" and cfg.prior_weight > 0:
                    obj = obj + cfg.prior_weight * (ws - ws0[active]).square().sum(-1).mean(-1)
                if cfg.variant == "sphere" and cfg.geocross_weight > 0:
                    obj = obj + cfg.geocross_weight * geocross(ws)
                grads = torch.autograd.grad(obj[going].sum(), [p] + trainable)
            idx = active[going]
            adams[0].step(param, grads[0][going], idx, cfg.learning_rate)
            if cfg.variant == "sphere":
                param[idx] = param[idx] * (radius[idx] / _row_norm(param[idx], (-1,)))
            elif cfg.radius is not None:
                delta = param[idx] - ws0[idx]
                param[idx] = ws0[idx] + delta * (cfg.radius / _row_norm(delta, (-1,))).clamp(max=1.0)
            for i in range(k):
                adams[i + 1].step(noise[i], grads[i + 1][going], idx, cfg.learning_rate)
                noise[i][idx] = noise[i][idx] * (noise_radius[i][idx] / _row_norm(noise[i][idx], (1, 2, 3)))
            active = idx
    return RefineResult(
        ws=best_ws,
        noise=best_noise,
        image=best_image,
        loss=best_loss,
        loss_start=loss_start,
        success=best_loss <= cfg.eps,
        steps=steps,
        time_s=time.perf_counter() - start,
        eps=cfg.eps,
        history=history,
    )


class RefinedUpsampler(nn.Module):
    """A :class:`~lit_propulse.inference.ProPulseUpsampler` whose answer is refined per image (:func:`refine`)
    and rendered through G_ds (final image and side outputs). ``last`` holds the last batch's
    :class:`RefineResult` (per image: success, steps, L_DS); ``records`` every image's record since
    construction, in order (:meth:`summary` totals them).

    Args:
        upsampler: the trained Pro-PULSE (or E_W) upsampler; its noise mode must be "const".
        config: the refinement settings.
        gaussian_fit: the generator's Gaussian fit for variant "sphere"; None = loaded from / fitted
            into PULSE's cache (:meth:`GaussianFit.load_or_fit`) when first needed.
        sides: render the side outputs through G_ds (one more generator pass); False = the final
            image only, the one the refinement already made (the evaluation's fast path).
    """

    def __init__(self, upsampler: nn.Module, config: RefineConfig, gaussian_fit: GaussianFit | None = None, sides: bool = True) -> None:
        super().__init__()
        if getattr(upsampler, "noise", "const") != "const":
            raise ValueError(f"refinement starts from the encoder's deterministic answer: the upsampler's noise must be 'const', got {upsampler.noise!r}")
        self.upsampler = upsampler
        self.config = config
        self.gaussian_fit = gaussian_fit
        self.sides = sides
        self.last: RefineResult | None = None
        self.records: list[dict] = []

    # what commands and reports read from an upsampler
    @property
    def gds(self) -> nn.Module:
        return self.upsampler.gds

    @property
    def encoder(self) -> nn.Module:
        return self.upsampler.encoder

    @property
    def ew_encoder(self) -> nn.Module | None:
        return self.upsampler.ew_encoder

    @property
    def size(self) -> int:
        return self.upsampler.size

    @property
    def lr_size(self) -> int:
        return self.upsampler.lr_size

    @property
    def noise(self) -> str:
        return self.upsampler.noise

    def train(self, mode: bool = True) -> RefinedUpsampler:
        return super().train(False)  # always inference

    def fit(self) -> GaussianFit | None:
        """The Gaussian fit the "sphere" variant needs (loaded / fitted once); None for "wplus"."""
        if self.config.variant != "sphere":
            return None
        if self.gaussian_fit is None:
            with torch.inference_mode(False):
                self.gaussian_fit = GaussianFit.load_or_fit(self.gds.generator)
        return self.gaussian_fit

    def encode(self, lr: Tensor) -> Tensor:
        """The encoder's w+ refined: LR [B, 3, l, l] -> w+ [B, num_ws, w_dim] (``last`` holds the run)."""
        return self.refine(lr).ws

    def refine(self, lr: Tensor) -> RefineResult:
        """Encode, then refine (module docstring); the result is also kept in ``last``."""
        G = self.gds.generator
        with torch.no_grad():
            ws0 = self.upsampler.encode(lr)  # [B, num_ws, w_dim]
        noise0 = G.synthesis.resolve_noise("const", lr.shape[0])
        self.last = refine(render_fn(G.synthesis), ws0, lr, noise0, self.config, self.fit())
        self.records += self.last.per_image()
        return self.last

    def summary(self) -> dict[str, float | int]:
        """Totals over :attr:`records`: images, successes, mean / max steps, mean L_DS (refined and the encoder's)."""
        r = self.records
        n = len(r)
        if not n:
            return {"images": 0}
        return {
            "images": n,
            "success": sum(x["success"] for x in r),
            "steps_mean": sum(x["steps"] for x in r) / n,
            "steps_max": max(x["steps"] for x in r),
            "l_ds_mean": sum(x["l_ds"] for x in r) / n,
            "l_ds_encoder_mean": sum(x["l_ds_encoder"] for x in r) / n,
        }

    def render(self, ws: Tensor, noise: Sequence[Tensor | None] | None = None) -> ImageOutput:
        out = self.gds(ws, noise="const" if noise is None else list(noise))
        return ImageOutput(out.image, dict(out.side_images), ws)

    def forward(self, lr: Tensor) -> ImageOutput:
        res = self.refine(lr)
        if not self.sides:
            return ImageOutput(res.image, {}, res.ws)
        with torch.no_grad():
            return self.render(res.ws, res.noise)
