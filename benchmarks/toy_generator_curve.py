"""The toy StyleGAN2's quality against training length: toy-FID (FID on the shipped toy attribute
classifier's features, 1,000 samples vs 1,000 real toy test faces by default) and each attribute's
frequency in samples (by the same classifier, threshold 0.5) against its frequency in the data, for
every snapshot ``stylegan2-kimg_XXXXX.pt`` a training run kept (``GeneratorSnapshot(keep_exports=True)``).

    python benchmarks/toy_generator_curve.py RUN_DIR [more snapshots.pt ...] [--num 1000] [--out docs/images]

Writes ``toy_generator_curve.png`` (toy-FID vs kimg), ``toy_generator_curve.md`` (the table, with
the largest attribute-frequency gaps) and ``toy_generator_curve.csv`` (the same rows) into ``--out`` and
prints the table. Snapshots do not outlive a machine, so ``--earlier CSV`` (a CSV this script wrote
before) adds the rows of earlier calls to the table and the plot, marked as such; a kimg measured
again in this call replaces the earlier row.

``--noise-control 0.01 0.02`` adds control rows: the same real test faces plus Gaussian noise of each
standard deviation (images in [-1, 1]), scored like a snapshot (toy-FID against the clean faces,
attribute-frequency gaps by the same classifier). They show how much of a snapshot's figures a faint
grain alone accounts for (docs/toy-domain.md: the classifier reads σ 0.02 grain as Rosy_Cheeks).

``--noise const|none`` samples with the generators' fixed noise buffers or without noise inputs (is
the grain the noise inputs'?); ``--average`` adds a row for the mean of all the given snapshots'
``g_ema`` weights (would a longer EMA remove it?).

``--scores Bangs`` prints, for the real test faces and each snapshot's samples, how the classifier's
score for that attribute spreads (counts per score bin, the mean score, the share of confident
scores below 0.05 or above 0.95) and how often the attribute is found beside each hair attribute:
is an under-generated attribute missing, or drawn half-way?
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import time

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from datamodules.toy_faces import TOY_ATTRIBUTES, ToyFacesDataset
from lit_propulse.metrics.quality import FIDFeatures
from lit_propulse.networks.attribute_classifier import load_attribute_classifier
from lit_propulse.networks.stylegan2 import Generator


def kimg_of(path: str) -> float:
    m = re.search(r"kimg_0*([0-9.]+)\.pt$", path)
    if m:
        return float(m.group(1))
    return float(torch.load(path, map_location="cpu", weights_only=True).get("kimg", float("nan")))


@torch.no_grad()
def samples(G: Generator, num: int, seed: int = 0, batch: int = 250, noise: str = "random") -> torch.Tensor:
    """``num`` images of ``G`` at truncation 1 from seeded z; ``noise``: the noise inputs ("random", "const", "none")."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, num, batch):
        z = torch.randn(min(batch, num - i), G.z_dim, generator=gen)
        out.append(G(z, truncation=1.0, noise=noise).image.clamp(-1, 1))
    return torch.cat(out)


def averaged(paths: list[str]) -> Generator:
    """A generator whose weights are the mean of the files' ``g_ema`` weights (buffers from the last file):
    what a longer EMA over the span of the snapshots would roughly give."""
    G = Generator.from_checkpoint(paths[-1])
    states = [Generator.from_checkpoint(p).port_state_dict() for p in paths[:-1]] + [G.port_state_dict()]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v for k, v in states[-1].items()}
    G.load_port_state_dict(mean, source=f"mean of {len(paths)} snapshots")
    return G


def fid(real: torch.Tensor, fake: torch.Tensor, classifier) -> float:
    metric = FrechetInceptionDistance(feature=FIDFeatures(classifier, "toy attribute-classifier features"))
    for chunk in real.split(250):
        metric.update(chunk, real=True)
    for chunk in fake.split(250):
        metric.update(chunk, real=False)
    return float(metric.compute())


@torch.no_grad()
def scores_of(images: torch.Tensor, classifier) -> torch.Tensor:
    """The classifier's attribute scores of ``images`` in batches of 250: [N, A]."""
    return torch.cat([classifier.scores(c) for c in images.split(250)])


