"""Where a StyleGAN2 paints its image, level by level (the toy generator's diagnosis, issue #15).

The skip architecture (StyleGAN2 Fig. 7b) builds the image as the upsampled sum of one RGB output per
resolution: image = ToRGB_64 + up(ToRGB_32 + up(... + up(ToRGB_4))). For each resolution r this
prints the RMS of the generator's own contribution at r (``skips[r] - up(skips[r/2])``) for
``--num`` samples, and the RMS of the same difference-of-scales pyramid (``x_r - up(x_{r/2})``,
``x_r`` = the image downscaled to r) of the generated images and of real toy test faces. The two
pyramids show whether the outputs have the data's spectrum; the contributions show which layers
make it.

``--fid N`` adds where the toy-FID gap lies by scale: toy-FID (the shipped classifier's features) of N
samples against N real test faces after both sides are low-passed to r (downscaled to r, bilinearly
upsampled back), for every r, beside the same figure for N real train faces (the floor at r). A
generator whose gap vanishes at r but not at 2r differs from the data in the octave between them.

``--grain N`` says where the faint detail (the grain) sits, for N samples and N real test faces: each
pixel's detail is its largest channel difference from its 3×3 mean (edges replicated); the fractions of
flat pixels (detail < 0.01) and of faint ones (0.01–0.03), the share of the faint pixels that lie in
the outer ``BAND``-px frame, and toy-FID after that frame is replaced on both sides by the interior's
replicated edge (what the frame costs); then the same for the real faces with Gaussian noise of σ
``NOISE`` added (a grain of known size), and the mean logit that the first file's own discriminator gives
each set (how much of the grain the discriminator, and so the generator's training signal, sees), in
float32 and under bf16 autocast as in training (does bf16 hide the grain from D?).

    python benchmarks/toy_generator_pyramid.py [GENERATOR.pt ...] [--num 256] [--fid 1000] [--grain 1000]

Default: the shipped toy generator and, for reference, a randomly initialised one of the same
architecture.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.toy_generator_curve import fid, noise_controls, samples  # noqa: E402
from datamodules.toy_faces import ToyFacesDataset  # noqa: E402
from lit_propulse.core.downscale import downscale  # noqa: E402
from lit_propulse.core.errors import CheckpointError  # noqa: E402
from lit_propulse.networks.attribute_classifier import load_attribute_classifier  # noqa: E402
from lit_propulse.networks.stylegan2 import Discriminator, Generator  # noqa: E402

SHIPPED = str(ROOT / "lit_propulse" / "data" / "toy_stylegan2_64.pt")


def up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def contributions(skips: dict[int, torch.Tensor]) -> dict[int, float]:
    """RMS of each resolution's own RGB contribution: skips[r] - up(skips[r/2])."""
    out, prev = {}, None
    for r in sorted(skips):
        out[r] = rms(skips[r] if prev is None else skips[r] - up(prev))
        prev = skips[r]
    return out


def pyramid(images: torch.Tensor, resolutions: list[int]) -> dict[int, float]:
    """RMS of x_r - up(x_{r/2}) with x_r = downscale(images, r) (x at the full size itself)."""
    out, prev = {}, None
    for r in resolutions:
        x = images if r == images.shape[-1] else downscale(images, r)
        out[r] = rms(x if prev is None else x - up(prev))
        prev = x
    return out


def low_pass(images: torch.Tensor, r: int) -> torch.Tensor:
    """The images with nothing finer than r: downscaled to r, bilinearly upsampled to their size."""
    size = images.shape[-1]
    return images if r == size else F.interpolate(downscale(images, r), size=size, mode="bilinear", align_corners=False)


def fid_by_scale(images: torch.Tensor, real: torch.Tensor, resolutions: list[int], classifier) -> dict[int, float]:
    """r -> toy-FID of ``images`` against ``real``, both low-passed to r."""
    return {r: fid(low_pass(real, r), low_pass(images, r), classifier) for r in resolutions}


NOISE = (0.01, 0.02)  # --grain's controls: real faces + Gaussian noise of these σ (images in [-1, 1]; seed 1)
BAND = 3  # the frame --grain looks at: the outer 3 px of a 64² image, 18 % of its pixels


def detail(images: torch.Tensor) -> torch.Tensor:
    """[N, H, W]: each pixel's largest channel difference from its 3×3 mean (edges replicated)."""
    mean = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (images - mean).abs().amax(1)


def frame(size: int, band: int = BAND) -> torch.Tensor:
    """[size, size] bool: the outer ``band`` pixels of the image."""
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[band:-band, band:-band] = False
    return mask


def without_frame(images: torch.Tensor, band: int = BAND) -> torch.Tensor:
    """The images with their outer ``band`` pixels replaced by the interior's replicated edge."""
    return F.pad(images[..., band:-band, band:-band], (band, band, band, band), mode="replicate")


def discriminator(path: str) -> Discriminator | None:
    """The file's discriminator (``"d"``), or None for a generator-only export."""
    try:
        return Discriminator.from_checkpoint(path).eval()
    except CheckpointError:
        return None


def mean_logit(D: Discriminator, images: torch.Tensor) -> float:
    """D's mean logit over ``images`` (batches of 100: a multiple of the minibatch-stddev group)."""
    return float(torch.cat([D(c).float() for c in images.split(100)]).mean())


