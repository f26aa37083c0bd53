"""``benchmarks/rehearsal.py``: the command lines of its stages (no stage runs here; the full-size
runs take minutes per step on a CPU, and CI runs ``--reduced`` itself)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rehearsal():
    spec = importlib.util.spec_from_file_location("_bench_rehearsal", ROOT / "benchmarks" / "rehearsal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_every_stage_is_run_by_default_and_its_files_exist(rehearsal):
    assert rehearsal.DEFAULT_STAGES.split(",") == list(rehearsal.STAGES)
    for name, (_, files) in rehearsal.STAGES.items():
        assert all((ROOT / f).is_file() for f in files), name
    variants = rehearsal.STAGES["grid"][1]
    assert len(variants) == len(list((ROOT / "experiments" / "ablations").glob("*.yaml"))) >= 11
    assert {rehearsal._variant_of(v) for v in variants} <= {"ew", "ewplus", "e2e"}


@pytest.mark.parametrize("name", ["attributes", "psp"])
def test_attributes_and_psp_run_their_paper_yaml_for_a_few_steps(rehearsal, tmp_path, name):
    argv = rehearsal.stage_argv(name, tmp_path, 2, 1)
    assert argv[:3] == ["fit", "--config", f"experiments/{name}.yaml"]
    assert _value(argv, "--trainer.default_root_dir") == f"runs/{name}"
    assert _value(argv, "--trainer.max_steps") == "2" and _value(argv, "--data.init_args.val_subset") == "2"
    assert _value(argv, "--data.init_args.batch_size") == "1" and _value(argv, "--trainer.limit_val_batches") == "0"
    assert "--trainer.callbacks+=benchmarks.rehearsal.StepTimer" in argv
    assert "--progressive.steps_per_scale" not in argv  # only E_W+'s schedule takes it


def test_progressive_stages_run_six_scales(rehearsal, tmp_path):
    argv = rehearsal.stage_argv("e2e", tmp_path, 2, 1)
    assert _value(argv, "--trainer.max_steps") == "12" and _value(argv, "--progressive.steps_per_scale") == "2"


def test_pulse_runs_the_command_at_1024_on_copied_test_images(rehearsal, tmp_path):
    img = tmp_path / "data" / "CelebA-HQ" / "CelebA-HQ-img"
    img.mkdir(parents=True)
    for i in rehearsal.PULSE_IMAGES:
        (img / f"{i}.jpg").write_bytes(b"jpeg")
    argv = rehearsal.stage_argv("pulse", tmp_path, 3, 1)
    assert argv[0] == "pulse"
    assert _value(argv, "--generator") == f"pretrained/{rehearsal.G_FILE}"
    assert _value(argv, "--lr-size") == "16" and _value(argv, "--steps") == "3" and _value(argv, "--device") == "cpu"
    assert _value(argv, "--output") == "runs/pulse"
    copied = sorted(p.name for p in (tmp_path / _value(argv, "--input")).iterdir())
    assert copied == sorted(f"{i}.jpg" for i in rehearsal.PULSE_IMAGES)  # copies: the command does not follow links out of --input


def test_pulse_step_seconds_come_from_results_csv(rehearsal, tmp_path):
    (tmp_path / "results.csv").write_text("name,sample,loss,loss_clean,success,best_step,steps,time_s,seed,file\na,0,0.1,0.1,False,1,4,10.0,0,a.png\n")
    assert rehearsal.pulse_step_s(tmp_path) == [2.5]
    assert rehearsal.pulse_step_s(tmp_path / "none") == []


def test_grid_trains_single_stage_variants_first_then_every_variant(rehearsal, tmp_path):
    """The grid gives every variant the same overrides: the E_W variant gets its own call with
    ``steps`` steps, the second call (every variant, six scales) then finds it finished."""
    first, second = rehearsal.grid_argvs(tmp_path, 1, 1)
    variants = rehearsal.STAGES["grid"][1]
    for argv in (first, second):
        assert argv[0] == "grid" and argv[argv.index("--variants") + 1 : argv.index("--base-dir")] == variants
        assert _value(argv, "--base-dir") == "experiments" and _value(argv, "--out") == "runs/ablations"
        assert _value(argv, "--trainer.limit_test_batches") == "2"  # the evaluation on 2 test images at batch 1
        assert _value(argv, "--progressive.steps_per_scale") == "1"
        assert "--trainer.default_root_dir" not in argv  # the grid sets it per variant
    assert _value(first, "--only") == "ew_direct" and _value(first, "--trainer.max_steps") == "1"
    assert "--only" not in second and _value(second, "--trainer.max_steps") == "6"
    assert rehearsal.stage_argv("grid", tmp_path, 1, 1) == second
    assert set(rehearsal.GRID_NEEDS) == {"gds", "ew", "e2e_ew"}  # what the variants read, run first when missing


def test_unknown_stage_is_refused(rehearsal, tmp_path, capsys):
    with pytest.raises(SystemExit):
        rehearsal.main(["--root", str(tmp_path / "r"), "--stages", "gds,nope"])
    assert "unknown nope" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any file is written
