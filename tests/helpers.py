"""Constants and small helpers shared by test files (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lit_propulse.cli import main
from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
#: the port-layout StyleGAN2 fixture (64 px) with the outputs the standard port computes
PORT_G64 = FIXTURES / "stylegan2_port_g64" / "checkpoint.pt"

#: tiny stage exports: a 64 px generator, LR 8, w_dim 32 (random weights)
SIZE, LR, W_DIM = 64, 8, 32
TINY_G = dict(size=SIZE, style_dim=W_DIM, n_mlp=1, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
ENC = dict(channels=8, out_channels=W_DIM, reduction=4)

#: LightningCLI flags of a quiet test run: no progress bar, no model summary, no sanity validation
QUIET_TRAINER = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]


def run(*argv: object) -> int:
    """``python -m lit_propulse <argv>`` in this process; returns the exit code."""
    return main([str(a) for a in argv])


def print_config(capsys, *argv: str) -> dict:
    """The configuration ``python -m lit_propulse <argv> --print_config`` prints, parsed."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*argv, "--print_config"])
    assert info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def by_file(rep: dict) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in rep["inputs"]}


def noisy_generator(size: int, w_dim: int, noise: float = 0.2) -> Generator:
    """A small random StyleGAN2 (seed 0; 2 mapping layers, 16 channels) with its ``latent_avg`` and
    noise that shows (a fresh generator's noise strengths are 0, a trained one's are not); frozen, eval."""
    torch.manual_seed(0)
    g = Generator(size, style_dim=w_dim, n_mlp=2, channels={2**k: 16 for k in range(2, size.bit_length())})
    g.compute_latent_avg(1000)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if "noise" in name:
                p.fill_(noise)
    return g.eval().requires_grad_(False)


def stage_networks(G: Generator, lr_size: int) -> tuple[DeeplySupervisedGenerator, EWEncoder, EWPlusEncoder]:
    """Small random G_ds (side heads on ``G``), E_W and E_W+ (scales 16, 32) for ``lr_size`` LRs (seed 0),
    the encoders starting at ``G``'s mean latent; eval mode."""
    torch.manual_seed(0)
    w_dim = G.w_dim
    gds = DeeplySupervisedGenerator(G, lr_size=lr_size, head_hidden=(8, 8)).eval()
    small = dict(channels=16, out_channels=w_dim)
    ew = EWEncoder(lr_size, w_dim, G.num_ws, num_groups=1, rcabs_per_group=1, **small).eval()
    ewp = EWPlusEncoder(lr_size, w_dim, G.num_ws, [16, 32], rcabs_per_branch=1, **small).eval()
    for enc in (ew, ewp):
        enc.w_offset.copy_(G.latent_avg)
    return gds, ew, ewp


def quick_pulse(cache_dir, name: str = "PULSE") -> dict:
    """An evaluation config's PULSE method: 3 search steps on the fixture generator, a 2,000-sample Gaussian fit."""
    return {
        "class_path": "lit_propulse.evaluation.methods.PULSEMethod",
        "init_args": {"name": name, "generator": str(PORT_G64), "cache_dir": str(cache_dir), "config": {"steps": 3, "gaussian_fit_samples": 2000}},
    }
