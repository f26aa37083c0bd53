"""The super-resolution methods of the side-by-side evaluation (Pro-PULSE Table I, Fig. 7/8).

* :class:`SRMethod`: one row of the comparison, ``upsample(batch) -> ImageOutput`` and its FLOPs per image.
* :class:`BicubicMethod`; :class:`ProPulseMethod` (E_W+ with E_W guidance, Eq. (10), or E_W alone,
  Eq. (4), from the stages' exports); :class:`PULSEMethod` (the per-image latent search of Menon et
  al. 2020, preset "corrected" or "published"; FLOPs counted as Pro-PULSE Sec. IV-B does: every
  step's forward plus a backward of 2x its forward); :class:`ModuleMethod` (any module whose
  ``forward(lr)`` returns an ``ImageOutput``).

FLOPs convention: :func:`count_flops` uses ``torch.utils.flop_counter.FlopCounterMode``, which counts
**2 FLOPs per multiply-accumulate** (FLOPs = 2 x MACs) of matmuls and convolutions only (elementwise
ops, normalisations and activations are not counted). Tools such as thop/ptflops report MACs and
often call them FLOPs; the report gives both columns (:data:`FLOPS_CONVENTION`).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.files import needs_file
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.pulse import PULSEConfig
from lit_propulse.pulse.config import PRESETS

_DEFAULT_EPS = PULSEConfig.__dataclass_fields__["eps"].default


def _preset_name(config: PULSEConfig) -> str:
    """The preset whose defining settings (returned iterate, GEOCROSS form, Gaussian-fit size) ``config`` has, else "custom"."""
    for name, p in PRESETS.items():
        if (config.keep, config.loss.geocross_unit_vectors, config.gaussian_fit_samples) == (p.keep, p.loss.geocross_unit_vectors, p.gaussian_fit_samples):
            return name
    return "custom"


__all__ = ["FLOPS_CONVENTION", "BicubicMethod", "ModuleMethod", "PULSEMethod", "ProPulseMethod", "SRMethod", "clamp_output", "count_flops", "item"]

#: How FLOPs are counted (printed in the report's header).
FLOPS_CONVENTION = (
    "FLOPs = 2 x MACs (multiply-accumulates) of matmuls and convolutions, counted by torch.utils.flop_counter.FlopCounterMode "
    "on one image; elementwise ops not counted; MACs = FLOPs / 2. PULSE: steps x (forward + backward counted as 2 x forward), "
    "as Pro-PULSE Sec. IV-B counts it (DeepSpeed's convention)"
)


def clamp_output(out: ImageOutput) -> ImageOutput:
    """The final image and every side output clamped to [-1, 1] (what the metrics score)."""
    return ImageOutput(out.image.clamp(-1, 1), {r: v.clamp(-1, 1) for r, v in out.side_images.items()}, out.ws)


def item(batch: SRBatch, i: int) -> SRBatch:
    """The batch's image ``i`` as a batch of one."""
    attrs = None if batch.attrs is None else batch.attrs[i : i + 1]
    return SRBatch(hr=batch.hr[i : i + 1], lr=batch.lr[i : i + 1], index=batch.index[i : i + 1], name=list(batch.name[i : i + 1]), attrs=attrs)


def first_item(batch: SRBatch) -> SRBatch:
    """The batch's first image as a batch of one."""
    return item(batch, 0)


def count_flops(upsample, batch: SRBatch) -> float:
    """FLOPs (= 2 x MACs, :data:`FLOPS_CONVENTION`) of ``upsample(one)`` on the batch's first image."""
    one = first_item(batch)
    with FlopCounterMode(display=False) as counter:
        upsample(one)
    return float(counter.get_total_flops())


class SRMethod(nn.Module, abc.ABC):
    """One super-resolution method of the comparison.

    Args:
        name: its row label in the report (e.g. "Pro-PULSE", "E_W", "PULSE", "bicubic"); no "/" or ".".
    """

    #: False for methods that optimise per image (no warm-up run before timing: it would double the cost)
    feedforward: bool = True
    #: put the method's side outputs into the report's grid and strip
    show_sides: bool = False

    def __init__(self, name: str) -> None:
        super().__init__()
        if not name or "/" in name or "." in name:
            raise ValueError(f"method name must be non-empty without '/' or '.', got {name!r}")
        self.name = name

    def prepare(self) -> None:
        """Once before the first batch, on the evaluation device (e.g. PULSE's Gaussian fit)."""

    def bind_eps(self, eps: float) -> None:
        """Use the metric suite's ε (the success threshold on L_DS) wherever the method itself uses one
        (PULSE's search); called by :class:`~lit_propulse.evaluation.module.EvaluationModule`."""

    def settings(self) -> str:
        """One line naming the method's settings in the report ("" = nothing to say)."""
        return ""

    def merge_processes(self, gather: Callable[[Any], list[Any]]) -> None:
        """After a multi-process evaluation, before :meth:`settings` summarises the run: merge what this
        process recorded per image with the other processes' (``gather(obj)`` returns every process's
        ``obj``, in rank order). Nothing to merge by default."""

    @abc.abstractmethod
    def upsample(self, batch: SRBatch) -> ImageOutput:
        """SR of ``batch.lr`` at the size of ``batch.hr``; may use ``batch.index`` (seeds), never ``batch.hr``'s pixels."""

    def flops_per_image(self, batch: SRBatch) -> float:
        """FLOPs (= 2 x MACs) of upsampling one image (counted on the batch's first item)."""
        return count_flops(self.upsample, batch)


