"""Pro-PULSE stages end to end through the CLI, on the real experiment YAMLs shrunk by overrides
(fixture generator, tiny data, a few steps): G_ds -> E_W -> E_W+, every ablation delta, the
progressive schedule, resume mid-scale, falling losses, the missing-file preflight, one run directory
whatever the logger, the pipeline and the grid."""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

import pytest
import torch

from lit_propulse.callbacks.progressive import ProgressiveScaleCallback
from lit_propulse.cli import main
from lit_propulse.core.weights import load_module
from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
from lit_propulse.networks.gds import load_gds
from lit_propulse.networks.stylegan2 import num_ws_up_to
from tests.helpers import QUIET_TRAINER

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parents[1]
FIX = str(ROOT / "tests" / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt")
TOY = ROOT / "experiments" / "toy"
ABLATIONS = sorted((ROOT / "experiments" / "ablations").glob("*.yaml"))

DATA = ["--data.init_args.num_train", "32", "--data.init_args.num_test", "8", "--data.init_args.batch_size", "4", "--data.init_args.val_subset", "4"]
QUIET = [*QUIET_TRAINER, "--trainer.log_every_n_steps", "1"]


def short_run(steps: int) -> list[str]:
    """Trainer flags of a run of ``steps`` steps, validated once at its end on one batch."""
    return ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps), "--trainer.limit_val_batches", "1"]


def run_dir_args(d: Path) -> list[str]:
    """The run directory: export, checkpoints, panels and the YAML's logger all follow it."""
    return ["--trainer.default_root_dir", str(d)]


def variant_stage(delta: Path) -> str:
    """The stage an ablation delta modifies (its ``variant_of:`` key)."""
    import yaml

    return yaml.safe_load(delta.read_text())["variant_of"]


def encoder_args(stage: str, out: Path, delta: str = "") -> list[str]:
    """Overrides that put a toy stage YAML on the fixture generator (w_dim 64) and earlier exports in
    ``out``; networks a delta removes (``X: null``) get no override."""
    args = ["--model.init_args.gds.init_args.path", str(out / "gds" / "gds.pt"), "--model.init_args.encoder.init_args.w_dim", "64"]
    if "discriminator: null" not in delta:
        args += ["--model.init_args.discriminator.init_args.path", FIX]
    if stage in ("ewplus", "e2e") and "ew_encoder: null" not in delta:
        args += ["--model.init_args.ew_encoder.init_args.path", str(out / "ew" / "ew.pt")]
    return args


def fit(config: Path | list[Path], *args: str) -> None:
    configs = config if isinstance(config, list) else [config]
    argv = ["fit"] + [a for c in configs for a in ("--config", str(c))] + QUIET + DATA + list(args)
    assert main(argv) == 0


def copy_config(config: Path, out: Path) -> dict:
    """``config`` as a dict whose ``base:`` paths are absolute, so that it can be edited and written to
    ``out`` (another directory) with its bases still found."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    bases = cfg.get("base") or []
    cfg["base"] = [str((config.parent / b).resolve()) for b in ([bases] if isinstance(bases, str) else bases)]
    return cfg


def with_val_metrics(config: Path, keys: list[str], out: Path) -> Path:
    """``config`` with its StageEvaluation callback's ``val_metrics`` set to ``keys``, written to ``out``."""
    import yaml

    cfg = copy_config(config, out)
    callback = next(c for c in cfg["trainer"]["callbacks+"] if c["class_path"].endswith(".StageEvaluation"))
    callback.setdefault("init_args", {})["val_metrics"] = keys
    out.write_text(yaml.safe_dump(cfg))
    return out


def read_metrics(d: Path) -> list[dict[str, str]]:
    with open(d / "metrics.csv") as f:
        return list(csv.DictReader(f))


