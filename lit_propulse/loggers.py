"""Logging for the project's runs: the run directory, a W&B logger that works with no account or no
network, a CSV logger that keeps earlier metrics, and image logging.

**The run directory is ``trainer.default_root_dir``** (:func:`run_dir`), whatever the logger (CSV,
TensorBoard, W&B or none): the stage export, ``checkpoints/``, the validation panels (``images/``) and the
reports go there. The experiment YAMLs (``experiments/base/run.yaml``) point the logger there too::

    trainer:
      default_root_dir: runs/toy/ew
      logger:
        class_path: lit_propulse.loggers.CSVLogger
        init_args: {save_dir: "${...default_root_dir}", name: "", version: ""}

so ``--trainer.default_root_dir DIR`` moves everything, and ``--trainer.logger=...TensorBoardLogger`` /
``lit_propulse.loggers.AutoWandbLogger`` keeps the same ``save_dir``, ``name`` and ``version`` (jsonargparse
carries them over). A logger given its own directory writes its files there; the run's files stay in
the run directory.

``AutoWandbLogger`` is Lightning's ``WandbLogger`` with three changes, all for running the same YAML
everywhere (a laptop, a cluster node without internet, a W&B sweep agent):

* the W&B mode is chosen when the logger is built: an explicit ``mode`` wins, else ``WANDB_MODE``,
  else ``online`` when an API key is configured and ``offline`` when none is (the run is written
  under ``<save_dir>/wandb/offline-run-*`` and uploaded later with ``wandb sync``). Nothing here
  contacts the network; the key is looked up where wandb looks for it (``WANDB_API_KEY``,
  ``WANDB_IDENTITY_TOKEN_FILE``, the ``.netrc`` entry of the W&B host);
* ``name`` and ``version`` are empty for Lightning, so nothing Lightning derives from them adds
  ``<project>/<run id>`` below ``save_dir`` (the W&B run name and id are unchanged);
* the W&B run is finished when the Trainer finalizes the logger (end of fit, or failure), so runs
  started one after another in one process (``python -m lit_propulse pipeline``) are separate W&B runs.

Under a W&B sweep agent each run needs its own run directory: the sweep YAMLs
(``experiments/sweeps/``) give ``--trainer.default_root_dir=runs/<stage>/${oc.env:WANDB_RUN_ID,manual}``.

``--trainer.logger=lit_propulse.loggers.CSVLogger`` switches a W&B config to CSV.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger as _PLCSVLogger
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter as _CSVExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from lit_propulse.core.images import to_uint8

Mode = Literal["online", "offline", "disabled"]
MODES = ("online", "offline", "disabled")
#: values of WANDB_MODE wandb accepts beyond MODES, and what they mean
_LEGACY_MODES = {"dryrun": "offline", "run": "online"}
DEFAULT_HOST = "https://api.wandb.ai"


def _netrc_path() -> Path:
    """The .netrc file wandb reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def has_api_key() -> bool:
    """Whether wandb would find credentials for its host (``WANDB_BASE_URL``, default api.wandb.ai),
    checked locally: ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a .netrc entry with a password."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    try:
        creds = netrc.netrc(str(_netrc_path())).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode a run uses: ``mode`` if given, else ``WANDB_MODE`` (``dryrun`` = offline), else
    online with an API key and offline without one. An unknown value raises ``ValueError``."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} or None (automatic), got {mode!r}")
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        env = _LEGACY_MODES.get(env, env)
        if env not in MODES:
            raise ValueError(f"WANDB_MODE must be one of {MODES + tuple(_LEGACY_MODES)}, got {os.environ['WANDB_MODE']!r}")
        return env
    return "online" if has_api_key() else "offline"


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` that picks its mode by itself and keeps the project's run-directory layout.

    Args:
        save_dir: where W&B writes (``<save_dir>/wandb``); the YAMLs give the run directory,
            ``${...default_root_dir}``.
        mode: "online", "offline" or "disabled"; None = ``WANDB_MODE`` if set, else online when an
            API key is configured and offline when not.
        name: W&B run name; None or "" = W&B's generated one ("" so that the YAML's ``name: ""``
            also suits the CSVLogger the same config switches to).
        version: W&B run id, to continue a run; None or "" = a new one.
        project: W&B project (a sweep agent's own project wins).
        offline: Lightning's flag, kept for compatibility: True = ``mode="offline"``.
        **kwargs: the other ``WandbLogger`` / ``wandb.init`` arguments (``job_type``, ``group``,
            ``tags``, ``log_model``...).
    """

    def __init__(
        self,
        save_dir: str = ".",
        name: str | None = None,
        version: str | None = None,
        mode: Mode | None = None,
        project: str | None = "pro-pulse",
        offline: bool = False,
        **kwargs: Any,
    ) -> None:
        if offline and mode not in (None, "offline"):
            raise ValueError(f"offline=True contradicts mode={mode!r}; give mode alone")
        self.mode = resolve_mode("offline" if offline else mode)
        save_dir = os.fspath(save_dir)
        # LightningCLI passes every wandb.init argument, None included: drop those, so that WandbLogger's
        # own defaults (resume="allow") stand
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        # the mode goes to wandb.init; Lightning's own offline=True would set WANDB_MODE for the whole process
        super().__init__(save_dir=save_dir, name=name or None, version=version or None, project=project, offline=False, mode=self.mode, **kwargs)

    # Lightning derives <save_dir>/<name>/<version> from these (Trainer.log_dir, a ModelCheckpoint without
    # dirpath); WandbLogger's name is the project and its version the per-run W&B id. Both empty, as in
    # the CSV configs, keep that <save_dir> itself. The W&B run name and id are unchanged.
    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the W&B run (WandbLogger leaves it to the end of the process, so the next WandbLogger
        in the same process would log into it). A later use of this logger continues the same run id."""
        super().finalize(status)
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            self._id = self._experiment.id
            self._wandb_init["id"] = self._id
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


# ----------------------------------------------------------------------------------------------
# Run directory and image logging, shared by modules and callbacks.


def run_dir(trainer: pl.Trainer) -> str:
    """Where a run writes its files (stage export, panels, reports, snapshots; the YAMLs' checkpoints
    and logger too): ``trainer.default_root_dir``, whatever the logger, so the next stage finds the
    export where its YAML says even when this stage logged to TensorBoard, W&B or nothing.

    Unlike ``Trainer.log_dir`` this does not broadcast, so rank-zero-only code may call it (a
    collective on one rank only hangs DDP)."""
    return trainer.default_root_dir


def log_image(trainer: pl.Trainer, key: str, image: Tensor, step: int) -> None:
    """Send a [3, H, W] image in [-1, 1] to every active logger that takes images (TensorBoard, W&B and
    their subclasses, e.g. :class:`lit_propulse.loggers.AutoWandbLogger`), as uint8: W&B saves a float
    image in [0, 1] black."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    img = to_uint8(image).cpu()  # [3, H, W] uint8
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, img, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[img.permute(1, 2, 0).numpy()], step=step)  # [H, W, 3]


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------
# A CSV logger that never deletes an earlier run's metrics.


class _KeepingExperimentWriter(_CSVExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when its directory is not empty, so a
    run resumed after ``kill -9`` in the same directory (the YAMLs use ``version: ""``) erased
    the rows logged before the kill. This one moves it aside to ``metrics.1.csv`` (``.2``, ...) and
    starts a fresh ``metrics.csv`` for the resumed part."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            n = 1
            while os.path.exists(os.path.join(self.log_dir, f"metrics.{n}.csv")):
                n += 1
            os.replace(self.metrics_file_path, os.path.join(self.log_dir, f"metrics.{n}.csv"))


class CSVLogger(_PLCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` whose earlier ``metrics.csv`` in the same directory is
    kept as ``metrics.<n>.csv`` instead of deleted (a resumed run's new rows go to ``metrics.csv``;
    the rows before the interruption stay in the numbered file beside it)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _CSVExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
