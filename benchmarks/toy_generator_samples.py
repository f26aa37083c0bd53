"""The toy StyleGAN2's sample pictures in the docs: a fixed-z grid (docs/toy_stylegan2_samples.png, 8×8
samples of ``g_ema``, truncation 1, noise seeded) and real toy test faces above samples
(docs/images/toy_generator_vs_real.png: one row of real faces, two of samples, each at 2×).

    python benchmarks/toy_generator_samples.py [GENERATOR.pt] [--out-grid ...] [--out-compare ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.make_toy_grid import grid  # noqa: E402
from datamodules.toy_faces import render_toy_face  # noqa: E402
from lit_propulse.core.images import to_uint8  # noqa: E402
from lit_propulse.networks.stylegan2 import Generator  # noqa: E402


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generator", nargs="?", default=str(ROOT / "lit_propulse" / "data" / "toy_stylegan2_64.pt"))
    ap.add_argument("--out-grid", default=str(ROOT / "docs" / "toy_stylegan2_samples.png"))
    ap.add_argument("--out-compare", default=str(ROOT / "docs" / "images" / "toy_generator_vs_real.png"))
    args = ap.parse_args(argv)
    G = Generator.from_checkpoint(args.generator).eval()
    torch.manual_seed(0)
    fake = to_uint8(G(torch.randn(64, G.z_dim), truncation=1.0, noise="random").image).permute(0, 2, 3, 1).numpy()
    Image.fromarray(grid(fake, 8, 8)).save(args.out_grid)
    real = np.stack([render_toy_face(0, 50_000 + i, 64)[0] for i in range(8)])
    both = np.concatenate([real, fake[:16]]).repeat(2, axis=1).repeat(2, axis=2)
    Image.fromarray(grid(both, 3, 8)).save(args.out_compare)
    print(f"wrote {args.out_grid} and {args.out_compare}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
