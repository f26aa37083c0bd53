"""W&B logging and sweeps: AutoWandbLogger's mode choice (no network), a toy E_W+ fit logging to an
offline W&B run (the progressive scale and the validation panel as a uint8 image), and every
experiments/sweeps/*.yaml parameter accepted by the CLI the way the W&B agent passes it, each agent run
in a run directory of its own."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lit_propulse.cli import main
from lit_propulse.loggers import AutoWandbLogger, resolve_mode
from tests.helpers import print_config
from tests.test_propulse_stages import DATA, QUIET, ROOT, TOY, encoder_args

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))
PAPER = ["gds", "ew", "ewplus", "e2e_ew", "e2e"]


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    """No W&B credentials, no WANDB_MODE (conftest sets it to disabled), wandb's own files under tmp_path."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    return tmp_path


def test_mode_without_a_key_is_offline_and_explicit_modes_win(no_wandb_env, monkeypatch, tmp_path):
    assert resolve_mode() == "offline"  # no key anywhere
    (tmp_path / "netrc").write_text("machine example.com login user password secret\n")
    assert resolve_mode() == "offline"  # a netrc without the W&B host
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert resolve_mode() == "online"  # decided locally: nothing contacts the server before the run starts
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode() == "offline"  # WANDB_MODE over the key
    assert resolve_mode("disabled") == "disabled"  # the explicit argument over WANDB_MODE
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode() == "offline"
    with pytest.raises(ValueError, match="mode"):
        resolve_mode("sometimes")
    with pytest.raises(ValueError, match="contradicts"):
        AutoWandbLogger(save_dir=str(tmp_path), mode="online", offline=True)


def test_disabled_is_honoured_and_writes_nothing(no_wandb_env, tmp_path):
    logger = AutoWandbLogger(save_dir=str(tmp_path / "run"), mode="disabled")
    assert logger.mode == "disabled" and logger._wandb_init["mode"] == "disabled"
    logger.log_metrics({"progressive/scale": 16.0}, step=0)
    logger.finalize("success")
    assert not (tmp_path / "run" / "wandb").exists()


def test_runs_one_after_another_in_one_process_are_separate(no_wandb_env, tmp_path):
    """As in ``python -m lit_propulse pipeline``: each logger's run is finished at finalize, so the next
    logger starts its own run in its own save_dir (WandbLogger alone would reuse the first run)."""
    import wandb

    ids = []
    try:
        for stage in ("gds", "ew"):
            logger = AutoWandbLogger(save_dir=str(tmp_path / stage))
            assert logger.mode == "offline"
            logger.log_metrics({"x": 1.0}, step=0)
            ids.append(logger.experiment.id)
            logger.finalize("success")
            assert wandb.run is None
    finally:
        if wandb.run is not None:
            wandb.finish()
    assert ids[0] != ids[1]
    for stage, run_id in zip(("gds", "ew"), ids):
        assert [p.name.rsplit("-", 1)[-1] for p in (tmp_path / stage / "wandb").glob("offline-run-*")] == [run_id]


def test_logger_layout_is_its_save_dir(no_wandb_env, tmp_path):
    logger = AutoWandbLogger(save_dir=str(tmp_path / "runs"), mode="disabled")
    assert Path(logger.save_dir) == tmp_path / "runs"
    assert (logger.name, logger.version) == ("", "")  # nothing Lightning derives adds <project>/<run id> below it


