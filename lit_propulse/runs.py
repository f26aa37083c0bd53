"""Run directories: one run at a time in each, and checkpoints that belong to the run resuming them.

* :func:`run_lock`: a second ``fit``/``validate``/``test``/``predict`` in a run directory that is in
  use fails at start with one line, instead of interleaving its ``config.yaml``, ``metrics.csv`` and
  ``last.ckpt`` with the first run's (a file lock from the maintained ``filelock`` package, released
  when the run ends or its process dies).
* :class:`ModuleStamp`: every Lightning checkpoint records the LightningModule class that wrote it,
  so :func:`check_ckpt_path` can say "this is an E_W checkpoint, the config builds E_W+" before
  Lightning tries to load it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import pytorch_lightning as pl
from filelock import FileLock, Timeout

from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.weights import safe_load

LOCK_FILE = ".lit_propulse.lock"
#: the key under which :class:`ModuleStamp` stores the module class in a Lightning checkpoint
STAMP_KEY = "lit_propulse_module"
#: ``--ckpt_path`` values Lightning resolves itself (not file paths)
SPECIAL_CKPT = ("last", "best", "hpc", "registry")


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
            "finish or give this run its own directory (--trainer.default_root_dir / the logger's save_dir)"
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
        raise UserFacingError(f"--ckpt_path {path}: a checkpoint of {stamp.rsplit('.', 1)[-1]} ({stamp}), but this configuration builds {short}: use that stage's config or that stage's checkpoint")
    if stamp is None and model is not None:
        foreign = sorted(set(ckpt["state_dict"]) - set(model.state_dict()))
        if foreign:
            raise UserFacingError(f"--ckpt_path {path}: written by another kind of module than {short} (it has {len(foreign)} weights this one lacks, e.g. {foreign[:3]})")