def train_stages(out: Path) -> Path:
    """Run G_ds, E_W and E_W+ once on the fixture generator into ``out``; the session fixture
    ``stages`` (tests/conftest.py) calls this once and every test file reuses the exports."""
    fit(
        TOY / "gds.yaml",
        "--model.init_args.gds.init_args.path",
        FIX,
        *short_run(3),
        *run_dir_args(out / "gds"),
    )
    fit(
        TOY / "ew.yaml",
        *encoder_args("ew", out),
        *short_run(3),
        *run_dir_args(out / "ew"),
    )
    # the YAML's checkpoint (every val_check_interval steps) at the last step: ewplus/checkpoints/last.ckpt
    fit(
        TOY / "ewplus.yaml",
        *encoder_args("ewplus", out),
        "--progressive.steps_per_scale",
        "2",
        "--trainer.val_check_interval",
        "6",
        "--trainer.limit_val_batches",
        "1",
        *run_dir_args(out / "ewplus"),
    )
    return out


def test_stage_exports_chain(stages):
    gds = load_gds(str(stages / "gds" / "gds.pt"))
    assert gds.resolutions == [16, 32] and gds.lr_size == 8
    ew = load_module(stages / "ew" / "ew.pt", EWEncoder)
    ewp = load_module(stages / "ewplus" / "ewplus.pt", EWPlusEncoder)
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    assert ew(lr).shape == (2, 64)
    assert ewp.forward_scales(lr, 64).shape == (2, num_ws_up_to(64), 64)
    panel = (stages / "ewplus" / "images" / "columns.txt").read_text().strip()
    assert panel == "LR | side 16 | side 32 | HR | GT"
    assert (stages / "ewplus" / "images" / "val_latest.png").stat().st_size > 0


def test_progressive_schedule_in_the_run(stages):
    scales = [float(r["progressive/scale"]) for r in read_metrics(stages / "ewplus") if r.get("progressive/scale")]
    assert scales == [16.0, 16.0, 32.0, 32.0, 64.0, 64.0]  # 2 steps per scale, then stop


@pytest.mark.parametrize("delta", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_every_ablation_runs(stages, tmp_path, delta):
    text = delta.read_text()
    stage = variant_stage(delta)
    base = f"{stage}.yaml"
    if "lambda_id: 1.0" in text:
        # toy faces have no identity network: the CLI must refuse clearly, before training
        with pytest.raises(ValueError, match="identity network"):
            fit([TOY / base, delta], *encoder_args(stage, stages, text), "--trainer.max_steps", "1", *run_dir_args(tmp_path))
        return
    fit(
        [TOY / base, delta],
        *encoder_args(stage, stages, text),
        "--progressive.steps_per_scale",
        "1",
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "0",
        *run_dir_args(tmp_path),
    )
    exports = glob.glob(str(tmp_path / "*.pt"))
    assert exports, f"{delta.name}: no stage export written"


def test_callback_switches_at_configured_steps():
    class Fake:
        scales = [16, 32, 64]
        seen: list[int] = []

        def set_active_scale(self, s):
            self.seen.append(s)

        def log(self, *a, **k):
            pass

    class Trainer:
        should_stop = False

    cb, mod, tr = ProgressiveScaleCallback(steps_per_scale=3), Fake(), Trainer()
    cb.on_fit_start(tr, mod)
    trace = []
    for step in range(9):
        cb.on_train_batch_start(tr, mod, None, step)
        trace.append(cb.current_scale)
        cb.on_train_batch_end(tr, mod, None, None, step)
    assert trace == [16] * 3 + [32] * 3 + [64] * 3 and tr.should_stop
    # resume: state round trip mid-scale continues at the same scale and step
    cb2 = ProgressiveScaleCallback(steps_per_scale=3)
    cb_mid = ProgressiveScaleCallback(steps_per_scale=3)
    cb_mid.on_fit_start(tr, mod)
    for step in range(4):
        cb_mid.on_train_batch_end(tr, mod, None, None, step)
    cb2.load_state_dict(cb_mid.state_dict())
    cb2.on_fit_start(tr, mod)
    assert (cb2.current_scale, cb2.step_in_scale) == (32, 1)
    direct = ProgressiveScaleCallback(steps_per_scale=3, direct=True)
    direct.on_fit_start(tr, mod)
    assert direct.scales == [64] and direct.total_steps == 9
    with pytest.raises(ValueError, match="increasing"):
        ProgressiveScaleCallback(scales=[64, 32])


def test_resume_mid_scale_composes_the_same_wplus(stages, tmp_path):
    """Kill-free version of the resume check: stop at step 3 (mid-scale 32), resume from last.ckpt,
    and compare the scale schedule and the composed w+ with the uninterrupted run."""
    common = [
        *encoder_args("ewplus", stages),
        "--progressive.steps_per_scale",
        "2",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(tmp_path / "ck"),
        "--trainer.callbacks.save_last",
        "true",
        "--trainer.callbacks.every_n_train_steps",
        "1",
    ]
    fit(TOY / "ewplus.yaml", *common, "--trainer.max_steps", "3", *run_dir_args(tmp_path / "a"))
    ck = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False, map_location="cpu")
    state = next(v for k, v in ck["callbacks"].items() if "ProgressiveScaleCallback" in k)
    assert (state["scale_index"], state["step_in_scale"]) == (1, 1)
    assert int(ck["state_dict"]["active_scale"]) == 32
    keys = list(ck["state_dict"])  # frozen pretrained networks are left out, the trained ones kept
    assert any(k.startswith("encoder.") for k in keys) and any(k.startswith("gds.heads.") for k in keys)
    assert not any(k.startswith(("gds.generator.", "ew_encoder.")) for k in keys)
    fit(TOY / "ewplus.yaml", *common, "--ckpt_path", str(tmp_path / "ck" / "last.ckpt"), *run_dir_args(tmp_path / "b"))
    resumed = [float(r["progressive/scale"]) for r in read_metrics(tmp_path / "b") if r.get("progressive/scale")]
    assert resumed == [32.0, 64.0, 64.0]  # the uninterrupted run's steps 4..6 (see the test above)


