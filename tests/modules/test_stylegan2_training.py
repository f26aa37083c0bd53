"""StyleGAN2Module: a few steps of the real toy config (shrunk), regularisers, export, continuation."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lit_propulse.cli import main
from lit_propulse.networks.stylegan2 import Discriminator, Generator

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "experiments" / "toy" / "stylegan2.yaml"
TINY = "{4: 16, 8: 16, 16: 16, 32: 8}"


def run(tmp: Path, *extra: str) -> None:
    argv = [
        "fit",
        "--config",
        str(CFG),
        "--data.init_args.hr_size",
        "32",
        "--data.init_args.lr_size",
        "8",
        "--data.init_args.num_train",
        "64",
        "--data.init_args.num_test",
        "8",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
        "--model.init_args.generator.init_args.channels",
        TINY,
        "--model.init_args.generator.init_args.style_dim",
        "16",
        "--model.init_args.discriminator.init_args.channels",
        TINY,
        "--model.init_args.r1_every",
        "2",
        "--model.init_args.pl_every",
        "2",
        "--model.init_args.latent_avg_samples",
        "256",
        "--trainer.precision",
        "32-true",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp),
        "--trainer.logger.init_args.save_dir",
        str(tmp),
        "--trainer.callbacks",
        "lit_propulse.callbacks.stylegan2.GeneratorSnapshot",
        "--trainer.callbacks.every_n_steps",
        "2",
        "--trainer.callbacks.num_samples",
        "4",
        *extra,
    ]
    assert main(argv) == 0


def test_trains_regularises_and_exports_in_the_port_layout(tmp_path):
    run(tmp_path, "--model.init_args.total_kimg", "0.016")  # 4 minibatches of 4
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # every 2nd minibatch computes a new value (the CSV repeats the last value in between)
    r1 = [float(r["loss/D/r1"]) for r in rows if r.get("loss/D/r1")]
    pl = [float(r["loss/G/path_length"]) for r in rows if r.get("loss/G/path_length")]
    assert len(rows) == 4 and len(set(r1)) == 2 and len(set(pl)) == 2
    assert r1[0] == r1[1] != r1[2] == r1[3] and pl[0] == pl[1] != pl[2] == pl[3]
    assert all(math.isfinite(v) and v > 0 for v in r1 + pl)
    kimg = [float(r["progress/kimg"]) for r in rows if r.get("progress/kimg")]
    assert kimg[-1] == pytest.approx(0.016)
    export = tmp_path / "stylegan2-last.pt"
    G, D = Generator.from_checkpoint(export), Discriminator.from_checkpoint(export)
    assert G.size == 32 and G.arch["channels"] == {4: 16, 8: 16, 16: 16, 32: 8} and bool(G.has_latent_avg)
    raw = torch.load(export, weights_only=True)
    assert {"g_ema", "g", "d", "latent_avg"} <= set(raw) and "style.1.weight" in raw["g_ema"]
    assert D(torch.randn(4, 3, 32, 32)).shape == (4, 1)
    assert (tmp_path / "samples" / "latest.png").stat().st_size > 0

    # continue from the export: weights and the kimg counter carry over
    cont = tmp_path / "cont"
    run(cont, "--model.init_args.total_kimg", "0.024", "--model.init_args.init_from", str(export))
    with open(cont / "metrics.csv") as f:
        kimg2 = [float(r["progress/kimg"]) for r in csv.DictReader(f) if r.get("progress/kimg")]
    assert kimg2[0] == pytest.approx(0.02) and kimg2[-1] == pytest.approx(0.024)


def test_global_step_counts_minibatches_so_checkpoints_land_every_n_steps(tmp_path):
    """With lazy R1 and path-length steps every 2nd minibatch, trainer.global_step still counts
    minibatches: ModelCheckpoint(every_n_train_steps=2) writes at 2, 4 and 6 (Lightning counts each
    LightningOptimizer step; the regularisers' extra steps used to make it skip multiples of N)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from datamodules.toy_faces import ToyFacesDataModule
    from lit_propulse.modules.stylegan2_module import StyleGAN2Module

    torch.manual_seed(0)
    ch = {4: 16, 8: 16, 16: 16, 32: 8}
    model = StyleGAN2Module(
        Generator(32, style_dim=16, n_mlp=2, channels=ch), Discriminator(32, channels=ch), r1_gamma=0.1, r1_every=2, pl_every=2, latent_avg_samples=256
    )
    dm = ToyFacesDataModule(hr_size=32, lr_size=8, num_train=64, num_test=8, batch_size=4)
    ck = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=6, logger=False, callbacks=[ck], limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, dm)
    assert trainer.global_step == 6 == int(model.steps)
    assert sorted(p.name for p in tmp_path.glob("step=*.ckpt")) == ["step=2.ckpt", "step=4.ckpt", "step=6.ckpt"]
    # fp16 would need Lightning's GradScaler on every step (CPU turns 16-mixed into bf16, so the check is called directly)
    with pytest.raises(ValueError, match="precision '16-mixed' is not supported"):
        StyleGAN2Module.on_fit_start(SimpleNamespace(trainer=SimpleNamespace(precision="16-mixed")))