class BicubicMethod(SRMethod):
    """Bicubic upsampling of the LR (a = -0.75 as ``F.interpolate``), clamped to [-1, 1]."""

    def __init__(self, name: str = "bicubic") -> None:
        super().__init__(name)

    def upsample(self, batch: SRBatch) -> ImageOutput:
        size = batch.hr.shape[-2:]
        return ImageOutput(F.interpolate(batch.lr.float(), size=size, mode="bicubic", align_corners=False).clamp(-1, 1))


_STAGE_SOURCE = "written by that Pro-PULSE stage (python -m lit_propulse fit --config experiments/<stage>.yaml, or the pipeline)"


@needs_file("gds", "the G_ds export (gds.pt)", _STAGE_SOURCE)
@needs_file("encoder", "an encoder export (ew.pt or ewplus.pt)", _STAGE_SOURCE)
@needs_file("ew", "the E_W export (ew.pt)", _STAGE_SOURCE)
class ProPulseMethod(SRMethod):
    """Pro-PULSE (E_W+ with E_W guidance, Eq. (10)) or the E_W-only model (Eq. (4)), from stage exports.

    Args:
        name: row label.
        gds: the G_ds export (gds.pt).
        encoder: ewplus.pt (Pro-PULSE) or ew.pt (E_W only).
        ew: ew.pt, the guidance of an E_W+ (None for E_W only, or E_W+ with ``guidance="latent_avg"``).
        guidance: "ew" (the paper) or "latent_avg".
        show_sides: put its side outputs into the report's grid.
    """

    def __init__(
        self,
        name: str,
        gds: str,
        encoder: str,
        ew: str | None = None,
        guidance: Literal["ew", "latent_avg"] = "ew",
        show_sides: bool = True,
    ) -> None:
        super().__init__(name)
        from lit_propulse.inference import ProPulseUpsampler

        self.upsampler = ProPulseUpsampler.from_files(gds, encoder, ew=ew, guidance=guidance)
        self.show_sides = show_sides

    def upsample(self, batch: SRBatch) -> ImageOutput:
        return clamp_output(self.upsampler(batch.lr.float()))