def test_losses_fall(stages, tmp_path):
    fit(
        TOY / "ew.yaml",
        *encoder_args("ew", stages),
        "--model.init_args.loss.init_args.lambda_adv",
        "0",
        "--model.init_args.discriminator",
        "null",
        "--trainer.max_steps",
        "16",
        "--trainer.limit_val_batches",
        "0",
        *run_dir_args(tmp_path),
    )
    rec = [float(r["train/loss/rec"]) for r in read_metrics(tmp_path) if r.get("train/loss/rec")]
    assert len(rec) == 16
    assert sum(rec[-4:]) / 4 < 0.7 * sum(rec[:4]) / 4


def test_missing_files_are_listed_before_training(tmp_path, capsys):
    code = main(
        [
            "fit",
            "--config",
            str(TOY / "ewplus.yaml"),
            "--model.init_args.gds.init_args.path",
            str(tmp_path / "nope_gds.pt"),
            "--model.init_args.ew_encoder.init_args.path",
            str(tmp_path / "nope_ew.pt"),
            "--model.init_args.discriminator.init_args.path",
            str(tmp_path / "nope_sg2.pt"),
            *run_dir_args(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    for name in ("nope_gds.pt", "nope_ew.pt", "nope_sg2.pt"):
        assert name in err
    assert "G_ds" in err and "StyleGAN2" in err
    assert not (tmp_path / "checkpoints").exists()


def test_predict_writes_hr_and_every_side_output(stages, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    from PIL import Image

    from datamodules.toy_faces import render_toy_face

    for i in range(3):
        Image.fromarray(render_toy_face(0, 90_000 + i, 64)[0]).save(faces / f"face{i}.png")
    out = tmp_path / "pred"
    argv = [
        "predict",
        "--config",
        str(TOY / "ewplus.yaml"),
        *encoder_args("ewplus", stages),
        "--ckpt_path",
        str(stages / "ewplus" / "checkpoints" / "last.ckpt"),
        "--trainer.callbacks+=lit_propulse.callbacks.predict.SidePredictionWriter",
        "--trainer.callbacks.output_dir",
        str(out),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--data",
        "datamodules.folder.ImageFolderDataModule",
        "--data.root",
        str(faces),
        "--data.hr_size",
        "64",
        "--data.lr_size",
        "8",
        "--data.test_fraction",
        "1.0",
        "--data.batch_size",
        "2",
    ]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"face{i}{suffix}.png" for i in range(3) for suffix in ("", "_lr", "_r16", "_r32"))
    from lit_propulse.core.images import load_image

    assert load_image(out / "face0.png").shape == (3, 64, 64) and load_image(out / "face0_r16.png").shape == (3, 16, 16)


def test_each_stage_writes_in_its_run_directory_whatever_the_logger(tmp_path, monkeypatch):
    """G_ds -> E_W -> E_W+ -> E2E (its E_W, then its E_W+) as a user runs them one by one, from a working directory where the toy
    YAMLs' own paths (``runs/toy/<stage>/<export>``) are the only link between stages, each stage with
    another logger: one writing to a directory of its own (TensorBoard; Lightning's CSVLogger, whose
    log_dir works the same way, where tensorboard is not installed), none, W&B offline, the YAMLs' CSV.
    Exports, checkpoints and panels land in ``trainer.default_root_dir`` every time, so each next stage
    finds its inputs where its YAML says."""
    import importlib.util

    import wandb
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lit_propulse").symlink_to(ROOT / "lit_propulse")  # the YAMLs' lit_propulse/data/... files
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    short = ["--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"]
    enc = ["--model.init_args.encoder.init_args.w_dim", "64", "--model.init_args.discriminator.init_args.path", FIX]
    own_dir = "pytorch_lightning.loggers.TensorBoardLogger" if importlib.util.find_spec("tensorboard") else "pytorch_lightning.loggers.CSVLogger"
    fit(
        TOY / "gds.yaml",
        "--model.init_args.gds.init_args.path",
        FIX,
        "--trainer.max_steps",
        "2",
        *short,
        f"--trainer.logger={own_dir}",
        "--trainer.logger.init_args.save_dir=elsewhere",
        "--trainer.logger.init_args.name=lightning_logs",
        "--trainer.logger.init_args.version=null",
    )
    fit(TOY / "ew.yaml", *enc, "--trainer.max_steps", "2", *short, "--trainer.logger=false")
    try:
        fit(
            TOY / "ewplus.yaml",
            *enc,
            "--progressive.steps_per_scale",
            "1",
            *short,
            "--trainer.logger=lit_propulse.loggers.AutoWandbLogger",
            "--trainer.logger.init_args.mode=offline",
        )
    finally:
        if wandb.run is not None:
            wandb.finish()
    fit(TOY / "e2e_ew.yaml", *enc, "--model.init_args.gds.init_args.path", FIX, "--trainer.max_steps", "2", *short)
    fit(TOY / "e2e.yaml", *enc, "--progressive.steps_per_scale", "1", *short)

    runs = tmp_path / "runs" / "toy"
    for stage, export in (("gds", "gds.pt"), ("ew", "ew.pt"), ("ewplus", "ewplus.pt"), ("e2e_ew", "ew.pt"), ("e2e", "ewplus.pt")):
        assert (runs / stage / export).is_file() and (runs / stage / f"{export}.done").is_file(), stage
        assert (runs / stage / "checkpoints" / "last.ckpt").is_file(), stage
        assert (runs / stage / "images" / "val_latest.png").is_file(), stage
    assert (runs / "e2e_ew" / "ew_gds.pt").is_file() and (runs / "e2e" / "ewplus_gds.pt").is_file()  # E2E's co-trained G_ds
    logged = tmp_path / "elsewhere" / "lightning_logs" / "version_0"  # the logger kept its own directory...
    assert logged.is_dir() and not list(logged.rglob("*.pt")) and not (logged / "checkpoints").exists()  # ...and nothing else went there
    assert not (runs / "ew" / "metrics.csv").exists()
    assert yaml.safe_load((runs / "ew" / "config.yaml").read_text())["base"] is None  # the saved config is complete on its own
    assert len(list((runs / "ewplus" / "wandb").glob("offline-run-*"))) == 1
    assert (runs / "e2e" / "metrics.csv").is_file()


def test_pipeline_runs_the_stages_in_order_and_skips_finished_ones(tmp_path, capsys):
    """The toy pipeline's stages (the real stage YAMLs), shrunk per stage; a second run skips them all.
    The optional pSp stage is never trained: without its export the evaluation runs without the pSp
    row; once a finished export is there, the evaluation runs again with it."""
    import yaml

    from lit_propulse.cli import composed_view
    from lit_propulse.core.weights import save_module
    from lit_propulse.networks.psp import GradualStyleEncoder
    from lit_propulse.runs import mark_done

    shrink = [
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        *[f"{a}={b}" for a, b in zip(DATA[::2], DATA[1::2])],
    ]
    enc = ["--model.init_args.encoder.init_args.w_dim=64", f"--model.init_args.discriminator.init_args.path={FIX}"]
    spec = yaml.safe_load((TOY / "pipeline.yaml").read_text())
    spec["out_dir"] = str(tmp_path / "out")
    stage = {st["name"]: st for st in spec["stages"]}
    assert list(stage) == ["gds", "ew", "ewplus", "psp", "eval"] and stage["psp"]["optional"] is True
    for st in spec["stages"]:
        st["config"] = str(ROOT / st["config"])
        st["overrides"] = shrink + ([f"--model.init_args.gds.init_args.path={FIX}"] if st["name"] == "gds" else enc)
    stage["ew"]["overrides"] += ["--trainer.logger=false"]  # a stage without a logger still has its run directory
    stage["ewplus"]["overrides"] += ["--progressive.steps_per_scale=1"]
    # the evaluation stage: a delta on its YAML (base: the real file) shrinking it (fixture generator for
    # PULSE and pSp, 3 steps of PULSE and of the refinement, no trained metric nets); the methods list is given whole, as a list is replaced
    methods = composed_view(str(ROOT / stage["eval"]["config"]))["model"]["init_args"]["methods"]
    by_method = {m["init_args"]["name"]: m["init_args"] for m in methods}
    shipped = ["E_W (shipped)", "Pro-PULSE (shipped)", "Pro-PULSE refined (shipped)"]
    assert list(by_method) == ["bicubic", "PULSE", "E_W", "Pro-PULSE", "Pro-PULSE refined", "pSp", *shipped]
    assert (
        by_method["Pro-PULSE (shipped)"]["encoder"] == "lit_propulse/data/toy_ewplus_64.pt"
        and by_method["E_W (shipped)"]["gds"] == "lit_propulse/data/toy_gds_64.pt"
    )
    by_method["PULSE"].update(generator=FIX, cache_dir=str(tmp_path / "cache"), config={"steps": 3, "gaussian_fit_samples": 2000})
    by_method["Pro-PULSE refined"]["config"] = by_method["Pro-PULSE refined (shipped)"]["config"] = {"max_steps": 3}
    out = tmp_path / "out"  # the shipped rows (64-px exports) read this run's small exports here, which exist by the evaluation
    for name in shipped:
        by_method[name].update(gds=str(out / "gds" / "gds.pt"), encoder=str(out / ("ew/ew.pt" if name == "E_W (shipped)" else "ewplus/ewplus.pt")))
        if name != "E_W (shipped)":
            by_method[name]["ew"] = str(out / "ew" / "ew.pt")
    by_method["pSp"]["generator"] = FIX
    ev = {
        "base": str(ROOT / stage["eval"]["config"]),
        "trainer": {"enable_progress_bar": False},
        "model": {"init_args": {"methods": methods, "metrics": {"init_args": {"attribute_classifier": None, "niqe": False, "fid": "none"}}}},
        "data": {"init_args": {"num_train": 4, "num_test": 5, "batch_size": 5}},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    stage["eval"].update(config=str(tmp_path / "eval.yaml"), overrides=[])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml")]) == 0
    assert "psp: optional, not run here and no finished" in capsys.readouterr().out
    assert not (tmp_path / "out" / "psp").exists()
    for name, export in (("gds", "gds.pt"), ("ew", "ew.pt"), ("ewplus", "ewplus.pt"), ("eval", "report.json")):
        assert (tmp_path / "out" / name / export).is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("| gds |") == 1 and "ewplus.pt" in report
    assert not (tmp_path / "out" / "ew" / "metrics.csv").exists() and (tmp_path / "out" / "ew" / "checkpoints" / "last.ckpt").is_file()  # no logger
    # the evaluation used this run's exports (linked by method name) and its table is in the report
    linked = yaml.safe_load((tmp_path / "out" / "eval" / "pipeline_links.yaml").read_text())["model"]["init_args"]["methods"]
    by_name = {m["init_args"]["name"]: m["init_args"] for m in linked}
    assert by_name["Pro-PULSE"]["encoder"] == str(tmp_path / "out" / "ewplus" / "ewplus.pt") and by_name["E_W"]["encoder"] == str(
        tmp_path / "out" / "ew" / "ew.pt"
    )
    assert by_name["PULSE"]["generator"] == FIX  # the other items as the stage's config has them
    assert by_name["Pro-PULSE refined"]["encoder"] == str(tmp_path / "out" / "ewplus" / "ewplus.pt") and "pSp" not in by_name
    assert "| Pro-PULSE |" in report and "| PULSE |" in report and "| Pro-PULSE refined |" in report and "eval/grid.png" in report
    assert "| pSp |" not in report and "| psp |" in report and "optional: not run, no export" in report
    assert "/5 images met ε, steps per image mean" in report  # the refinement's settings line, written after the run
    capsys.readouterr()
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml")]) == 0
    assert capsys.readouterr().out.count("skipped") == 4
    # a finished pSp export appears (trained elsewhere): the evaluation runs again, with its row
    psp = tmp_path / "out" / "psp" / "psp.pt"
    psp.parent.mkdir()
    save_module(GradualStyleEncoder(8, 64, 10, input_size=64, stages=[(16, 1), (16, 1), (32, 1), (32, 1)]), psp)
    mark_done(psp)
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 3 and f"psp: optional, not run here; using its finished export {psp}" in out and f"eval: {psp} is newer than" in out
    linked = yaml.safe_load((tmp_path / "out" / "eval" / "pipeline_links.yaml").read_text())["model"]["init_args"]["methods"]
    assert {m["init_args"]["name"]: m["init_args"] for m in linked}["pSp"]["encoder"] == str(psp)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| pSp |" in report and "optional: export found" in report
    # a stage killed mid-run leaves its last export but no ".done" marker: the pipeline resumes it
    (tmp_path / "out" / "ewplus" / "ewplus.pt.done").unlink()
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 3 and "ewplus: interrupted earlier, resuming from" in out
    assert (tmp_path / "out" / "ewplus" / "ewplus.pt.done").is_file()


def test_toy_table_ii_pipeline_runs_every_row(tmp_path, capsys):
    """experiments/toy/table_ii.yaml (the seeded Table I/II analogue) through ``pipeline --seeds``, every
    stage shrunk (fixture generator, 2 steps, 1 step per scale), one seed: each variant trains from its
    own config list and links, and the evaluation scores every row (issue #15)."""
    import yaml

    from lit_propulse.cli import composed_view

    spec = yaml.safe_load((TOY / "table_ii.yaml").read_text())
    spec["out_dir"] = str(tmp_path / "out")
    shrink = ["--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false"]
    shrink += [f"{a}={b}" for a, b in zip(DATA[::2], DATA[1::2])]
    for st in spec["stages"]:
        configs = st["config"] if isinstance(st["config"], list) else [st["config"]]
        st["config"] = [str(ROOT / c) for c in configs]
        if st.get("command") == "test":
            continue
        text = "".join((ROOT / c).read_text() for c in configs)
        extra = list(shrink)
        if st["name"] in ("gds", "e2e_ew"):
            extra.append(f"--model.init_args.gds.init_args.path={FIX}")
        if st["name"] == "psp":
            extra += ["--model.init_args.encoder.init_args.w_dim=64", f"--model.init_args.generator.init_args.path={FIX}"]
        elif st["name"] != "gds":
            extra.append("--model.init_args.encoder.init_args.w_dim=64")
            if "discriminator: null" not in text:
                extra.append(f"--model.init_args.discriminator.init_args.path={FIX}")
        if "ewplus" in configs[0] or st["name"] == "e2e":
            extra.append("--progressive.steps_per_scale=1")
        st["overrides"] = [o for o in st.get("overrides", []) if not o.startswith(("--trainer.max_steps", "--progressive"))] + extra
    # the evaluation: its YAML (base) with the generator-bound methods on the fixture, 3 PULSE/refinement steps, no metric nets
    ev_stage = spec["stages"][-1]
    methods = composed_view(ev_stage["config"][0])["model"]["init_args"]["methods"]
    for m in methods:
        args = m["init_args"]
        if args["name"] == "PULSE":
            args.update(generator=FIX, cache_dir=str(tmp_path / "cache"), config={"steps": 3, "gaussian_fit_samples": 2000})
        if args["name"] == "pSp":
            args["generator"] = FIX
        if args["name"] == "Pro-PULSE refined":
            args["config"] = {"max_steps": 3}
    ev = {
        "base": ev_stage["config"][0],
        "trainer": {"enable_progress_bar": False},
        "model": {"init_args": {"methods": methods, "metrics": {"init_args": {"attribute_classifier": None, "niqe": False, "fid": "none"}}}},
        "data": {"init_args": {"num_train": 4, "num_test": 4, "batch_size": 4}},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    ev_stage["config"] = str(tmp_path / "eval.yaml")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml"), "--seeds", "5"]) == 0
    run = tmp_path / "out" / "seed5"
    rows = json.loads((run / "eval" / "report.json").read_text())["results"]
    assert list(rows) == [m["init_args"]["name"] for m in methods] and len(rows) == 12
    assert all(r["count"] == 4 for r in rows.values())
    # each E_W+ row read its own stage's export: different weights give different L_DS
    ewplus_rows = ["Pro-PULSE", "E_W+ direct", "E2E", "without E_W", "without G_ds", "without L_rec", "without L_adv"]
    assert len({rows[n]["l_ds"] for n in ewplus_rows}) == len(ewplus_rows)
    links = yaml.safe_load((run / "eval" / "pipeline_links.yaml").read_text())["model"]["init_args"]["methods"]
    by_name = {m["init_args"]["name"]: m["init_args"] for m in links}
    assert by_name["E2E"]["gds"] == str(run / "e2e" / "ewplus_gds.pt") and by_name["without L_adv"]["encoder"] == str(run / "without_adv" / "ewplus.pt")
    # PULSE and pSp search the generator this seed's G_ds carries, not whatever file is shipped now
    assert by_name["PULSE"]["generator"] == by_name["pSp"]["generator"] == str(run / "gds" / "gds.pt")
    assert yaml.safe_load((run / "e2e" / "pipeline_links.yaml").read_text())["model"]["init_args"]["gds"]["init_args"]["path"] == str(
        run / "e2e_ew" / "ew_gds.pt"
    )
    direct = yaml.safe_load((run / "ewplus_direct" / "config.yaml").read_text())
    assert direct["model"]["init_args"]["ew_encoder"] is None and direct["progressive"]["direct"] is True
    assert "| Pro-PULSE |" in (tmp_path / "out" / "seeds.md").read_text()
    assert "seeds 5 done" in capsys.readouterr().out


def test_stage_test_command_reports_metrics_of_the_checkpoint(stages, tmp_path):
    """`python -m lit_propulse test --config experiments/toy/ewplus.yaml --ckpt_path ...`: the stage scores
    itself on the whole test split (report.json with every test image once) and validation logs the
    configured metric subset."""
    import json

    ck = stages / "ewplus" / "checkpoints" / "last.ckpt"
    args = [*encoder_args("ewplus", stages), *QUIET, *DATA, *run_dir_args(tmp_path / "t")]
    assert main(["test", "--config", str(TOY / "ewplus.yaml"), *args, "--ckpt_path", str(ck)]) == 0
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    assert list(rep["results"]) == ["Pro-PULSE"] and rep["results"]["Pro-PULSE"]["count"] == 8
    assert {"l_ds", "psnr", "ssim", "success_rate", "attr_diff", "fid", "niqe"} <= set(rep["results"]["Pro-PULSE"])  # the YAML's toy metric suite
    assert (tmp_path / "t" / "report.md").is_file() and (tmp_path / "t" / "strip.png").is_file()
    assert any(r.get("val/attr_diff") for r in read_metrics(stages / "ew"))  # the toy YAMLs' validation subset
    # validation with a metric subset (the StageEvaluation callback's val_metrics)
    ew_yaml = with_val_metrics(TOY / "ew.yaml", ["psnr", "consistency"], tmp_path / "ew.yaml")
    fit(
        ew_yaml,
        *encoder_args("ew", tmp_path),
        "--model.init_args.gds.init_args.path",
        str(stages / "gds" / "gds.pt"),
        *short_run(2),
        *run_dir_args(tmp_path / "v"),
    )
    rows = read_metrics(tmp_path / "v")
    assert any(r.get("val/psnr") for r in rows) and any(r.get("val/l_ds") for r in rows)


def test_training_modules_load_no_evaluation_code():
    """The stage modules score nothing themselves (layer 4 below evaluation, layer 5): importing them
    loads neither lit_propulse.evaluation nor PULSE nor NIQE."""
    import subprocess
    import sys

    code = (
        "import sys, lit_propulse.modules.propulse, lit_propulse.modules.attribute_module; "
        "print(sorted(m for m in sys.modules if m.startswith(('lit_propulse.evaluation', 'lit_propulse.pulse', 'lit_propulse.metrics.niqe'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_grid_runs_variants_resumably_and_collects_table_ii(stages, tmp_path, capsys):
    """`grid` over three ablation deltas of the toy E_W+ stage: two train + evaluate, one (only_id: no
    identity net on toy faces) fails in its row without stopping the grid; a second call trains nothing."""
    variants = [str(ROOT / "experiments" / "ablations" / f"{v}.yaml") for v in ("without_adv", "only_id", "ewplus_direct")]
    common = [
        "--model.init_args.gds.init_args.path",
        str(stages / "gds" / "gds.pt"),
        "--model.init_args.encoder.init_args.w_dim",
        "64",
        "--model.init_args.ew_encoder.init_args.path",
        str(stages / "ew" / "ew.pt"),
        "--progressive.steps_per_scale",
        "1",
        "--trainer.val_check_interval",
        "3",
        "--trainer.limit_val_batches",
        "1",
        *QUIET,
        *DATA,
    ]
    argv = ["grid", "--variants", *variants, "--base-dir", str(TOY), "--out", str(tmp_path / "g"), *common]
    assert main(argv) == 1  # one variant failed
    table = (tmp_path / "g" / "table_ii.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "variant" not in line}
    assert set(rows) == {"without_adv", "only_id", "ewplus_direct"}
    assert "fit failed" in rows["only_id"] and "ok" in rows["without_adv"] and "ok" in rows["ewplus_direct"]
    with open(tmp_path / "g" / "table_ii.csv") as f:
        ok = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    assert len(ok) == 2 and all(float(r["psnr"]) > 0 and float(r["l_ds"]) >= 0 for r in ok)
    capsys.readouterr()
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.count("trained already") == 2 and "without_adv: fit" not in out


def test_ddp_spawn_two_processes_fit_then_test_count_each_image_once(stages, tmp_path):
    """A stage under DDP (2 CPU processes, gloo; ddp_spawn because plain ddp would re-launch pytest):
    fit, then test on the checkpoint; the test report counts every test image exactly once (8 images,
    batch 3 per process: uneven shards, nothing padded) and files are written once (rank 0)."""
    import json

    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn_find_unused_parameters_true"]
    args = [*encoder_args("ew", stages), "--data.init_args.batch_size", "3", *ddp]
    fit(
        TOY / "ew.yaml",
        *args,
        *short_run(2),
        *run_dir_args(tmp_path / "fit"),
    )
    assert (tmp_path / "fit" / "ew.pt").is_file() and (tmp_path / "fit" / "checkpoints" / "last.ckpt").is_file()
    assert (
        main(
            [
                "test",
                "--config",
                str(TOY / "ew.yaml"),
                *QUIET,
                *DATA,
                *args,
                *run_dir_args(tmp_path / "test"),
                "--ckpt_path",
                str(tmp_path / "fit" / "checkpoints" / "last.ckpt"),
            ]
        )
        == 0
    )
    rep = json.loads((tmp_path / "test" / "report.json").read_text())
    assert rep["world_size"] == 2 and rep["num_images"] == 8 and rep["results"]["E_W"]["count"] == 8
