"""The progressive schedule of E_W+ (Pro-PULSE Sec. III-E, Eq. (10)) as a Callback with its own state.

Scales r_i run from 2x the LR size to the output size (32, 64, ..., 1024 for 16 -> 1024); at scale
r_i the module's :meth:`set_active_scale` makes the w+ rows of the layers up to r_i come from E_W+.
Each scale lasts ``steps_per_scale`` training batches (10k in the paper, 60k in all for 16 -> 1024).
The state (scale index, batches done in it) is checkpointed, so a run killed mid-scale and resumed
with ``--ckpt_path`` continues at the same scale and step; the schedule depends on nothing else,
so every DDP rank follows the same one.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class ProgressiveScaleCallback(pl.Callback):
    """The CLI attaches one to every run under the top-level key ``progressive:``; it does nothing for
    modules without progressive scales (G_ds, E_W).

    Args:
        steps_per_scale: training batches per scale (10000 in the paper).
        scales: the scales to run, a subset of the module's progressive scales in increasing order;
            None = all of them (2x LR ... output size).
        direct: the "E_W+ direct" ablation (Sec. IV-G): only the output scale, i.e. every w+ row
            from E_W+ from the first step, for as many steps as the whole schedule would take
            (equal iterations); ``scales`` must then be None.
        stop_at_end: stop training once the last scale has had its steps.
    """

    def __init__(self, steps_per_scale: int = 10_000, scales: list[int] | None = None, direct: bool = False, stop_at_end: bool = True) -> None:
        super().__init__()
        if steps_per_scale < 1:
            raise ValueError(f"steps_per_scale must be >= 1, got {steps_per_scale}")
        if scales is not None and (not scales or sorted(set(scales)) != list(scales)):
            raise ValueError(f"scales must be a non-empty increasing list, got {scales}")
        if direct and scales is not None:
            raise ValueError(f"direct=True runs the output scale only; scales must be None, got {scales}")
        self.direct = direct
        self.steps_per_scale = int(steps_per_scale)
        self.requested_scales = None if scales is None else [int(s) for s in scales]
        self.stop_at_end = stop_at_end
        self.scale_index = 0
        self.step_in_scale = 0
        self.scales: list[int] = []
        self._steps = self.steps_per_scale

    @staticmethod
    def applies_to(pl_module: pl.LightningModule) -> bool:
        return hasattr(pl_module, "set_active_scale") and hasattr(pl_module, "scales")

    def _resolve(self, pl_module: pl.LightningModule) -> None:
        available = list(pl_module.scales)
        scales = self.requested_scales or available
        if self.direct:
            scales = [available[-1]]
            self._steps = self.steps_per_scale * len(available)
        else:
            self._steps = self.steps_per_scale
        bad = [s for s in scales if s not in available]
        if bad:
            raise ValueError(f"progressive scales {bad} are not among the module's scales {available}")
        self.scales = scales
        self.scale_index = min(self.scale_index, len(scales) - 1)

    @property
    def current_scale(self) -> int:
        return self.scales[self.scale_index]

    @property
    def total_steps(self) -> int:
        return self._steps * len(self.scales)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.applies_to(pl_module):
            return
        self._resolve(pl_module)
        pl_module.set_active_scale(self.current_scale)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.applies_to(pl_module):
            return
        pl_module.set_active_scale(self.current_scale)
        pl_module.log("progressive/scale", float(self.current_scale), on_step=True, on_epoch=False, prog_bar=True, batch_size=1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.applies_to(pl_module):
            return
        self.step_in_scale += 1
        if self.step_in_scale < self._steps:
            return
        if self.scale_index + 1 < len(self.scales):
            self.scale_index += 1
            self.step_in_scale = 0
            pl_module.set_active_scale(self.current_scale)
        elif self.stop_at_end:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"scale_index": self.scale_index, "step_in_scale": self.step_in_scale, "scales": list(self.scales)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scale_index = int(state_dict["scale_index"])
        self.step_in_scale = int(state_dict["step_in_scale"])
        saved = state_dict.get("scales") or []
        if self.requested_scales is None and saved:
            self.requested_scales = [int(s) for s in saved]
