"""A cosine learning-rate decay with warm restarts (SGDR, Loshchilov & Hutter 2017) as a Callback.

Neither paper decays the encoders' rate (Pro-PULSE Sec. IV-A: Adam, 1e-4, constant); this is our option
for the long toy schedules (docs/toy-domain.md#critic-stability), where the constant rate lets the
validation L_rec rise again after ~1,500 E_W steps. The rate at encoder step t is

    lr_t = floor + (base - floor) * (1 + cos(pi * (t mod P) / P)) / 2,   floor = base * min_ratio,

so it falls from the optimizer's configured rate to ``min_ratio`` of it over P steps, then restarts: with
P = max_steps for E_W, and P = steps_per_scale for E_W+ (each new progressive scale starts at the full
rate, since the scales change every P global steps). t is ``trainer.global_step``, which counts encoder
steps in the encoder stages (the critic steps its raw optimizer), so a run resumed with ``--ckpt_path``
continues the same curve. The configured base rates are the callback's state: a resumed optimizer
carries the decayed rate of its last step, not the base.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl


def cosine_restart_lr(base: float, step: int, period: int, min_ratio: float) -> float:
    """The rate at ``step``: a cosine from ``base`` to ``base * min_ratio`` over ``period`` steps, restarting."""
    floor = base * min_ratio
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * (step % period) / period))


class CosineRestartLR(pl.Callback):
    """Sets the learning rate of one optimizer's param groups before every training batch.

    Args:
        period: P, steps per cosine (then a restart); >= 1.
        min_ratio: the floor as a fraction of each group's configured rate, in [0, 1].
        optimizer_index: which of ``trainer.optimizers`` to schedule (0 = the encoder in the encoder
            stages; the critic's rate stays its own).
        log_name: the key the current rate is logged under (None = not logged).
    """

    def __init__(self, period: int, min_ratio: float = 0.1, optimizer_index: int = 0, log_name: str | None = "train/lr") -> None:
        super().__init__()
        if period < 1 or not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"CosineRestartLR needs period >= 1 and min_ratio in [0, 1], got {period}, {min_ratio}")
        self.period = int(period)
        self.min_ratio = float(min_ratio)
        self.optimizer_index = int(optimizer_index)
        self.log_name = log_name
        self.base_lrs: list[float] | None = None

    def _groups(self, trainer: pl.Trainer) -> list[dict]:
        optimizers = trainer.optimizers
        if self.optimizer_index >= len(optimizers):
            raise ValueError(f"CosineRestartLR: optimizer_index {self.optimizer_index} but the module has {len(optimizers)} optimizer(s)")
        return optimizers[self.optimizer_index].param_groups

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        groups = self._groups(trainer)
        if self.base_lrs is None:  # a fresh run: the configured rates; a resumed one keeps its saved ones
            self.base_lrs = [float(g["lr"]) for g in groups]
        elif len(self.base_lrs) != len(groups):
            raise ValueError(f"CosineRestartLR: the checkpoint has {len(self.base_lrs)} param groups, the optimizer {len(groups)}")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        groups = self._groups(trainer)
        for group, base in zip(groups, self.base_lrs):
            group["lr"] = cosine_restart_lr(base, trainer.global_step, self.period, self.min_ratio)
        if self.log_name:
            pl_module.log(self.log_name, groups[0]["lr"], on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("base_lrs")
        self.base_lrs = None if saved is None else [float(x) for x in saved]
