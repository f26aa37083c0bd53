"""CosineRestartLR (lit_propulse/callbacks/lr_schedule.py): the analytic cosine with restarts, keyed on
``trainer.global_step``; in a toy E_W run through the CLI (the way experiments/toy/long.yaml adds it) it
sets the encoder's rate only, and a run resumed from a checkpoint continues the same curve."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lit_propulse.callbacks.lr_schedule import CosineRestartLR, cosine_restart_lr
from tests.test_propulse_stages import TOY, encoder_args, fit, read_metrics, run_dir_args

BASE, FLOOR, PERIOD = 1e-3, 1e-4, 4


def expected(steps: range) -> list[float]:
    """1e-3 -> 1e-4 over 4 steps, then a restart (written out, not through the module under test)."""
    return [FLOOR + (BASE - FLOOR) * 0.5 * (1 + math.cos(math.pi * (t % PERIOD) / PERIOD)) for t in steps]


def test_the_analytic_curve_restarts_every_period():
    want = expected(range(9))
    assert want[0] == pytest.approx(1e-3) and want[2] == pytest.approx(5.5e-4) and want[4] == pytest.approx(1e-3)
    assert [cosine_restart_lr(BASE, t, PERIOD, 0.1) for t in range(9)] == pytest.approx(want)
    groups = [{"lr": BASE}, {"lr": 2 * BASE}]
    trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=groups), SimpleNamespace(param_groups=[{"lr": 7.0}])], global_step=0)
    module = SimpleNamespace(log=lambda *a, **k: None)
    cb = CosineRestartLR(PERIOD, min_ratio=0.1)
    cb.on_fit_start(trainer, module)
    seen = []
    for t in range(9):
        trainer.global_step = t
        cb.on_train_batch_start(trainer, module, None, t)
        seen.append((groups[0]["lr"], groups[1]["lr"]))
    assert [a for a, _ in seen] == pytest.approx(want)
    assert [b for _, b in seen] == pytest.approx([2 * x for x in want])  # each group from its own base
    assert trainer.optimizers[1].param_groups[0]["lr"] == 7.0  # another optimizer (the critic) untouched


def test_the_base_rates_are_its_state_and_bad_values_are_refused():
    trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": BASE}])], global_step=2)
    module = SimpleNamespace(log=lambda *a, **k: None)
    cb = CosineRestartLR(PERIOD, min_ratio=0.1)
    cb.on_fit_start(trainer, module)
    cb.on_train_batch_start(trainer, module, None, 0)
    state = cb.state_dict()
    assert state == {"base_lrs": [BASE]}
    resumed = CosineRestartLR(PERIOD, min_ratio=0.1)
    resumed.load_state_dict(state)
    resumed.on_fit_start(trainer, module)  # the optimizer now holds the decayed 5.5e-4, not the base
    trainer.global_step = 3
    resumed.on_train_batch_start(trainer, module, None, 0)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected(range(4))[3])
    for bad in ({"period": 0}, {"period": 4, "min_ratio": 1.5}, {"period": 4, "min_ratio": -0.1}):
        with pytest.raises(ValueError, match="period >= 1 and min_ratio in"):
            CosineRestartLR(**bad)
    with pytest.raises(ValueError, match="optimizer_index 1 but the module has 1"):
        CosineRestartLR(PERIOD, optimizer_index=1).on_fit_start(trainer, module)


def lr_by_step(run) -> dict[int, float]:
    return {int(r["step"]): float(r["train/lr"]) for r in read_metrics(run) if r.get("train/lr")}


def test_in_a_toy_ew_run_and_across_a_resume(stages, tmp_path):
    """The toy E_W YAML (with its critic) plus ``--trainer.callbacks+``, as long.yaml adds it: steps 0..5
    follow the curve, the critic keeps d_lr; stopped after 3 steps and resumed, steps 3..5 are the same."""
    common = [
        *encoder_args("ew", stages),
        "--model.init_args.lr=1e-3",
        "--model.init_args.d_lr=2e-4",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks+=lit_propulse.callbacks.lr_schedule.CosineRestartLR",
        f"--trainer.callbacks.period={PERIOD}",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp_path / 'ck'}",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.every_n_train_steps=1",
    ]
    fit(TOY / "ew.yaml", *common, "--trainer.max_steps=6", *run_dir_args(tmp_path / "whole"))
    whole = lr_by_step(tmp_path / "whole")
    assert sorted(whole) == list(range(6)) and [whole[t] for t in range(6)] == pytest.approx(expected(range(6)))
    ck = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False, map_location="cpu")
    assert [s["param_groups"][0]["lr"] for s in ck["optimizer_states"]] == pytest.approx([expected(range(6))[5], 2e-4])
    assert next(v for k, v in ck["callbacks"].items() if "CosineRestartLR" in k) == {"base_lrs": [pytest.approx(1e-3)]}

    (tmp_path / "ck" / "last.ckpt").unlink()
    fit(TOY / "ew.yaml", *common, "--trainer.max_steps=3", *run_dir_args(tmp_path / "a"))
    fit(TOY / "ew.yaml", *common, "--trainer.max_steps=6", "--ckpt_path", str(tmp_path / "ck" / "last.ckpt"), *run_dir_args(tmp_path / "b"))
    resumed = lr_by_step(tmp_path / "b")
    assert sorted(resumed) == [3, 4, 5] and [resumed[t] for t in (3, 4, 5)] == pytest.approx(expected(range(3, 6)))
