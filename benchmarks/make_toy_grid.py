"""Make docs/toy_faces_grid.png and measure toy-face attribute frequencies and render speed.

Usage, from the repo root:
    PYTHONPATH=. python benchmarks/make_toy_grid.py [--out docs/toy_faces_grid.png] [--freq-n 5000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.toy_faces import TOY_ATTRIBUTES, render_toy_face, sample_toy_factors, toy_attributes
from lit_propulse.core.downscale import downscale


def grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """[N, H, W, 3] uint8 -> one image, ``pad`` px white gutters."""
    n, h, w, _ = images.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(min(n, rows * cols)):
        r, c = divmod(k, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = images[k]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/toy_faces_grid.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hr", type=int, default=64)
    ap.add_argument("--lr", type=int, default=8)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--freq-n", type=int, default=5000)
    ap.add_argument("--speed-n", type=int, default=500)
    args = ap.parse_args()

    faces = np.stack([render_toy_face(args.seed, i, args.hr)[0] for i in range(64)])
    hr = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    lr = downscale(hr, args.lr)
    lr_up = torch.nn.functional.interpolate(lr, size=args.hr, mode="nearest")
    lr_img = ((lr_up.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    top = grid(faces, 8, 8)
    bottom = grid(lr_img[:16], 2, 8)
    sheet = np.concatenate([top, np.full((6, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
    sheet = sheet.repeat(args.zoom, 0).repeat(args.zoom, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out} {sheet.shape}")

    for size in (64, 256):
        n = args.speed_n if size == 64 else max(20, args.speed_n // 10)
        render_toy_face(args.seed, 0, size)
        t0 = time.perf_counter()
        for i in range(n):
            render_toy_face(args.seed, i, size)
        dt = (time.perf_counter() - t0) / n
        print(f"render {size}x{size}: {dt * 1e3:.2f} ms/face over {n} faces")

    if args.freq_n > 0:
        counts = np.zeros(len(TOY_ATTRIBUTES))
        for i in range(args.freq_n):
            counts += np.array(list(toy_attributes(sample_toy_factors(args.seed, i)).values()))
        print(f"attribute frequencies over {args.freq_n} faces (seed {args.seed}):")
        for name, c in zip(TOY_ATTRIBUTES, counts / args.freq_n):
            print(f"| {name} | {100 * c:.1f} % |")


if __name__ == "__main__":
    main()
