"""Data-loading throughput: HR 1024² + LR 16² batches from image files vs. the prepared memmap.

Creates ``N`` random 1024² face-sized images in a temporary folder (smooth colour fields plus
mild noise, so PNG files are ~1.6 MB like FFHQ's and JPEGs ~0.3 MB like CelebA-HQ's), then
measures images/s through :class:`~datamodules.folder.ImageFolderDataModule` (PIL decode ->
tensor -> ``DS`` to 16², batches of ``--batch-size``, horizontal flips on) with
``num_workers`` 0 and 2, and the same after the one-time prepare step
(:mod:`datamodules.prepare`). Also times the bad-file scan in ``setup`` (full and header mode)
and the prepare step. The best of ``--epochs`` passes is reported (later passes reuse the
persistent workers, so start-up is excluded).

    python benchmarks/data_throughput.py --n 64 --format png
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.folder import ImageFolderDataModule  # noqa: E402


def make_images(root: Path, n: int, size: int, fmt: str, seed: int = 0) -> float:
    """Write ``n`` images; returns the mean file size in MB."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        coarse = torch.rand(1, 3, 8, 8, generator=g)
        img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
        img = img + 0.03 * torch.randn(img.shape, generator=g)  # sensor-like noise
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = root / f"{i:05d}.{fmt}"
        Image.fromarray(arr).save(path, **({"quality": 95} if fmt == "jpg" else {}))
        total += path.stat().st_size
    return total / n / 1e6


def throughput(dm: ImageFolderDataModule, epochs: int) -> float:
    """Best images/s over ``epochs`` passes of the train loader."""
    loader = dm.train_dataloader()
    best = 0.0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            assert batch.hr.shape[-1] == dm.hr_size and batch.lr.shape[-1] == dm.lr_size
            n += len(batch)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="number of images")
    ap.add_argument("--size", type=int, default=1024, help="HR side")
    ap.add_argument("--lr-size", type=int, default=16, help="LR side")
    ap.add_argument("--format", choices=["png", "jpg"], default="png")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2, help="passes per setting (best reported)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Pillow {Image.__version__}, "
        f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores when > 0.5)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "img"
        t0 = time.perf_counter()
        mb = make_images(root, args.n, args.size, args.format)
        print(f"created {args.n} {args.size}² {args.format.upper()} files, {mb:.2f} MB each, in {time.perf_counter() - t0:.1f} s")
        common = {"root": str(root), "hr_size": args.size, "lr_size": args.lr_size, "batch_size": args.batch_size, "drop_last_train": False}

        for mode in ("full", "header"):
            dm = ImageFolderDataModule(scan_mode=mode, **common)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            dm.setup("fit")
            dt = time.perf_counter() - t0
            print(f"setup scan ({mode:6s}): {dt:6.2f} s = {args.n / dt:7.1f} files/s")

        for w in args.workers:
            dm = ImageFolderDataModule(num_workers=w, **common)
            dm.setup("fit")
            print(f"files     num_workers={w}: {throughput(dm, args.epochs):7.1f} images/s")

        prep = str(Path(tmp) / "prepared")
        dm = ImageFolderDataModule(prepared_dir=prep, **common)
        t0 = time.perf_counter()
        dm.prepare_data()
        dt = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(prep).iterdir()) / 1e6
        print(f"prepare step: {dt:6.2f} s ({args.n / dt:.1f} images/s), {size:.0f} MB on disk")
        for w in args.workers:
            dm = ImageFolderDataModule(prepared_dir=prep, num_workers=w, **common)
            dm.setup("fit")
            print(f"prepared  num_workers={w}: {throughput(dm, args.epochs):7.1f} images/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
