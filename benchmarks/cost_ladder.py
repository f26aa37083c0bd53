"""Per-image cost ladder: PULSE against Pro-PULSE at 64², 256², 1024², and the toy StyleGAN2's
training throughput with each speed option on and off.

    python benchmarks/cost_ladder.py [--sizes 64 256 1024] [--pulse-steps-timed 3] [--threads N]
                                     [--no-training] [--training-only] [--out FILE.md]

* PULSE (Menon et al. 2020): the search of :class:`lit_propulse.pulse.PULSE`, 100 steps per image
  (the official default), batch 1, float32 and bf16 autocast. A step is one forward + backward
  through the frozen generator and the optimizer update; every step costs the same, so the
  ladder times ``--pulse-steps-timed`` steps (after one warm-up step) and reports 100 x their
  median, which is said in the table.
* Pro-PULSE (Sec. III): one forward of E_W+ (the paper's encoder, ``EWPlusEncoder`` with the
  scales 2*LR..size, so it produces every row of w+ and E_W is not called) and of G_ds (the
  generator with its side-output branches), batch 1, float32, no gradients.
* Generators: random weights of the standard configs (config-f channel table, w_dim 512, 8 mapping
  layers) at each size; LR 8 for 64², 16 for 256² and 1024².
* Toy StyleGAN2 training: :class:`lit_propulse.modules.stylegan2_module.StyleGAN2Module` with the
  toy table of ``experiments/toy/stylegan2.yaml`` (64², w_dim 128), batch 32, G + D with the lazy
  R1 and path-length steps included (16 batches timed = one R1 period), data already in memory,
  for each combination of bf16 autocast and channels_last.

Timings are the fastest of interleaved repetitions within one run; on a shared machine only the
ratios within a run are comparable between runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from lit_propulse.networks.encoders import EWPlusEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Discriminator, Generator
from lit_propulse.pulse import PULSE, GaussianFit, PULSEConfig

LR_SIZE = {64: 8, 256: 16, 1024: 16}
TOY_CHANNELS = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def standard_generator(size: int, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(size, 512, 8, channel_multiplier=2).eval()


def pulse_seconds_per_step(G: Generator, lr_size: int, steps_timed: int, bf16: bool) -> float:
    """Median wall time of one PULSE step (update + forward + backward), batch 1."""
    stamps: list[float] = []
    pulse = PULSE(G, GaussianFit(G.w_dim), PULSEConfig(steps=steps_timed + 2), bf16=bf16)
    lr = torch.rand(1, 3, lr_size, lr_size) * 2 - 1
    pulse(lr, seeds=[0], on_step=lambda s: stamps.append(time.perf_counter()))
    diffs = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # the first step is the warm-up
    return statistics.median(diffs)


def propulse_seconds(G: Generator, lr_size: int, rounds: int = 3) -> float:
    """Fastest of ``rounds`` E_W+ + G_ds forwards, batch 1 (float32, no gradients)."""
    size = G.size
    scales = [2**k for k in range(int(lr_size * 2).bit_length() - 1, size.bit_length())]
    enc = EWPlusEncoder(lr_size, G.w_dim, G.num_ws, scales).eval()
    gds = DeeplySupervisedGenerator(G, lr_size).eval()
    lr = torch.rand(1, 3, lr_size, lr_size) * 2 - 1
    best = float("inf")
    with torch.no_grad():
        for i in range(rounds + 1):
            t = time.perf_counter()
            out = gds(enc(lr), noise="const")
            if i:
                best = min(best, time.perf_counter() - t)
    assert out.image.shape == (1, 3, size, size)
    return best


def ladder(sizes: list[int], steps_timed: int) -> list[str]:
    rows = [
        "| size (LR) | PULSE per image, 100 steps, float32 (s) | PULSE, bf16 autocast (s) | Pro-PULSE per image: E_W+ + G_ds forward (s) | PULSE / Pro-PULSE |",
        "|---|---|---|---|---|",
    ]
    for size in sizes:
        G = standard_generator(size)
        lr_size = LR_SIZE.get(size, 8)
        step32 = pulse_seconds_per_step(G, lr_size, steps_timed, bf16=False)
        step16 = pulse_seconds_per_step(G, lr_size, steps_timed, bf16=True)
        pro = propulse_seconds(G, lr_size)
        row = f"| {size}² ({lr_size}²) | {100 * step32:.1f} | {100 * step16:.1f} | {pro:.3f} | {100 * step32 / pro:.0f}x |"
        rows.append(row)
        print(row, flush=True)
        del G
    rows.append(f"\nPULSE per image = 100 x the median of {steps_timed} timed steps (after one warm-up step), batch 1.")
    return rows


# ----------------------------------------------------------------------------------------------
# Toy StyleGAN2 training throughput.


def toy_training_img_s(bf16: bool, channels_last: bool, batches: int = 16, warmup: int = 2, batch: int = 32, size: int = 64) -> float:
    """Images/s of StyleGAN2Module training steps (G + D, lazy R1 every 16 and path length every 4)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lit_propulse.core.batch import SRBatch
    from lit_propulse.modules.stylegan2_module import StyleGAN2Module

    torch.manual_seed(0)
    ch = {r: c for r, c in TOY_CHANNELS.items() if r <= size}
    module = StyleGAN2Module(Generator(size, 128, 4, channels=ch), Discriminator(size, channels=ch), r1_gamma=0.1, ema_rampup=0.05, channels_last=channels_last)
    lr_side = max(1, size // 8)
    data = [
        SRBatch(hr=torch.rand(batch, 3, size, size) * 2 - 1, lr=torch.rand(batch, 3, lr_side, lr_side) * 2 - 1, index=torch.arange(batch))
        for _ in range(warmup + batches)
    ]

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.start = None
            self.end = None

        def on_train_batch_start(self, trainer, pl_module, b, batch_idx):
            if batch_idx == warmup:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx):
            self.end = time.perf_counter()

    clock = Clock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=None))
    return batches * batch / (clock.end - clock.start)


def training(batches: int, size: int = 64) -> list[str]:
    rows = ["| toy StyleGAN2 training (64², batch 32, G + D + lazy R1 / path length) | img/s | vs all options off |", "|---|---|---|"]
    results = {}
    for bf16 in (False, True):
        for cl in (False, True):
            results[(bf16, cl)] = toy_training_img_s(bf16, cl, batches=batches, size=size)
    base = results[(False, False)]
    for (bf16, cl), v in results.items():
        name = f"{'bf16 autocast' if bf16 else 'float32'}, {'channels_last' if cl else 'NCHW'}"
        rows.append(f"| {name} | {v:.1f} | {v / base:.2f}x |")
    for r in rows[2:]:
        print(r, flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--pulse-steps-timed", type=int, default=3)
    ap.add_argument("--training-batches", type=int, default=16, help="timed training batches (16 = one R1 period)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-training", action="store_true")
    ap.add_argument("--training-only", action="store_true")
    ap.add_argument("--out", default=None, help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    header = f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}; load average at start {load_average()}"
    print(header, flush=True)
    report = [header, ""]
    if not args.training_only:
        report += ladder(args.sizes, args.pulse_steps_timed) + [""]
    if not args.no_training:
        report += training(args.training_batches) + [""]
    report.append(f"load average at end {load_average()}")
    text = "\n".join(report)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
