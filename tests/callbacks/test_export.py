"""StageExport writes the export with every checkpoint save and at the end of training, once per
global step: Lightning saves ``last.ckpt`` after ``on_train_end``, and that save must not write the
same weights again after the done marker (a 1 GiB pSp export twice, the marker older than the file)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch
from torch import nn

from lit_propulse.callbacks.export import StageExport
from lit_propulse.runs import done_marker


class _Module(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.writes: list[int] = []

    def export(self, path: str) -> None:
        torch.save({"w": self.w.detach().clone()}, path)
        self.writes.append(int(self.w[0].item()))


def test_one_export_per_step_and_the_marker_after_the_last(tmp_path):
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), global_step=0)
    cb, module = StageExport("stage.pt"), _Module()
    cb.on_train_start(trainer, module)
    for step in (1, 2):  # periodic checkpoints: each writes that step's weights
        trainer.global_step = step
        with torch.no_grad():
            module.w.fill_(step)
        cb.on_save_checkpoint(trainer, module, {})
    assert module.writes == [1, 2]
    trainer.global_step = 3
    with torch.no_grad():
        module.w.fill_(3)
    cb.on_train_end(trainer, module)  # the final export, then the marker
    cb.on_save_checkpoint(trainer, module, {})  # last.ckpt at the same step: nothing rewritten
    assert module.writes == [1, 2, 3]
    assert os.path.isfile(done_marker(str(tmp_path / "stage.pt")))
    os.remove(tmp_path / "stage.pt")  # an export removed meanwhile is written again
    cb.on_save_checkpoint(trainer, module, {})
    assert module.writes == [1, 2, 3, 3] and (tmp_path / "stage.pt").is_file()
