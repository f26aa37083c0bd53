"""Fit the toy domain's NIQE pristine model: 16-px blocks (the published model's 96-px blocks do not
fit a 64² face) on 1,000 clean toy training faces. Writes lit_propulse/data/niqe_toy_pristine.npz,
which experiments/toy/eval.yaml uses. Toy NIQE values are not comparable with the published NIQE.

    python benchmarks/fit_toy_niqe.py [--out lit_propulse/data/niqe_toy_pristine.npz]
"""

from __future__ import annotations

import argparse

import torch

from datamodules.toy_faces import ToyFacesDataset
from lit_propulse.metrics.niqe import NIQE, fit_pristine_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="lit_propulse/data/niqe_toy_pristine.npz")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--block-size", type=int, default=16)
    args = ap.parse_args()
    ds = ToyFacesDataset("train", hr_size=64, lr_size=8, num_train=args.num, num_test=1)
    faces = torch.stack([ds[i]["hr"] for i in range(len(ds))])  # [N, 3, 64, 64]
    params = fit_pristine_model(faces.split(100), block_size=args.block_size)
    params.save(args.out)
    test = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=args.num, num_test=64)
    held = torch.stack([test[i]["hr"] for i in range(len(test))])
    for name, imgs in (
        ("clean held-out faces", held),
        ("+ noise 0.1", (held + 0.1 * torch.randn_like(held)).clamp(-1, 1)),
        ("bicubic x8 from LR", torch.nn.functional.interpolate(torch.stack([test[i]["lr"] for i in range(len(test))]), size=64, mode="bicubic").clamp(-1, 1)),
    ):
        m = NIQE(params=args.out)
        m.update(imgs)
        print(f"{name}: toy NIQE {float(m.compute()):.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
