"""Generator-sampled data (ground truth on the generator's manifold) and the paper-setting YAMLs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_propulse.core.downscale import downscale
from datamodules.generated import GeneratorSamplesDataModule, GeneratorSamplesDataset
from lit_propulse.cli import main
from lit_propulse.networks.checkpoints import load_generator

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


@pytest.mark.parametrize("name", ["gds", "ew", "ewplus", "e2e"])
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
    assert "pretrained/stylegan2-ffhq-config-f.pt" in err or "runs/gds/gds.pt" in err
    if name != "gds":
        assert "model_ir_se50.pth" in err
    else:
        assert "vgg16-397923af.pth" in err