def test_toy_fit_logs_scale_and_panel_to_an_offline_run(stages, no_wandb_env, monkeypatch, tmp_path):
    """Mode chosen automatically (no key -> offline); the run is finished by the logger at the end of fit."""
    import wandb

    sent: list[dict] = []  # what the logger hands to W&B, step by step
    real_log_metrics = AutoWandbLogger.log_metrics

    def spy(self, metrics, step=None):
        sent.append(dict(metrics))
        return real_log_metrics(self, metrics, step)

    monkeypatch.setattr(AutoWandbLogger, "log_metrics", spy)
    run = tmp_path / "ewplus"
    argv = [
        "fit",
        "--config",
        str(TOY / "ewplus.yaml"),
        *QUIET,
        *DATA,
        *encoder_args("ewplus", stages),
        "--trainer.logger=lit_propulse.loggers.AutoWandbLogger",
        f"--trainer.default_root_dir={run}",  # the logger's save_dir follows
        "--progressive.steps_per_scale=1",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=1",
    ]
    try:
        assert main(argv) == 0
        assert wandb.run is None  # finished by AutoWandbLogger.finalize
    finally:
        if wandb.run is not None:
            wandb.finish()
    assert [m["progressive/scale"] for m in sent if "progressive/scale" in m] == [16.0, 32.0, 64.0]
    panels = [m["val/panel"] for m in sent if "val/panel" in m]
    assert len(panels) == 1 and isinstance(panels[0][0], wandb.Image)
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, sorted(p.name for p in (run / "wandb").iterdir())
    # the offline record file `wandb sync` uploads; wandb-core's writer may still be flushing it after finish()
    records = next(offline[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 60
    while not (b"progressive/scale" in records.read_bytes() and b"val/panel" in records.read_bytes()):
        assert time.monotonic() < deadline, f"{records} never got the logged keys"
        time.sleep(0.1)
    media = sorted((offline[0] / "files" / "media" / "images").rglob("*.png"))
    assert len(media) == 1
    logged = np.asarray(Image.open(media[0]).convert("RGB"))
    on_disk = np.asarray(Image.open(run / "images" / "val_latest.png").convert("RGB"))
    assert logged.shape == on_disk.shape and (logged == on_disk).all()  # the same uint8 panel, not a black float one
    assert logged.max() > 100
    assert (run / "ewplus.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()  # one run directory, whatever the logger


def test_paper_yamls_log_to_wandb_and_switch_to_csv(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    for name in PAPER:
        cfg = print_config(capsys, "fit", "--config", f"experiments/{name}.yaml")
        logger = cfg["trainer"]["logger"]
        assert logger["class_path"] == "lit_propulse.loggers.AutoWandbLogger"
        assert logger["init_args"]["save_dir"] == cfg["trainer"]["default_root_dir"] == f"runs/{name}" and logger["init_args"]["mode"] is None
        assert logger["init_args"]["job_type"] == name
        csv = print_config(
            capsys, "fit", "--config", f"experiments/{name}.yaml", "--trainer.logger=lit_propulse.loggers.CSVLogger", "--trainer.default_root_dir=elsewhere"
        )
        assert csv["trainer"]["logger"]["class_path"] == "lit_propulse.loggers.CSVLogger"
        args = csv["trainer"]["logger"]["init_args"]  # carried over, and following the run directory: metrics.csv in it
        assert (args["save_dir"], args["name"], args["version"]) == ("elsewhere", "", "")


def spec_values(spec: dict) -> list:
    """Values the sweep can hand out for one parameter: ``value``, every one of ``values``, or a range's ends."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    assert "min" in spec and "max" in spec, spec
    return [spec["min"], spec["max"]]


def agent_argv(command: list[str], args: dict) -> list[str]:
    """The argv the W&B agent gives ``python -m lit_propulse`` for ``command`` and parameter values
    (wandb's own formatting of ``${args}``: ``--name=value``)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in args.items()}})["args"]
    expanded = [a for c in command for a in (flags if c == "${args}" else [] if c in ("${env}", "${interpreter}") else [str(c)])]
    assert expanded[:2] == ["-m", "lit_propulse"], command
    return expanded[2:]


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_parameters_land_in_the_config(sweep, monkeypatch, capsys):
    """As the agent runs it (WANDB_SWEEP_ID, WANDB_RUN_ID set): every parameter lands on its key, W&B logs,
    and the run has a run directory of its own (<stage run dir>/<W&B run id>: export, checkpoints, logs)."""
    spec = yaml.safe_load(sweep.read_text())
    assert spec["method"] in ("grid", "random", "bayes")
    assert spec["metric"] == {"name": "val/loss/rec", "goal": "minimize"}
    assert "${args}" in spec["command"]
    params = spec["parameters"]
    assert {k.rsplit(".", 1)[-1] for k in params} <= {"lambda_rec", "lambda_id", "lambda_adv"} and len(params) == 3
    monkeypatch.chdir(ROOT)  # the agent runs from the repository root
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    monkeypatch.setenv("WANDB_RUN_ID", "run7")
    for pick in (0, -1):  # every parameter at its first and last value together
        values = {k: spec_values(v)[pick] for k, v in params.items()}
        cfg = print_config(capsys, *agent_argv(spec["command"], values))
        for key, value in values.items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert node == pytest.approx(float(value)), key
        trainer = cfg["trainer"]
        assert trainer["logger"]["class_path"] == "lit_propulse.loggers.AutoWandbLogger"  # the agent needs W&B metrics
        stage_dir = yaml.safe_load((ROOT / next(c for c in spec["command"] if str(c).endswith(".yaml"))).read_text())["trainer"]["default_root_dir"]
        assert trainer["default_root_dir"] == f"{stage_dir}/run7" == trainer["logger"]["init_args"]["save_dir"]
        (ck,) = [c["init_args"]["dirpath"] for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
        assert ck == f"{stage_dir}/run7/checkpoints"
