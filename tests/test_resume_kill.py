"""A toy E_W+ run killed with SIGKILL mid-scale and resumed with ``--ckpt_path last`` finishes with
the uninterrupted run's progressive schedule and writes its export (Pro-PULSE Sec. III-E, Eq. (10)).

The run uses the toy YAML's own ModelCheckpoint (from ``experiments/base/fit.yaml``: ``save_last: true`` in
``<trainer.default_root_dir>/checkpoints``, one checkpoint every ``val_check_interval`` steps), only saving
every step: ``--ckpt_path last`` must find it there in a new process, as a user relies on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lit_propulse.cli import main
from lit_propulse.core.weights import load_module
from lit_propulse.networks.encoders import EWPlusEncoder
from lit_propulse.networks.stylegan2 import num_ws_up_to
from tests.test_propulse_stages import DATA, QUIET, ROOT, TOY, encoder_args, fit, read_metrics, run_dir_args

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

STEPS_PER_SCALE = 8  # toy scales 16, 32, 64: 24 steps in all; killed somewhere in steps 9..23
SCALES = 3
START_TIMEOUT = 300.0  # seconds until the first checkpoint (imports on a loaded machine)


def checkpoint_every_step(run: Path, capsys) -> list[str]:
    """Overrides that make the toy YAML's own ModelCheckpoint save every step: it saves every
    ``val_check_interval`` steps (validation itself is off: ``limit_val_batches=0``). Checked on the
    composed config: ``last.ckpt`` in ``<run dir>/checkpoints``, what ``--ckpt_path last`` relies on."""
    args = ["--trainer.val_check_interval=1", *run_dir_args(run)]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(TOY / "ewplus.yaml"), *args, "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    (ck,) = [c["init_args"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    assert (ck["save_last"], ck["dirpath"], ck["every_n_train_steps"]) == (True, f"{run}/checkpoints", 1)
    return args


def scales_by_step(run: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["progressive/scale"]) for r in read_metrics(run) if r.get("progressive/scale")}


def read_last(path: Path) -> dict | None:
    """last.ckpt as written so far (Lightning renames a finished temp file into place; mmap: tensors are
    not read), None if absent."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except FileNotFoundError:
        return None


def progressive_state(ck: dict) -> dict:
    return next(v for k, v in ck["callbacks"].items() if "ProgressiveScaleCallback" in k)


def test_sigkill_mid_scale_then_resume_last(stages, tmp_path, capsys):
    total = STEPS_PER_SCALE * SCALES
    run = tmp_path / "run"
    every_step = checkpoint_every_step(run, capsys)
    config = TOY / "ewplus.yaml"
    shrink = [
        *encoder_args("ewplus", stages),
        "--model.init_args.encoder.init_args.out_channels=32",
        "--model.init_args.init_from_ew=false",  # (E_W is wider than this E_W+)
        # small checkpoints: one is written every step
        f"--progressive.steps_per_scale={STEPS_PER_SCALE}",
        "--trainer.limit_val_batches=0",
    ]
    last = run / "checkpoints" / "last.ckpt"

    # 1. the run to kill, in its own process
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path / "tmp"), PYTHONUNBUFFERED="1")
    (tmp_path / "tmp").mkdir()
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lit_propulse", "fit", "--config", str(config), *QUIET, *DATA, *shrink, *every_step],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # poll last.ckpt until it is past the first scale boundary and mid-scale
            assert proc.poll() is None, f"the run ended (code {proc.returncode}) before the kill window:\n" + (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no checkpoint past step {STEPS_PER_SCALE} within {START_TIMEOUT} s"
            ck = read_last(last)
            if ck is not None and ck["global_step"] > STEPS_PER_SCALE and ck["global_step"] % STEPS_PER_SCALE:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    ck = read_last(last)  # the process may have saved a step or two more before the signal landed
    killed_at = ck["global_step"]
    print(f"killed at step {killed_at} of {total}")
    state = progressive_state(ck)
    assert STEPS_PER_SCALE < killed_at < total, killed_at
    assert (state["scale_index"], state["step_in_scale"]) == divmod(killed_at, STEPS_PER_SCALE)
    export = run / "ewplus.pt"  # StageExport also writes it with every checkpoint: the killed run left one
    killed_export = export.stat().st_mtime_ns if export.exists() else -1

    # 2. resume in the same run dir: `last` is looked up by the YAML's ModelCheckpoint
    fit(config, *shrink, "--ckpt_path", "last", *every_step)
    resumed = scales_by_step(run)  # metrics.csv of the resumed process only

    # 3. the same schedule, uninterrupted
    fit(config, *shrink, *run_dir_args(tmp_path / "reference"))  # the YAML's checkpoint cadence (100 steps): no saves
    reference = scales_by_step(tmp_path / "reference")
    assert list(reference.values()) == [16.0] * STEPS_PER_SCALE + [32.0] * STEPS_PER_SCALE + [64.0] * STEPS_PER_SCALE

    # resumed from the kill (not from scratch): exactly the reference's last total - killed_at steps
    assert len(resumed) == total - killed_at
    assert resumed == dict(list(reference.items())[killed_at:])
    assert read_last(last)["global_step"] == total
    assert export.stat().st_mtime_ns > killed_export  # rewritten by the resumed run at its end
    assert load_module(export, EWPlusEncoder).forward_scales(torch.zeros(1, 3, 8, 8), 64).shape == (1, num_ws_up_to(64), 64)
