"""The README's PULSE picture on toy faces: LR | 4 PULSE samples | the samples downscaled by DS | GT.

    python benchmarks/make_pulse_grid.py [--generator lit_propulse/data/toy_stylegan2_64.pt] [--out docs/pulse_grid.png]

Uses toy *test* faces (never seen by the generator's training) at LR 8x8, the default PULSE settings,
and prints the per-sample downscale losses and the success rate at eps.
"""

from __future__ import annotations

import argparse

import torch

from datamodules.toy_faces import ToyFacesDataset
from lit_propulse.core.downscale import downscale
from lit_propulse.core.images import rows_grid, save_image
from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.pulse import PULSE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="lit_propulse/data/toy_stylegan2_64.pt")
    ap.add_argument("--out", default="docs/pulse_grid.png")
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    G = Generator.from_checkpoint(args.generator).eval()
    data = ToyFacesDataset("test", hr_size=G.size, lr_size=8, num_train=50_000, num_test=args.faces, cache="none")
    gt = torch.stack([data[i]["hr"] for i in range(args.faces)])
    lr = torch.stack([data[i]["lr"] for i in range(args.faces)])
    pulse = PULSE.from_generator(G)
    res = pulse.sample(lr, args.samples)
    sr = res.image.clamp(-1, 1).view(args.faces, args.samples, 3, G.size, G.size)
    cols = [lr] + [sr[:, k] for k in range(args.samples)] + [downscale(sr[:, k], 8) for k in range(args.samples)] + [gt]
    save_image(rows_grid(cols, G.size), args.out)
    loss = res.loss.view(args.faces, args.samples)
    print(f"per-sample L_DS:\n{loss}\nsuccess at eps={res.eps}: {int(res.success.sum())}/{res.success.numel()}")


if __name__ == "__main__":
    main()
