"""Generator-sampled data (ground truth on the generator's manifold) and the paper-setting YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.generated import GeneratorSamplesDataModule, GeneratorSamplesDataset
from lit_propulse.cli import main
from lit_propulse.core.downscale import downscale
from lit_propulse.networks.checkpoints import load_generator
from tests.helpers import print_config

ROOT = Path(__file__).resolve().parents[1]
FIX = str(ROOT / "tests" / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt")


@pytest.fixture(scope="module")
def G():
    return load_generator(FIX)


def test_items_are_the_generators_own_images_with_their_wplus(G):
    ds = GeneratorSamplesDataset(G, num_items=3, lr_size=8, seed=5, split="test")
    item = ds[1]
    with torch.no_grad():
        img = G.synthesis(item["ws"][None], noise="const").image.clamp(-1, 1)[0]
    assert torch.allclose(item["hr"], img, atol=1e-5)
    assert torch.allclose(item["lr"], downscale(img[None], 8)[0], atol=1e-6)
    assert item["ws"].shape == (G.num_ws, G.w_dim)


def test_deterministic_and_splits_disjoint(G):
    a = GeneratorSamplesDataset(G, 4, 8, seed=1, split="train")
    b = GeneratorSamplesDataset(G, 4, 8, seed=1, split="train")
    t = GeneratorSamplesDataset(G, 4, 8, seed=1, split="test")
    assert torch.equal(a.latent(2), b.latent(2)) and not torch.equal(a.latent(2), t.latent(2))
    assert not torch.equal(a.latent(0), a.latent(1))
    with pytest.raises(ValueError, match="lr_size"):
        GeneratorSamplesDataset(G, 4, 48)


def test_datamodule_batches_and_render_off(G):
    dm = GeneratorSamplesDataModule(G, lr_size=8, num_train=8, num_test=4, batch_size=4, render=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.hr.shape == (4, 3, 64, 64) and batch.lr.shape == (4, 3, 8, 8) and batch.hr.abs().sum() == 0
    assert len(list(dm.test_dataloader())) == 1


@pytest.mark.slow  # every YAML resolved through LightningCLI: seconds each
@pytest.mark.parametrize("name", ["gds", "ew", "ewplus", "e2e_ew", "e2e"])
def test_paper_yamls_parse_and_list_their_missing_files(name, tmp_path, capsys, monkeypatch):
    """The paper-setting configs (FFHQ 1024, CelebA-HQ, ArcFace, VGG) parse as they are; with no
    weights on this machine, fit stops before building anything and names every missing file."""
    monkeypatch.chdir(tmp_path)
    cfg = str(ROOT / "experiments" / f"{name}.yaml")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", cfg, "--print_config"])
    assert info.value.code == 0
    assert main(["fit", "--config", cfg]) == 2
    err = capsys.readouterr().err
    generator = {"ew": "runs/gds/gds.pt", "ewplus": "runs/gds/gds.pt", "e2e": "runs/e2e_ew/ew_gds.pt"}.get(name, "pretrained/stylegan2-ffhq-config-f.pt")
    assert f"model.init_args.gds.init_args.path = {generator}: missing" in err
    if name != "gds":
        assert "model_ir_se50.pth" in err
    if name in ("gds", "e2e_ew", "e2e"):  # Eq. (1) with L_pp
        assert "vgg16-397923af.pth" in err


# ----------------------------------------------------------------------------------------------
# Stage YAMLs: deltas on shared bases (experiments/base/), one run directory each

#: every stage YAML -> the subcommand it is for (the evaluations are `test` runs)
STAGE_YAMLS = {
    str(p.relative_to(ROOT)): "test" if p.stem == "eval" or p.stem.startswith("eval_") else "fit"
    for p in sorted([*ROOT.glob("experiments/*.yaml"), *ROOT.glob("experiments/toy/*.yaml")])
    if "\nstages:" not in "\n" + p.read_text()  # pipeline files (pipeline.yaml, table_ii.yaml) are not stages
}


@pytest.mark.slow  # every YAML resolved through LightningCLI: seconds each
def test_every_stage_yaml_is_a_delta_with_one_run_directory(capsys, monkeypatch):
    """No stage YAML restates the logger or the standard checkpointing (they are in experiments/base/);
    composed, every stage's logger writes in trainer.default_root_dir, its checkpoints go to
    <run dir>/checkpoints, and no two stages share a run directory."""
    import yaml

    monkeypatch.chdir(ROOT)
    assert {f"experiments/{d}{n}.yaml" for d in ("", "toy/") for n in ("gds", "ew", "ewplus", "e2e_ew", "e2e", "attributes", "eval")} <= set(STAGE_YAMLS)
    run_dirs = {}
    for path, command in STAGE_YAMLS.items():
        own = yaml.safe_load((ROOT / path).read_text())
        assert own.get("base"), f"{path}: names no base"
        assert "logger" not in own.get("trainer", {}) or "class_path" not in own["trainer"]["logger"], f"{path} restates the logger"
        if path not in ("experiments/toy/stylegan2.yaml", "experiments/toy/stylegan2_continue.yaml"):  # (no validation: own cadence, the whole list)
            assert "callbacks" not in own.get("trainer", {}), f"{path}: add callbacks with `callbacks+:`; `callbacks:` drops the base's checkpointing"
        trainer = print_config(capsys, command, "--config", path)["trainer"]
        root = trainer["default_root_dir"]
        assert trainer["logger"]["class_path"].startswith("lit_propulse.loggers.") and trainer["logger"]["init_args"]["save_dir"] == root, path
        checkpoints = [c["init_args"] for c in trainer["callbacks"] or [] if c["class_path"].endswith("ModelCheckpoint")]
        assert [c["dirpath"] for c in checkpoints] == ([f"{root}/checkpoints"] if command == "fit" else []), path
        assert all(c["save_last"] for c in checkpoints)
        run_dirs[path] = root
    assert len(set(run_dirs.values())) == len(run_dirs), run_dirs


#: what the E2E stages set beyond the stage they extend (the rest must stay equal, so the two cannot drift)
E2E_KEYS = ("gds", "ew_encoder", "train_side_heads", "gds_loss")


def _without_e2e_keys(cfg: dict) -> dict:
    cfg.pop("base")
    cfg["trainer"]["logger"]["init_args"].pop("job_type", None)  # W&B's label of the stage (paper setting)
    for key in E2E_KEYS:
        cfg["model"]["init_args"].pop(key, None)
    return cfg


@pytest.mark.slow  # every YAML resolved through LightningCLI: seconds each
@pytest.mark.parametrize("domain", ["", "toy/"])
@pytest.mark.parametrize(("e2e", "stage"), [("e2e_ew", "ew"), ("e2e", "ewplus")])
def test_e2e_stages_are_their_pro_pulse_stage_with_trained_branches(capsys, monkeypatch, domain, e2e, stage):
    """Each E2E stage YAML (toy and paper) is the Pro-PULSE stage it extends plus the branches training
    (train_side_heads, Eq. (1)) and where its G_ds (and E_W) come from; everything else, and the run
    directory apart, composes to the same config."""
    monkeypatch.chdir(ROOT)
    mine = print_config(capsys, "fit", "--config", f"experiments/{domain}{e2e}.yaml")
    assert mine["model"]["init_args"]["train_side_heads"] is True and mine["model"]["init_args"]["gds_loss"]["class_path"].endswith(".GdsLoss")
    assert mine["trainer"]["default_root_dir"] == f"runs/{domain}{e2e}"
    theirs = print_config(capsys, "fit", "--config", f"experiments/{domain}{stage}.yaml", "--trainer.default_root_dir", f"runs/{domain}{e2e}")
    assert _without_e2e_keys(mine) == _without_e2e_keys(theirs)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bases_are_expanded_in_order_once_each_relative_to_their_file(tmp_path):
    from lit_propulse.cli import config_chain, expand_bases

    run = _write(tmp_path / "base" / "run.yaml", "seed_everything: 1\n")
    fit = _write(tmp_path / "base" / "fit.yaml", "base: run.yaml\n")
    toy = _write(tmp_path / "base" / "toy.yaml", "base: run.yaml\n")  # a diamond: run.yaml once, first
    stage = _write(tmp_path / "toy" / "ew.yaml", "base: [../base/fit.yaml, ../base/toy.yaml]\n")
    delta = _write(tmp_path / "delta.yaml", "base: toy/ew.yaml\n")
    s = str
    assert config_chain(s(stage)) == [s(run), s(fit), s(toy), s(stage)]
    argv = ["fit", "--config", s(stage), "--trainer.max_steps=3", f"--config={delta}"]
    expanded = expand_bases(argv)
    assert expanded == ["fit", "--config", s(run), "--config", s(fit), "--config", s(toy), "--config", s(stage), "--trainer.max_steps=3", f"--config={delta}"]
    assert expand_bases(expanded) == expanded  # idempotent (Lightning's DDP launcher re-runs the expanded argv)
    assert expand_bases(["fit", "-c", s(run), "--config", s(fit)]) == ["fit", "-c", s(run), "--config", s(fit)]  # given already


@pytest.mark.parametrize("case", ["missing", "loop", "cli_flag"])
def test_bad_bases_are_one_line_errors(case, tmp_path, capsys):
    if case == "missing":
        cfg = _write(tmp_path / "a.yaml", "base: nope.yaml\n")
        argv, expect = ["fit", "--config", str(cfg)], "nope.yaml"
    elif case == "loop":
        _write(tmp_path / "b.yaml", "base: a.yaml\n")
        cfg = _write(tmp_path / "a.yaml", "base: b.yaml\n")
        argv, expect = ["fit", "--config", str(cfg)], "loops back"
    else:
        argv, expect = ["fit", "--base", "x.yaml"], "--config A.yaml --config B.yaml"
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expect in err[0]


@pytest.mark.slow  # every YAML resolved through LightningCLI: seconds each
def test_a_stage_appends_callbacks_to_its_bases_and_the_command_line_after_it(tmp_path, capsys, monkeypatch):
    """`callbacks+:` in a config file appends to the bases' list (jsonargparse list append); a later
    `callbacks:` replaces it; `--trainer.callbacks+=` on the command line appends after the files."""
    monkeypatch.chdir(ROOT)
    names = lambda cfg: [c["class_path"].rsplit(".", 1)[1] for c in cfg["trainer"]["callbacks"]]  # noqa: E731
    assert names(print_config(capsys, "fit", "--config", "experiments/toy/ew.yaml")) == [
        "ModelCheckpoint",
        "StageExport",
        "ValidationImages",
        "StageEvaluation",
    ]
    appended = print_config(
        capsys,
        "fit",
        "--config",
        "experiments/toy/ew.yaml",
        "--trainer.callbacks+=lit_propulse.callbacks.predict.SidePredictionWriter",
        "--trainer.callbacks.output_dir=out",
    )
    assert names(appended)[-1] == "SidePredictionWriter" and len(names(appended)) == 5
    only = _write(
        tmp_path / "only.yaml", "trainer:\n  callbacks:\n    - class_path: lit_propulse.callbacks.export.StageExport\n      init_args: {path: x.pt}\n"
    )
    assert names(print_config(capsys, "fit", "--config", "experiments/toy/ew.yaml", "--config", str(only))) == ["StageExport"]
