"""Run directories: one run at a time in each, checkpoints that belong to the run resuming them, and
when a stage counts as finished.

A run directory is ``trainer.default_root_dir`` (:func:`lit_propulse.loggers.run_dir`), whatever the
logger: the experiment YAMLs put the logger's files, ``checkpoints/`` and the stage export there.

* :func:`run_lock`: a second ``fit``/``validate``/``test``/``predict`` in a run directory that is in
  use fails at start with one line, instead of interleaving its ``config.yaml``, ``metrics.csv`` and
  ``last.ckpt`` with the first run's (a file lock from the maintained ``filelock`` package, released
  when the run ends or its process dies).
* :class:`ModuleStamp`: every Lightning checkpoint records the LightningModule class that wrote it,
  so :func:`check_ckpt_path` can say "this is an E_W checkpoint, the config builds E_W+" before
  Lightning tries to load it.
* :func:`done_marker`, :func:`mark_done`, :func:`is_done`: a stage's export plus ``<export>.done``
  means the stage finished training (a run killed mid-way leaves an export but no marker).
* :func:`plan_stage`: what a resumable runner (``pipeline``, ``grid``) does with a stage: skip it,
  resume it from ``<run dir>/checkpoints/last.ckpt``, or start it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from filelock import FileLock, Timeout

from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.weights import safe_load

LOCK_FILE = ".lit_propulse.lock"
#: the key under which :class:`ModuleStamp` stores the module class in a Lightning checkpoint
STAMP_KEY = "lit_propulse_module"
#: ``--ckpt_path`` values Lightning resolves itself (not file paths)
SPECIAL_CKPT = ("last", "best", "hpc", "registry")
#: where the experiment YAMLs' ModelCheckpoint writes, inside the run directory
CHECKPOINT_DIR = "checkpoints"


@contextlib.contextmanager
def run_lock(directory: str) -> Iterator[None]:
    """Hold ``<directory>/.lit_propulse.lock`` for the duration; raise a one-line
    :class:`UserFacingError` at once if another run holds it."""
    os.makedirs(directory, exist_ok=True)
    lock = FileLock(os.path.join(directory, LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserFacingError(
            f"{directory}: another run is using this run directory (lock {LOCK_FILE} is held); wait for it to "
            "finish or give this run its own directory (--trainer.default_root_dir)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class ModuleStamp(pl.Callback):
    """Write the LightningModule's class path into every checkpoint (key ``lit_propulse_module``)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[STAMP_KEY] = class_path(pl_module)


def check_ckpt_path(path: str | None, module_class: str, model: pl.LightningModule | None = None) -> None:
    """Refuse a ``--ckpt_path`` that is missing, unreadable, or written by another kind of module, in
    one line naming the file (and the stage it is from), before Lightning loads it.

    ``module_class`` is the class path the configuration builds. The stage is read from the
    :class:`ModuleStamp` key; for checkpoints written before the stamp existed, pass the built
    ``model``: state-dict keys it does not have mean another module wrote the file."""
    if path is None or str(path) in SPECIAL_CKPT:
        return
    path = str(path)
    if not os.path.isfile(path):
        raise UserFacingError(f"--ckpt_path {path}: no such checkpoint file (a run writes them under <run dir>/checkpoints/; 'last' resumes the newest)")
    ckpt = safe_load(path, "expected a Lightning checkpoint (.ckpt) written by fit")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserFacingError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict); expected a .ckpt written by fit")
    stamp = ckpt.get(STAMP_KEY)
    short = module_class.rsplit(".", 1)[-1]
    if stamp is not None and stamp != module_class:
        raise UserFacingError(
            f"--ckpt_path {path}: a checkpoint of {stamp.rsplit('.', 1)[-1]} ({stamp}), but this configuration builds {short}: use that stage's config or that stage's checkpoint"
        )
    if stamp is None and model is not None:
        foreign = sorted(set(ckpt["state_dict"]) - set(model.state_dict()))
        if foreign:
            raise UserFacingError(
                f"--ckpt_path {path}: written by another kind of module than {short} (it has {len(foreign)} weights this one lacks, e.g. {foreign[:3]})"
            )


