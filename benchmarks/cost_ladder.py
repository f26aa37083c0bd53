"""Per-image cost ladder: PULSE against Pro-PULSE at 64², 256², 1024²; the toy StyleGAN2's training
throughput with each speed option on and off; bf16 autocast for PULSE and an encoder stage.

    python benchmarks/cost_ladder.py [--parts ladder training bf16] [--sizes 64 256 1024]
                                     [--pulse-steps-timed 3] [--rounds 2] [--threads N] [--out FILE.md]

``--parts`` picks the sections (default: ladder training); ``--no-training`` = ``--parts ladder``,
``--training-only`` = ``--parts training``.

* ``ladder``, PULSE (Menon et al. 2020): the search of :class:`lit_propulse.pulse.PULSE`, 100 steps
  per image (the official default), batch 1, float32 and bf16 autocast. A step is one forward +
  backward through the frozen generator and the optimizer update; every step costs the same, so the
  ladder times ``--pulse-steps-timed`` steps (after one warm-up step) and reports 100 x their
  median, which is said in the table.
* ``ladder``, Pro-PULSE (Sec. III): one forward of E_W+ (the paper's encoder, ``EWPlusEncoder`` with
  the scales 2*LR..size, so it produces every row of w+ and E_W is not called) and of G_ds (the
  generator with its side-output branches), batch 1, float32, no gradients.
  Generators: random weights of the standard configs (config-f channel table, w_dim 512, 8 mapping
  layers) at each size; LR 8 for 64², 16 for 256² and 1024².
* ``training``: :class:`lit_propulse.modules.stylegan2_module.StyleGAN2Module` with the toy table
  of ``experiments/toy/stylegan2.yaml`` (64², w_dim 128), batch 32, G + D with the lazy R1 and
  path-length steps included (16 batches timed = one R1 period), data already in memory, for each
  combination of bf16 autocast (Lightning ``bf16-mixed``) and channels_last, ``--rounds`` rounds
  interleaved.
* ``bf16``: on the toy domain with the packaged toy generator (real weights, so the losses mean
  something): PULSE (100 steps, ``--bf16-images`` toy LRs of the test split in one batch, the same
  seeds) in float32 and with ``bf16=True``: time per image and the final L_DS of each image
  re-scored in float32; and the toy E_W+ stage (``EWPlusModule`` with the critic, fresh G_ds
  branches, ``--bf16-encoder-steps`` batches of 16 from the same seed) under Lightning's
  ``32-true`` and ``bf16-mixed``: seconds per step, the training L_rec, and L_DS / L_rec of the two
  trained encoders on 32 held-out faces.

Timings are the fastest of interleaved repetitions within one run (the ladder: the median of its
timed steps); on a shared machine only the ratios within a run are comparable between runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from lit_propulse.core.machine import cpu_name, load_average
from lit_propulse.networks.encoders import EWPlusEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Discriminator, Generator
from lit_propulse.pulse import PULSE, GaussianFit, PULSEConfig

LR_SIZE = {64: 8, 256: 16, 1024: 16}
TOY_CHANNELS = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32}


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


def training(batches: int, rounds: int = 2, size: int = 64) -> list[str]:
    """Each option combination ``rounds`` times, interleaved (all four per round); the best round kept."""
    rows = [f"| toy StyleGAN2 training ({size}², batch 32, G + D + lazy R1 / path length) | img/s | vs all options off |", "|---|---|---|"]
    combos = [(bf16, cl) for bf16 in (False, True) for cl in (False, True)]
    results = {c: 0.0 for c in combos}
    for _ in range(rounds):
        for bf16, cl in combos:
            results[(bf16, cl)] = max(results[(bf16, cl)], toy_training_img_s(bf16, cl, batches=batches, size=size))
    base = results[(False, False)]
    for (bf16, cl), v in results.items():
        name = f"{'bf16 autocast' if bf16 else 'float32'}, {'channels_last' if cl else 'NCHW'}"
        rows.append(f"| {name} | {v:.1f} | {v / base:.2f}x |")
    rows.append(f"\nimg/s = the best of {rounds} interleaved rounds of {batches} timed batches each (after 2 warm-up batches).")
    for r in rows[2:]:
        print(r, flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# bf16 autocast for PULSE and an encoder stage, on the toy domain: speed and deviation from float32.


def toy_generator_path() -> str:
    return str(Path(__file__).resolve().parents[1] / "lit_propulse" / "data" / "toy_stylegan2_64.pt")


def toy_faces(split: str, n: int, offset: int = 0):
    """``n`` toy faces (HR 64², LR 8²) of ``split``: (hr [n, 3, 64, 64], lr [n, 3, 8, 8])."""
    from datamodules.toy_faces import ToyFacesDataset

    ds = ToyFacesDataset(split, 64, 8, num_train=20000, num_test=max(1000, n + offset), cache="none")
    items = [ds[offset + i] for i in range(n)]
    return torch.stack([it["hr"] for it in items]), torch.stack([it["lr"] for it in items])


def pulse_bf16(images: int, rounds: int, steps: int = 100) -> list[str]:
    """PULSE (``steps`` steps, 100 = the official default) on the packaged toy generator, ``images`` toy LRs in one batch, float32 and
    bf16: wall time per image (best of ``rounds`` interleaved searches) and the final L_DS of each."""
    from lit_propulse.losses.pulse import DownscaleLoss

    G = Generator.from_checkpoint(toy_generator_path()).eval()
    fit = GaussianFit.fit(G, 100_000, seed=0)
    _, lr = toy_faces("test", images)
    seeds = list(range(images))
    best = {False: float("inf"), True: float("inf")}
    results = {}
    for _ in range(rounds):
        for bf16 in (False, True):
            t = time.perf_counter()
            results[bf16] = PULSE(G, fit, PULSEConfig(steps=steps), bf16=bf16)(lr, seeds=seeds)
            best[bf16] = min(best[bf16], time.perf_counter() - t)
    with torch.no_grad():  # the returned images re-scored in float32
        lds = {k: DownscaleLoss()(r.image.float(), lr) for k, r in results.items()}
    d = (lds[True] - lds[False]).abs()
    rel = d / lds[False].clamp_min(1e-12)
    eps = results[False].eps
    rows = [
        f"| PULSE, toy G (64², LR 8²), {steps} steps, {images} images in one batch | float32 | bf16 autocast |",
        "|---|---|---|",
        f"| wall time per image (s, best of {rounds}) | {best[False] / images:.2f} | {best[True] / images:.2f} ({best[False] / best[True]:.2f}x) |",
        f"| final L_DS, re-scored in float32, mean | {lds[False].mean():.2e} | {lds[True].mean():.2e} |",
        f"| final L_DS per image | {', '.join(f'{v:.2e}' for v in lds[False])} | {', '.join(f'{v:.2e}' for v in lds[True])} |",
        f"| successes (L_DS <= eps = {eps:g}) | {int(results[False].success.sum())}/{images} | {int(results[True].success.sum())}/{images} |",
        f"| bf16 vs float32: max abs / max relative L_DS deviation | | {d.max():.2e} / {100 * rel.max():.1f} % |",
    ]
    for r in rows:
        print(r, flush=True)
    return rows


def encoder_stage_bf16(steps: int, rounds: int, batch: int = 16, warmup: int = 2) -> list[str]:
    """The toy E_W+ stage (``EWPlusModule``: E_W+ -> G_ds -> L_rec + 0.01 L_adv with the WGAN critic
    and its step), trained ``steps`` batches from the same seed with Lightning's ``32-true`` and
    ``bf16-mixed``: seconds per step (best of ``rounds`` interleaved runs), the final training L_rec,
    and L_DS / L_rec of the trained encoders on held-out faces, evaluated in float32."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lit_propulse.core.batch import SRBatch
    from lit_propulse.losses.propulse import EncoderLoss
    from lit_propulse.losses.pulse import DownscaleLoss
    from lit_propulse.modules.propulse import EWPlusModule
    from lit_propulse.networks.checkpoints import load_discriminator

    hr, lr = toy_faces("train", batch * (warmup + steps))
    data = [SRBatch(hr=h, lr=low, index=torch.arange(batch)) for h, low in zip(hr.split(batch), lr.split(batch))]
    test_hr, test_lr = toy_faces("test", 32)

    def run(precision: str):
        torch.manual_seed(0)
        G = Generator.from_checkpoint(toy_generator_path())
        enc = EWPlusEncoder(8, G.w_dim, G.num_ws, [16, 32, 64], channels=32, out_channels=256)
        module = EWPlusModule(
            enc,
            DeeplySupervisedGenerator(G, 8),
            EncoderLoss(lambda_rec=1.0, lambda_id=0.0, lambda_adv=0.01),
            guidance="latent_avg",
            discriminator=load_discriminator(toy_generator_path()),
            lr=5e-4,
        )
        recs: list[float] = []
        stamps: dict[str, float] = {}

        class Probe(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, b, batch_idx):
                if batch_idx == warmup:
                    stamps["start"] = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx):
                stamps["end"] = time.perf_counter()
                recs.append(float(trainer.callback_metrics["train/loss/rec"]))

        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            precision=precision,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Probe()],
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        trainer.fit(module, DataLoader(data, batch_size=None))
        module.eval()
        with torch.no_grad():
            out = module(test_lr)
            test_lds = DownscaleLoss()(out.image.float(), test_lr).mean().item()
            test_rec = torch.stack(list(module.loss.rec.per_scale(out, test_lr).values())).mean().item()
        return (stamps["end"] - stamps["start"]) / steps, recs, test_lds, test_rec

    best = {"32-true": float("inf"), "bf16-mixed": float("inf")}
    res = {}
    for _ in range(rounds):
        for p in best:
            sec, recs, test_lds, test_rec = run(p)
            best[p] = min(best[p], sec)
            res[p] = (recs, test_lds, test_rec)
    (r32, lds32, rec32), (r16, lds16, rec16) = res["32-true"], res["bf16-mixed"]
    last = max(1, min(10, steps // 4))
    f32, f16 = statistics.mean(r32[-last:]), statistics.mean(r16[-last:])
    dev = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(r32, r16))
    rows = [
        f"| toy E_W+ stage (EWPlusModule, batch {batch}, {steps} steps from the same seed, with the critic) | 32-true | bf16-mixed |",
        "|---|---|---|",
        f"| seconds per training step (best of {rounds}) | {best['32-true']:.3f} | {best['bf16-mixed']:.3f} ({best['32-true'] / best['bf16-mixed']:.2f}x) |",
        f"| training L_rec, first step | {r32[0]:.4f} | {r16[0]:.4f} |",
        f"| training L_rec, mean of the last {last} steps | {f32:.4f} | {f16:.4f} ({100 * (f16 - f32) / f32:+.1f} %) |",
        f"| max relative L_rec deviation over the {len(r32)} steps | | {100 * dev:.1f} % |",
        f"| held-out (32 test faces, float32 eval): L_DS | {lds32:.2e} | {lds16:.2e} ({100 * (lds16 - lds32) / lds32:+.1f} %) |",
        f"| held-out: L_rec (Eq. (6), mean over scales) | {rec32:.4f} | {rec16:.4f} ({100 * (rec16 - rec32) / rec32:+.1f} %) |",
    ]
    for r in rows:
        print(r, flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", choices=["ladder", "training", "bf16"], default=["ladder", "training"], help="which sections to run")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--pulse-steps-timed", type=int, default=3)
    ap.add_argument("--training-batches", type=int, default=16, help="timed training batches (16 = one R1 period)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of the training and bf16 sections (the best is kept)")
    ap.add_argument("--bf16-images", type=int, default=4, help="toy LRs searched by PULSE in the bf16 section")
    ap.add_argument("--bf16-encoder-steps", type=int, default=40, help="E_W+ training steps per precision in the bf16 section")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-training", action="store_true", help="same as --parts ladder")
    ap.add_argument("--training-only", action="store_true", help="same as --parts training")
    ap.add_argument("--out", default=None, help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    parts = ["ladder"] if args.no_training else ["training"] if args.training_only else args.parts
    if args.threads:
        torch.set_num_threads(args.threads)
    header = f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}; load average at start {load_average()}"
    print(header, flush=True)
    report = [header, ""]
    if "ladder" in parts:
        report += ladder(args.sizes, args.pulse_steps_timed) + [""]
    if "training" in parts:
        report += training(args.training_batches, args.rounds) + [""]
    if "bf16" in parts:
        report += pulse_bf16(args.bf16_images, args.rounds) + [""]
        report += encoder_stage_bf16(args.bf16_encoder_steps, args.rounds) + [""]
    report.append(f"load average at end {load_average()}")
    text = "\n".join(report)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
