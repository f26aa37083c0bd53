"""Finite or failed: a run whose loss or weights stop being finite stops at once, by name.

A stage whose loss went to inf/NaN (``lr 1e9``) used to finish with exit 0 and write an export and a
``.done`` marker full of NaNs. :class:`FiniteGuard` checks every logged loss term after each
training step and the weights every ``weights_every`` steps; the first non-finite value raises
:class:`~lit_propulse.core.errors.DivergedError` naming the step and the term. Lightning saves no
checkpoint after the exception, so the last good checkpoint stays ``last.ckpt``; the stage's export
callback writes nothing (it checks the weights too) and no ``.done`` marker is written.
The CLI attaches it to every ``fit``.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from lit_propulse.core.errors import DivergedError
from lit_propulse.core.weights import nonfinite


class FiniteGuard(pl.Callback):
    """Stop training at the first non-finite loss term or weight.

    Args:
        prefix: logged metrics whose name starts with one of these are loss terms ("loss" matches
            ``loss``, ``loss/rec``, ``loss/D/r1``...).
        weights_every: also check every trainable weight every N steps (0 = only at the end of fit).
    """

    def __init__(self, prefix: tuple[str, ...] = ("loss",), weights_every: int = 50) -> None:
        super().__init__()
        self.prefix, self.weights_every = tuple(prefix), int(weights_every)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        for name, value in trainer.callback_metrics.items():
            if name.startswith(self.prefix) and isinstance(value, (torch.Tensor, float)):
                v = float(value)
                if not math.isfinite(v):
                    raise DivergedError(
                        f"training diverged at step {step}: {name} = {v}; the last good checkpoint is kept, no export or .done marker was written (lower the learning rate or the loss weights)"
                    )
        if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor) and not bool(torch.isfinite(outputs["loss"]).all()):
            raise DivergedError(
                f"training diverged at step {step}: the training loss is {float(outputs['loss'])}; the last good checkpoint is kept, no export or .done marker was written"
            )
        if self.weights_every and step % self.weights_every == 0:
            self.check_weights(pl_module, f"at step {step}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_weights(pl_module, "at the end of training")

    @staticmethod
    def check_weights(pl_module: pl.LightningModule, when: str) -> None:
        bad = nonfinite({n: p for n, p in pl_module.named_parameters() if p.requires_grad})
        if bad:
            raise DivergedError(
                f"training diverged {when}: {len(bad)} weights are not finite, e.g. {bad[:3]}; the last good checkpoint is kept, no export or .done marker was written"
            )
