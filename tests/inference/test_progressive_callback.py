"""The progressive schedule of E_W+ as a callback (Pro-PULSE Sec. III-E; lit_propulse/callbacks/progressive.py):
its arguments, what it logs, which modules it drives, and its checkpointed state (a run resumed with
``--ckpt_path`` follows the scales it was started with, unless the resumed run names its own)."""

from __future__ import annotations

import types

import pytest

from lit_propulse.callbacks.progressive import ProgressiveScaleCallback


class _Module:
    """What the callback drives: the module's progressive scales and its active one."""

    scales = [16, 32, 64]

    def __init__(self) -> None:
        self.active: list[int] = []
        self.logged: list[tuple] = []

    def set_active_scale(self, s: int) -> None:
        self.active.append(s)

    def log(self, *args, **kwargs) -> None:
        self.logged.append((args, kwargs))


def _run(cb: ProgressiveScaleCallback, module: _Module, steps: int) -> list[int]:
    trainer = types.SimpleNamespace(should_stop=False)
    cb.on_fit_start(trainer, module)
    seen = []
    for i in range(steps):
        if trainer.should_stop:
            break
        cb.on_train_batch_start(trainer, module, None, i)
        seen.append(cb.current_scale)
        cb.on_train_batch_end(trainer, module, None, None, i)
    return seen


def test_state_carries_the_scales_and_a_resume_without_scales_keeps_them():
    first = ProgressiveScaleCallback(steps_per_scale=2, scales=[32, 64])
    assert _run(first, _Module(), 3) == [32, 32, 64]
    state = first.state_dict()
    assert state == {"scale_index": 1, "step_in_scale": 1, "scales": [32, 64]}
    resumed = ProgressiveScaleCallback(steps_per_scale=2)  # the resumed run names no scales
    resumed.load_state_dict(state)
    assert _run(resumed, _Module(), 5) == [64]  # 64's last step, then the end (not 16, 32, 64)
    assert resumed.scales == [32, 64]


def test_a_resume_that_names_its_scales_keeps_its_own():
    state = {"scale_index": 0, "step_in_scale": 1, "scales": [32, 64]}
    resumed = ProgressiveScaleCallback(steps_per_scale=2, scales=[16, 32, 64])
    resumed.load_state_dict(state)
    assert _run(resumed, _Module(), 10) == [16, 32, 32, 64, 64]
    assert resumed.scales == [16, 32, 64]


def test_a_state_without_scales_resolves_to_the_module_s():
    """An older checkpoint (no "scales" saved): the module's scales, from the saved position."""
    resumed = ProgressiveScaleCallback(steps_per_scale=2)
    resumed.load_state_dict({"scale_index": 1, "step_in_scale": 0})
    assert _run(resumed, _Module(), 10) == [32, 32, 64, 64]


def test_paper_default_and_argument_checks():
    assert ProgressiveScaleCallback().steps_per_scale == 10_000  # 10k batches per scale (Sec. IV-A)
    assert ProgressiveScaleCallback(steps_per_scale=1, scales=[32, 64]).requested_scales == [32, 64]
    with pytest.raises(ValueError, match=r"steps_per_scale must be >= 1, got 0"):
        ProgressiveScaleCallback(steps_per_scale=0)
    for bad in ([], [64, 32], [32, 32]):
        with pytest.raises(ValueError, match=r"scales must be a non-empty increasing list"):
            ProgressiveScaleCallback(scales=bad)
    with pytest.raises(ValueError, match=r"direct=True runs the output scale only; scales must be None, got \[32\]"):
        ProgressiveScaleCallback(direct=True, scales=[32])
    with pytest.raises(ValueError, match=r"progressive scales \[48\] are not among the module's scales \[16, 32, 64\]"):
        _run(ProgressiveScaleCallback(scales=[16, 48]), _Module(), 1)


def test_each_batch_sets_and_logs_the_active_scale():
    """At every training batch the module is set to the active scale and ``progressive/scale`` is logged
    per step, on the progress bar (what the runs' metrics and the resume test read)."""
    module = _Module()
    cb = ProgressiveScaleCallback(steps_per_scale=1)
    _run(cb, module, 3)
    assert module.active == [16, 16, 32, 32, 64, 64]  # fit start, then each batch start (+ each switch)
    assert module.logged == [(("progressive/scale", float(s)), {"on_step": True, "on_epoch": False, "prog_bar": True, "batch_size": 1}) for s in (16, 32, 64)]


def test_modules_without_progressive_scales_are_left_alone():
    """G_ds and E_W modules have no ``set_active_scale``: the callback the CLI attaches to every run
    touches nothing there (a module with ``scales`` alone included)."""

    class Plain:
        scales = [16, 32]

        def log(self, *args, **kwargs):
            raise AssertionError("logged on a module without progressive scales")

    cb = ProgressiveScaleCallback(steps_per_scale=1)
    assert not cb.applies_to(Plain())
    trainer = types.SimpleNamespace(should_stop=False)
    cb.on_fit_start(trainer, Plain())
    for i in range(4):
        cb.on_train_batch_start(trainer, Plain(), None, i)
        cb.on_train_batch_end(trainer, Plain(), None, None, i)
    assert not trainer.should_stop and cb.scales == [] and (cb.scale_index, cb.step_in_scale) == (0, 0)


def test_a_saved_position_past_the_requested_scales_resumes_at_the_last():
    resumed = ProgressiveScaleCallback(steps_per_scale=2, scales=[32, 64])
    resumed.load_state_dict({"scale_index": 2, "step_in_scale": 1, "scales": [16, 32, 64]})
    assert _run(resumed, _Module(), 10) == [64]
