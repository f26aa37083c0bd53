"""Toy-FID of the shipped toy StyleGAN2 against real toy faces, next to a random-initialised generator
of the same architecture (issue: report the toy generator's quality). FID on the toy attribute
classifier's features (lit_propulse/data/toy_attributes_64.pt), not Inception's.

    python benchmarks/toy_fid.py [--num 2000]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from datamodules.toy_faces import ToyFacesDataset
from lit_propulse.core.weights import load_module
from lit_propulse.metrics.quality import FIDFeatures
from lit_propulse.networks.stylegan2 import Generator


def fid_of(fake_batches, real: torch.Tensor, classifier) -> float:
    fid = FrechetInceptionDistance(feature=FIDFeatures(classifier, "toy attribute-classifier features"))
    for chunk in real.split(250):
        fid.update(chunk, real=True)
    for chunk in fake_batches:
        fid.update(chunk, real=False)
    return float(fid.compute())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num", type=int, default=2000)
    ap.add_argument("--generator", default="lit_propulse/data/toy_stylegan2_64.pt")
    ap.add_argument("--classifier", default="lit_propulse/data/toy_attributes_64.pt")
    args = ap.parse_args()
    t0 = time.time()
    classifier = load_module(args.classifier, what="attribute classifier").eval()
    test = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=20000, num_test=args.num)
    real = torch.stack([test[i]["hr"] for i in range(len(test))])
    train = ToyFacesDataset("train", hr_size=64, lr_size=8, num_train=args.num, num_test=1)
    real2 = torch.stack([train[i]["hr"] for i in range(len(train))])
    G = Generator.from_checkpoint(args.generator).eval()
    torch.manual_seed(0)
    G_rand = Generator(**G.arch).eval()

    def samples(gen):
        with torch.no_grad():
            for _ in range(args.num // 250):
                yield gen(torch.randn(250, gen.arch["style_dim"]), truncation=1.0).image.clamp(-1, 1)

    print(f"real train faces vs real test faces (the floor): {fid_of(real2.split(250), real, classifier):.3f}")
    print(f"shipped toy generator (g_ema, truncation 1):     {fid_of(samples(G), real, classifier):.3f}")
    print(f"random-initialised generator, same arch:         {fid_of(samples(G_rand), real, classifier):.3f}")
    print(f"({args.num} images each; {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