SCORE_BINS = (0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0)
HAIR = ("Long_Hair", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Wearing_Hat")


def score_spread(s: torch.Tensor, attribute: str) -> dict:
    """How the classifier's score for ``attribute`` spreads over a set of images, from their scores
    ``s`` [N, A] (``scores_of``): ``counts`` per SCORE_BINS bin (the last bin includes 1), ``mean``
    score, ``confident`` share (score < 0.05 or > 0.95), and ``beside`` {hair attribute: the
    attribute's frequency among the images that have it (NaN if none)}."""
    a = s[:, TOY_ATTRIBUTES.index(attribute)]
    edges = torch.tensor(SCORE_BINS[1:-1])
    counts = torch.bincount(torch.bucketize(a, edges, right=True), minlength=len(SCORE_BINS) - 1)
    beside = {h: float(a[s[:, TOY_ATTRIBUTES.index(h)] > 0.5].gt(0.5).float().mean()) for h in HAIR if h != attribute}
    return {"counts": counts.tolist(), "mean": float(a.mean()), "confident": float(((a < 0.05) | (a > 0.95)).float().mean()), "beside": beside}


def score_table(attribute: str, sets: list[tuple[str, dict]]) -> str:
    """A markdown table of ``score_spread`` results, one row per (name, spread)."""
    bins = [f"{lo:g}–{hi:g}" for lo, hi in zip(SCORE_BINS, SCORE_BINS[1:])]
    hair = [h for h in HAIR if h != attribute]
    head = f"| {attribute} score | " + " | ".join(bins) + " | mean | confident | " + " | ".join(f"{attribute} among {h}" for h in hair) + " |"
    lines = [head, "|---" * (len(bins) + 3 + len(hair)) + "|"]
    for name, sp in sets:
        lines.append(
            f"| {name} | "
            + " | ".join(str(c) for c in sp["counts"])
            + f" | {sp['mean']:.3f} | {sp['confident']:.2f} | "
            + " | ".join(f"{sp['beside'][h]:.2f}" for h in hair)
            + " |"
        )
    return "\n".join(lines)


def noise_controls(real: torch.Tensor, sigmas) -> list[tuple[float, torch.Tensor]]:
    """(σ, the real faces + Gaussian noise of σ, clamped to [-1, 1]) for each σ in order, noise seeded 1:
    grain of known size, the control rows beside generated images."""
    noise = torch.Generator().manual_seed(1)
    return [(s, (real + s * torch.randn(real.shape, generator=noise)).clamp(-1, 1)) for s in sigmas]


def gap_row(images: torch.Tensor, real: torch.Tensor, data_freq: torch.Tensor, classifier, scores: torch.Tensor | None = None) -> tuple[float, float, str]:
    """(toy-FID against ``real``, max |attribute-frequency gap| in points, the three largest gaps) of
    ``images``; ``scores``: their ``scores_of``, when the caller has them already."""
    scores = scores_of(images, classifier) if scores is None else scores
    gap = (scores.gt(0.5).float().mean(0) - data_freq) * 100  # percentage points
    worst = gap.abs().argsort(descending=True)[:3].tolist()
    return fid(real, images, classifier), float(gap.abs().max()), ", ".join(f"{TOY_ATTRIBUTES[i]} {gap[i]:+.1f}" for i in worst)


def read_rows(path: str) -> list[tuple[float, float, float, str]]:
    """(kimg, toy-FID, max gap, largest gaps) rows of a toy_generator_curve.csv."""
    with open(path, newline="") as f:
        return [(float(r["kimg"]), float(r["toy_fid"]), float(r["max_gap"]), r["largest_gaps"]) for r in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="run directories (their stylegan2-kimg_*.pt) and/or snapshot files")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--classifier", default="lit_propulse/data/toy_attributes_64.pt")
    ap.add_argument("--out", default=None, help="folder for the plot and the table (none = print only)")
    ap.add_argument("--earlier", default=None, help="toy_generator_curve.csv of earlier calls: their rows are kept (marked) beside this call's")
    ap.add_argument(
        "--noise-control",
        type=float,
        nargs="*",
        default=[],
        metavar="SIGMA",
        help="control rows: the real test faces + Gaussian noise of these standard deviations",
    )
    ap.add_argument("--noise", choices=("random", "const", "none"), default="random", help="the generators' noise inputs (default: random, as trained)")
    ap.add_argument(
        "--scores", default=None, metavar="ATTRIBUTE", help="print how the classifier's score for this attribute spreads, real faces vs each snapshot"
    )
    ap.add_argument("--average", action="store_true", help="add a row (table only): the mean of all the snapshots' g_ema weights")
    args = ap.parse_args()
    if args.scores is not None and args.scores not in TOY_ATTRIBUTES:
        ap.error(f"--scores {args.scores}: not a toy attribute; one of {', '.join(TOY_ATTRIBUTES)}")
    earlier = read_rows(args.earlier) if args.earlier else []
    t0 = time.time()
    paths = []
    for p in args.inputs:
        paths += sorted(glob.glob(os.path.join(p, "stylegan2-kimg_*.pt"))) if os.path.isdir(p) else [p]
    paths = sorted(set(paths), key=kimg_of)
    classifier = load_attribute_classifier(args.classifier).eval()
    test = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=20000, num_test=args.num)
    real = torch.stack([test[i]["hr"] for i in range(len(test))])
    data_freq = torch.stack([test[i]["attrs"] for i in range(len(test))]).mean(0)
    rows, spreads = [], [("real test faces", score_spread(scores_of(real, classifier), args.scores))] if args.scores else []
    for path in paths:
        G = Generator.from_checkpoint(path).eval()
        fake = samples(G, args.num, noise=args.noise)
        fake_scores = scores_of(fake, classifier)
        rows.append((kimg_of(path), *gap_row(fake, real, data_freq, classifier, fake_scores)))
        if args.scores:
            spreads.append((f"{rows[-1][0]:.0f} kimg samples", score_spread(fake_scores, args.scores)))
        print(f"{rows[-1][0]:8.1f} kimg  toy-FID {rows[-1][1]:8.2f}  max |freq gap| {rows[-1][2]:5.1f} pt  ({rows[-1][3]})", flush=True)
    now = {r[0] for r in rows}
    rows = sorted([(*r, True) for r in earlier if r[0] not in now] + [(*r, False) for r in rows])
    table = ["| kimg | toy-FID ↓ | max attribute-frequency gap (points) | largest gaps (sample − data) |", "|---|---|---|---|"]
    table += [f"| {k:.0f}{' (earlier call)' if old else ''} | {f:.1f} | {g:.1f} | {w} |" for k, f, g, w, old in rows]
    if args.average and len(paths) > 1:
        f, g, w = gap_row(samples(averaged(paths).eval(), args.num, noise=args.noise), real, data_freq, classifier)
        table.append(f"| mean weights of the {kimg_of(paths[0]):.0f}–{kimg_of(paths[-1]):.0f} snapshots | {f:.1f} | {g:.1f} | {w} |")
    for sigma, noisy in noise_controls(real, args.noise_control):
        f, g, w = gap_row(noisy, real, data_freq, classifier)
        table.append(f"| control: real test faces + noise σ {sigma:g} | {f:.1f} | {g:.1f} | {w} |")
    print("\n".join(table))
    if spreads:
        print(score_table(args.scores, spreads))
    print(f"({args.num} samples and {args.num} real test faces per row; {time.time() - t0:.0f} s)")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(args.out, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        ax.plot([r[0] for r in rows], [r[1] for r in rows], "-", c="C0")
        for old, style in ((True, dict(marker="o", mfc="white", label="earlier calls")), (False, dict(marker="o", label="this call"))):
            pts = [r for r in rows if r[4] == old]
            if pts:
                ax.plot([r[0] for r in pts], [r[1] for r in pts], ls="none", c="C0", **style)
        ax.axhline(20, ls="--", c="gray", lw=1, label="target 20")
        ax.set_xlabel("kimg (thousands of real images shown)")
        ax.set_ylabel("toy-FID")
        ax.set_title("toy StyleGAN2: toy-FID against training length")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "toy_generator_curve.png"))
        with open(os.path.join(args.out, "toy_generator_curve.md"), "w") as f:
            f.write("\n".join(table) + "\n")
        with open(os.path.join(args.out, "toy_generator_curve.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["kimg", "toy_fid", "max_gap", "largest_gaps"])
            w.writerows([(k, f"{fid_:.2f}", f"{g:.2f}", worst) for k, fid_, g, worst, _ in rows])


if __name__ == "__main__":
    main()