# ----------------------------------------------------------------------------------------------
# Finished, interrupted or new: the one rule ``pipeline`` and ``grid`` share.


def done_marker(export: str | os.PathLike) -> str:
    """The file written next to an export when its stage finished training (a run killed mid-way
    leaves the export of its last checkpoint but no marker)."""
    return os.fspath(export) + ".done"


def mark_done(export: str | os.PathLike, note: str = "finished") -> None:
    """Write ``export``'s :func:`done_marker` (one line, ``note``)."""
    with open(done_marker(export), "w") as f:
        f.write(note.rstrip("\n") + "\n")


def is_done(export: str | os.PathLike) -> bool:
    """Whether ``export`` exists with its :func:`done_marker`: its stage finished training."""
    return os.path.isfile(export) and os.path.isfile(done_marker(export))


def last_checkpoint(run_dir: str | os.PathLike) -> str:
    """``<run_dir>/checkpoints/last.ckpt``: where a stage resumes from (it may not exist)."""
    return os.path.join(os.fspath(run_dir), CHECKPOINT_DIR, "last.ckpt")


@dataclass(frozen=True)
class StagePlan:
    """What a resumable runner does with one stage.

    Args:
        skip: the stage finished earlier; nothing to run.
        ckpt_path: resume from this checkpoint; None = start from scratch (or nothing to run).
    """

    skip: bool
    ckpt_path: str | None = None


def plan_stage(run_dir: str | os.PathLike, product: str | os.PathLike, command: str = "fit", force: bool = False) -> StagePlan:
    """Skip, resume or start a stage whose run directory is ``run_dir`` and whose result is ``product``.

    ``fit``: finished when :func:`is_done` (export + marker); interrupted when ``last.ckpt`` exists
    without that, and resumed from it. ``test``: finished when ``product`` (its report) exists; never
    resumed. ``force`` runs the stage again from scratch."""
    if command not in ("fit", "test"):
        raise ValueError(f"command must be 'fit' or 'test', got {command!r}")
    if force:
        return StagePlan(skip=False)
    if is_done(product) if command == "fit" else os.path.isfile(product):
        return StagePlan(skip=True)
    last = last_checkpoint(run_dir)
    return StagePlan(skip=False, ckpt_path=last if command == "fit" and os.path.isfile(last) else None)


def expected_sizes(model: pl.LightningModule) -> tuple[int, int | None] | None:
    """(HR side, LR side or None) the module's networks need: G_ds's output and LR sizes for the
    Pro-PULSE stages, a generator's output size for StyleGAN2/PULSE; None when the module does not say."""
    gds = getattr(model, "gds", None)
    if gds is not None and hasattr(gds, "size") and hasattr(gds, "lr_size"):
        return int(gds.size), int(gds.lr_size)
    for name in ("G", "generator"):
        G = getattr(model, name, None)
        if isinstance(G, torch.nn.Module) and hasattr(G, "size"):
            return int(G.size), None
    return None


def check_data_sizes(model: pl.LightningModule, datamodule: pl.LightningDataModule | None) -> None:
    """Refuse, before any step runs, data whose ``hr_size``/``lr_size`` differ from what the module's
    networks take (found only at the first step before), in one line with the remedy."""
    want = expected_sizes(model)
    if want is None or datamodule is None:
        return
    hr, lr = getattr(datamodule, "hr_size", None), getattr(datamodule, "lr_size", None)
    bad = []
    if hr is not None and int(hr) != want[0]:
        bad.append(f"hr_size={hr} but the generator outputs {want[0]}x{want[0]}")
    if want[1] is not None and lr is not None and int(lr) != want[1]:
        bad.append(f"lr_size={lr} but the networks take {want[1]}x{want[1]} LR images")
    if bad:
        fix = f"data.init_args.hr_size={want[0]}" + (f", data.init_args.lr_size={want[1]}" if want[1] is not None else "")
        raise UserFacingError(f"the data do not fit the model: {'; '.join(bad)}; set {fix}")
