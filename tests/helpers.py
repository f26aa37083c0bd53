"""Constants and small helpers shared by test files (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

from lit_propulse.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
#: the port-layout StyleGAN2 fixture (64 px) with the outputs the standard port computes
PORT_G64 = FIXTURES / "stylegan2_port_g64" / "checkpoint.pt"

#: tiny stage exports: a 64 px generator, LR 8, w_dim 32 (random weights)
SIZE, LR, W_DIM = 64, 8, 32
TINY_G = dict(size=SIZE, style_dim=W_DIM, n_mlp=1, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
ENC = dict(channels=8, out_channels=W_DIM, reduction=4)


def run(*argv: object) -> int:
    """``python -m lit_propulse <argv>`` in this process; returns the exit code."""
    return main([str(a) for a in argv])


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def by_file(rep: dict) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in rep["inputs"]}
