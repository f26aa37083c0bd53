"""Pro-PULSE refined to PULSE's consistency criterion, as a row of the comparison:
:class:`RefineMethod` (:mod:`lit_propulse.refine`: the encoder's w+ optimised per image until
L_DS <= ε, PULSE Sec. 3 Eq. (5))."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.files import needs_file
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.methods import SRMethod, clamp_output, first_item
from lit_propulse.refine import RefineConfig, RefinedUpsampler

__all__ = ["RefineMethod"]

_STAGE_SOURCE = "written by that Pro-PULSE stage (python -m lit_propulse fit --config experiments/<stage>.yaml, or the pipeline)"


@needs_file("gds", "the G_ds export (gds.pt)", _STAGE_SOURCE)
@needs_file("encoder", "an encoder export (ew.pt or ewplus.pt)", _STAGE_SOURCE)
@needs_file("ew", "the E_W export (ew.pt)", _STAGE_SOURCE)
class RefineMethod(SRMethod):
    """Pro-PULSE (or E_W) from stage exports, its w+ refined per image (:class:`~lit_propulse.refine.RefinedUpsampler`).

    One ε, as for PULSE: the refinement stops at the metric suite's ε (bound by the evaluation
    module, :meth:`bind_eps`); ``config.eps`` is only used outside one. Per-image records (success,
    steps, L_DS) are kept in :attr:`records` by dataset index (an image timed or FLOP-counted again is
    counted once); :meth:`settings` summarises them in the report. FLOPs per image follow PULSE's
    convention (:data:`~lit_propulse.evaluation.methods.FLOPS_CONVENTION`): the encoder's pass plus one
    generator forward per evaluation and a backward (2x a forward) per step, for the steps the first
    test image took (the report's settings line gives every image's).

    Args:
        name: row label.
        gds: the G_ds export (gds.pt).
        encoder: ewplus.pt (Pro-PULSE) or ew.pt (E_W only).
        ew: ew.pt, the guidance of an E_W+ (None for E_W only).
        guidance: "ew" (the paper) or "latent_avg".
        config: the refinement settings (variant, steps, learning rate, prior).
        show_sides: render its side outputs through G_ds (one more generator pass per image) and put
            them into the report's grid; False (default) = the final image only.
    """

    feedforward = False  # optimises per image: no warm-up run before timing

    def __init__(
        self,
        name: str,
        gds: str,
        encoder: str,
        ew: str | None = None,
        guidance: Literal["ew", "latent_avg"] = "ew",
        config: RefineConfig | None = None,
        show_sides: bool = False,
    ) -> None:
        super().__init__(name)
        from lit_propulse.inference import ProPulseUpsampler

        base = ProPulseUpsampler.from_files(gds, encoder, ew=ew, guidance=guidance)
        self.refined = RefinedUpsampler(base, config if config is not None else RefineConfig(), sides=show_sides)
        self.show_sides = show_sides
        self.records: dict[int, dict] = {}  # dataset index -> {success, steps, l_ds, l_ds_encoder}

    @property
    def config(self) -> RefineConfig:
        return self.refined.config

    def bind_eps(self, eps: float) -> None:
        self.refined.config = replace(self.refined.config, eps=float(eps))

    def prepare(self) -> None:
        self.refined.fit()  # the "sphere" variant's Gaussian fit, once

    def settings(self) -> str:
        line = self.config.describe()
        if self.records:
            n = len(self.records)
            ok = sum(r["success"] for r in self.records.values())
            steps = sorted(r["steps"] for r in self.records.values())
            line += f"; {ok}/{n} images met ε, steps per image mean {sum(steps) / n:.2f}, median {steps[n // 2]}, max {steps[-1]}"
        return line

    def merge_processes(self, gather) -> None:
        """Every process's per-image records (each image is evaluated by one process), so the settings
        line counts all test images under DDP."""
        merged: dict[int, dict] = {}
        for part in gather(self.records):
            merged.update(part)
        self.records = merged

    def flops_per_image(self, batch: SRBatch) -> float:
        """encoder + synthesis x (1 + 3 x steps) (+ one G_ds render with ``show_sides``) on the batch's
        first image; counting the refinement itself under FlopCounterMode is not possible (its
        ``autograd.grad`` trips the counter's backward hooks)."""
        lr = first_item(batch).lr.float()
        steps = int(self.refined.refine(lr).steps[0])
        up, G = self.refined.upsampler, self.refined.gds.generator
        with torch.no_grad():
            with FlopCounterMode(display=False) as enc:
                ws = up.encode(lr)  # [1, num_ws, w_dim]
            with FlopCounterMode(display=False) as syn:
                G.synthesis(ws, noise="const")
            with FlopCounterMode(display=False) as sides:
                if self.show_sides:
                    self.refined.render(ws)
        return float(enc.get_total_flops() + syn.get_total_flops() * (1 + 3 * steps) + sides.get_total_flops())

    def upsample(self, batch: SRBatch) -> ImageOutput:
        out = self.refined(batch.lr.float())
        self.records.update(zip((int(i) for i in batch.index.tolist()), self.refined.last.per_image()))
        return clamp_output(out)