def grain(images: torch.Tensor) -> dict[str, float]:
    """Fractions of flat (< 0.01) and faint (0.01–0.03) pixels, and the faint pixels' share in the frame."""
    d = detail(images)
    faint = (d >= 0.01) & (d < 0.03)
    in_frame = faint[:, frame(images.shape[-1])].sum()
    return {"flat": float((d < 0.01).float().mean()), "faint": float(faint.float().mean()), "faint_in_frame": float(in_frame / faint.sum().clamp(min=1))}


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generators", nargs="*", default=[SHIPPED, "random"], help="generator files ('random': a fresh one like the shipped)")
    ap.add_argument("--num", type=int, default=256)
    ap.add_argument("--fid", type=int, default=0, help="also toy-FID after low-passing to each resolution, N samples vs N faces (0 = off)")
    ap.add_argument("--grain", type=int, default=0, help="also where the faint detail sits, N samples vs N faces (0 = off)")
    args = ap.parse_args(argv)
    test = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=20000, num_test=args.num)
    real = torch.stack([test[i]["hr"] for i in range(len(test))])
    rows = []
    for path in args.generators:
        torch.manual_seed(0)
        if path == "random":
            ref = Generator.from_checkpoint(SHIPPED)
            G, name = Generator(**ref.arch), "random init"
        else:
            G, name = Generator.from_checkpoint(path), Path(path).name
        G.eval()
        out = G.synthesis(G.to_ws(G.mapping(torch.randn(args.num, G.z_dim))), noise="random")
        res = sorted(out.skips)
        rows.append((f"{name}: RGB contribution", contributions(out.skips)))
        rows.append((f"{name}: output pyramid", pyramid(out.image.clamp(-1, 1), res)))
    rows.append(("real test faces: pyramid", pyramid(real, res)))
    print(f"RMS by resolution ({args.num} images each; images in [-1, 1])")
    print("| | " + " | ".join(f"{r}²" for r in res) + " |\n|---|" + "---:|" * len(res))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{values[r]:.3f}" for r in res) + " |")
    if args.fid or args.grain:
        classifier = load_attribute_classifier(str(ROOT / "lit_propulse" / "data" / "toy_attributes_64.pt")).eval()
    if args.fid:
        test = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=50000, num_test=args.fid)
        train = ToyFacesDataset("train", hr_size=64, lr_size=8, num_train=50000, num_test=args.fid)
        real = torch.stack([test[i]["hr"] for i in range(args.fid)])
        real_train = torch.stack([train[i]["hr"] for i in range(args.fid)])
        scales = [r for r in res if r >= 8]
        print(f"\ntoy-FID with both sides low-passed to r ({args.fid} vs {args.fid}; floor: real train vs real test faces)")
        print("| | " + " | ".join(f"≤ {r}²" for r in scales) + " |\n|---|" + "---:|" * len(scales))
        for path in [p for p in args.generators if p != "random"]:
            by_r = fid_by_scale(samples(Generator.from_checkpoint(path).eval(), args.fid), real, scales, classifier)
            print(f"| {Path(path).name} | " + " | ".join(f"{by_r[r]:.1f}" for r in scales) + " |")
        by_r = fid_by_scale(real_train, real, scales, classifier)
        print("| real train faces (floor) | " + " | ".join(f"{by_r[r]:.1f}" for r in scales) + " |")
    if args.grain:
        test = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=20000, num_test=args.grain)
        real = torch.stack([test[i]["hr"] for i in range(args.grain)])
        files = [p for p in args.generators if p != "random"]
        D = discriminator(files[0]) if files else None
        sets = [(f"{Path(p).name} (g_ema samples)", samples(Generator.from_checkpoint(p).eval(), args.grain)) for p in files]
        sets.append(("real test faces", real))
        sets += [(f"real test faces + noise σ {s}", noisy) for s, noisy in noise_controls(real, NOISE)]
        print(f"\nwhere the faint detail sits ({args.grain} images each; detail = largest channel difference from the 3×3 mean;")
        print(
            f"the frame = the outer {BAND} px, {float(frame(real.shape[-1]).float().mean()):.0%} of the pixels; toy-FID against the real faces, then with the frame"
        )
        whose = f"{Path(files[0]).name}'s own discriminator" if D is not None else "no discriminator in the first file"
        print(f"replaced on both sides; D logit: the mean of {whose}, higher = more real)")
        print("| images | flat (< 0.01) | faint (0.01–0.03) | faint pixels in the frame | toy-FID | toy-FID, frame replaced | D logit | D logit, bf16 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, images in sets:
            g = grain(images)
            same = images is real
            full = 0.0 if same else fid(real, images, classifier)
            framed = 0.0 if same else fid(without_frame(real), without_frame(images), classifier)
            logit = f"{mean_logit(D, images):.2f}" if D is not None else "—"
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as D computes during (bf16-mixed) training
                logit_bf16 = f"{mean_logit(D, images):.2f}" if D is not None else "—"
            print(f"| {name} | {g['flat']:.3f} | {g['faint']:.3f} | {g['faint_in_frame']:.3f} | {full:.1f} | {framed:.1f} | {logit} | {logit_bf16} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