@needs_file(
    "generator",
    "the StyleGAN2 checkpoint PULSE searches",
    "the same generator Pro-PULSE uses (e.g. stylegan2-ffhq-config-f.pt in the rosinality/stylegan2-pytorch layout, or lit_propulse/data/toy_stylegan2_64.pt)",
)
class PULSEMethod(SRMethod):
    """PULSE (Menon et al. 2020): one search per LR, seeded by the dataset index.

    One ε: the search's ε (success threshold and L_DS floor, :class:`~lit_propulse.pulse.PULSEConfig`)
    is the metric suite's, which scores its success rate; the evaluation module binds it
    (:meth:`bind_eps`). A different ε set here on purpose (``eps``, or a non-default ``config.eps``)
    is refused there, naming both values.

    Args:
        name: row label.
        generator: StyleGAN2 checkpoint (the one Pro-PULSE uses).
        preset: "corrected" (ours: the best iterate by L_DS, GEOCROSS on unit vectors, a 100k-sample
            Gaussian fit) or "published" (the official code: the last iterate, GEOCROSS on the raw W
            rows, a 1M-sample fit); see :data:`lit_propulse.pulse.config.PRESETS`. Named in the report.
        config: every PULSE setting (:class:`lit_propulse.pulse.PULSEConfig`); None = the preset's.
            Given, it replaces the preset (``preset`` must then stay "corrected").
        eps: ε; None = the metric suite's (or ``config.eps`` outside an evaluation module).
        steps: search steps; None = the preset's / config's (100).
        cache_dir: Gaussian-fit cache (None = the default cache directory).
        seed: base seed of the searches' initialisations (each image's own seed mixes it with the image's
            dataset index); None = the run's ``seed_everything`` when one is set (so ``pipeline --seeds``
            varies PULSE's initialisations as it varies the encoders' training), else the config's (0).
    """

    feedforward = False

    def __init__(
        self,
        name: str,
        generator: str,
        preset: Literal["corrected", "published"] = "corrected",
        config: PULSEConfig | None = None,
        eps: float | None = None,
        steps: int | None = None,
        cache_dir: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(name)
        from lit_propulse.networks.stylegan2 import Generator
        from lit_propulse.pulse import PULSE, GaussianFit

        if config is not None and preset != "corrected":
            raise ValueError(f"PULSEMethod {name!r}: give either preset={preset!r} or a config, not both")
        base = config if config is not None else PULSEConfig.preset(preset)
        overrides = {k: v for k, v in (("eps", eps), ("steps", steps), ("seed", seed)) if v is not None}
        self._seed_from_run = seed is None
        self.config = replace(base, **overrides)
        self.preset = _preset_name(self.config)
        self._eps_set = eps is not None or (config is not None and config.eps != _DEFAULT_EPS)
        self.cache_dir = cache_dir
        G = Generator.from_checkpoint(generator)
        self.pulse = PULSE(G, GaussianFit(G.w_dim), self.config)
        self._ready = False

    def bind_eps(self, eps: float) -> None:
        if float(eps) == self.config.eps:
            return
        if self._eps_set:
            raise ValueError(
                f"PULSEMethod {self.name!r}: its search uses eps={self.config.eps} but the metric suite scores success at eps={eps}; "
                "one ε serves both: set it once, as metrics.init_args.eps, and leave the method's eps out"
            )
        from lit_propulse.pulse import PULSE

        self.config = replace(self.config, eps=float(eps))
        fit = self.pulse.gaussian_fit
        self.pulse = PULSE(self.pulse.generator, fit, self.config)

    def settings(self) -> str:
        c = self.config
        keep = "best iterate by L_DS" if c.keep == "best" else "last iterate"
        gc = "GEOCROSS on unit vectors" if c.loss.geocross_unit_vectors else "GEOCROSS on the raw W rows"
        return f"PULSE preset '{self.preset}': {keep}, {gc}, Gaussian fit of {c.gaussian_fit_samples:,} z, {c.steps} steps, ε = {c.eps:g}, seed {c.seed}"

    def prepare(self) -> None:
        if self._ready:
            return
        from lit_propulse.pulse import PULSE, GaussianFit

        run_seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything (the CLI's --seed_everything)
        if self._seed_from_run and run_seed is not None and int(run_seed) != self.config.seed:
            self.config = replace(self.config, seed=int(run_seed))
            self.pulse = PULSE(self.pulse.generator, self.pulse.gaussian_fit, self.config)

        with torch.inference_mode(False):
            G = self.pulse.generator
            fit = GaussianFit.load_or_fit(G, self.cache_dir, self.config.gaussian_fit_samples, self.config.gaussian_fit_seed)
            self.pulse.gaussian_fit.mean.copy_(fit.mean.to(G.latent_avg.device))
            self.pulse.gaussian_fit.std.copy_(fit.std.to(G.latent_avg.device))
        self._ready = True

    def upsample(self, batch: SRBatch) -> ImageOutput:
        self.prepare()
        res = self.pulse.sample(batch.lr, 1, keys=[int(i) for i in batch.index.tolist()])
        return ImageOutput(res.image.clamp(-1, 1))

    def flops_per_image(self, batch: SRBatch) -> float:
        """``steps`` x (forward + backward counted as 2x forward) of one search step (Pro-PULSE Sec. IV-B)."""
        self.prepare()
        one = first_item(batch)
        pulse = self.pulse
        with torch.inference_mode(False), torch.enable_grad():  # as in the search itself
            latent, noise = pulse.initial_state([0], pulse.generator.latent_avg.device)
            with FlopCounterMode(display=False) as counter:
                per_layer, ws = pulse.latent_to_ws(latent)
                image = pulse.generator.synthesis(ws, noise=noise).image
                pulse.loss(image, one.lr.float().clone(), ws if pulse.config.loss.geocross_on == "w" else per_layer)
        return float(counter.get_total_flops()) * 3 * self.config.steps


class ModuleMethod(SRMethod):
    """A module whose ``forward(lr)`` returns an :class:`ImageOutput` (the Pro-PULSE stage modules) as an
    SRMethod. Holds the module without registering it (no parameter cycle when the module holds this).

    Args:
        name: row label.
        module: the module to call.
        show_sides: put its side outputs into the report's grid.
    """

    def __init__(self, name: str, module: nn.Module, show_sides: bool = True) -> None:
        super().__init__(name)
        self.__dict__["_module"] = module
        self.show_sides = show_sides

    def upsample(self, batch: SRBatch) -> ImageOutput:
        return clamp_output(self._module(batch.lr))
