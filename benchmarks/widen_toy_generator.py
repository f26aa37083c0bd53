"""Widen a trained toy StyleGAN2 export without changing what it computes (issue #15: capacity).

    python benchmarks/widen_toy_generator.py lit_propulse/data/toy_stylegan2_64.pt runs/toy_stylegan2_wide_init.pt \
        --channels 32=128 64=64

Writes the wider export (:func:`lit_propulse.networks.checkpoints.widen_trainer_checkpoint`) and
prints the check: the largest difference between the old and the new generator's images (8 z, the
stored noise) and discriminator logits, the parameter counts and the file size. Continue training it
with ``experiments/toy/stylegan2_wide.yaml`` (its channel table must match ``--channels``).
"""

from __future__ import annotations

import argparse
import os

import torch

from lit_propulse.networks.checkpoints import load_checkpoint_file, widen_trainer_checkpoint
from lit_propulse.networks.stylegan2 import Discriminator, Generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="trainer export (g_ema, g, d)")
    ap.add_argument("dst", help="where to write the wider export")
    ap.add_argument("--channels", nargs="+", required=True, help="RES=CHANNELS pairs, e.g. 32=128 64=64")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new channels' initialisation")
    args = ap.parse_args()
    try:
        table = {int(r): int(c) for r, c in (p.split("=") for p in args.channels)}
    except ValueError:
        ap.error(f"--channels takes RES=CHANNELS pairs, got {args.channels}")
    torch.save(widen_trainer_checkpoint(load_checkpoint_file(args.src), table, seed=args.seed, source=args.src), args.dst)
    G0, G1 = Generator.from_checkpoint(args.src).eval(), Generator.from_checkpoint(args.dst).eval()
    z = torch.randn(8, G0.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = G0(z, noise="const").image, G1(z, noise="const").image
        d = (Discriminator.from_checkpoint(args.src)(a) - Discriminator.from_checkpoint(args.dst)(a)).abs().max()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"channels {G0.arch['channels']} -> {G1.arch['channels']}")
    print(f"generator parameters {count(G0):,} -> {count(G1):,}; file {os.path.getsize(args.src) / 1e6:.1f} -> {os.path.getsize(args.dst) / 1e6:.1f} MB")
    print(f"max |image difference| {(a - b).abs().max():.2e}, max |D logit difference| {d:.2e} (float rounding only)")


if __name__ == "__main__":
    main()
