"""``python -m lit_propulse pulse``: PULSE on a folder of images (Menon et al., CVPR 2020).

Reads the images of ``--input`` (png/jpg/jpeg/webp, not recursive) by the LR convention shared
with ``upsample`` and ``edit`` (:class:`~lit_propulse.commands.common.LRRule`, docs/photos-editing.md):
an image smaller than the generator's output is the LR as it is (its side must divide the
generator's size); ``--lr-size N`` makes every image an HR brought to N×N with the project's ``DS``
first (to test against a ground truth). Then it optionally degrades the LR (PULSE Sec. 5), runs
batched PULSE ``--samples`` times per image and writes, into ``--output``:

* ``<name>_<sample>.png`` — the best HR found for each (image, sample), successful or not;
* ``lr/<name>.png`` — the LR searched against (the degraded one with ``--degrade``);
* ``steps/<name>_<sample>/<step>.png`` — the current HR every ``--save-steps`` steps (0 = none);
* ``reports/<name>.json`` — per-image report (settings, every sample's loss, success, steps, time);
* ``results.csv`` — one row per (image, sample): name, sample, loss, loss_clean, success,
  best_step, steps, time_s, seed, file;
* ``summary.json`` — settings, success rate, skipped files, group rates (``--groups``);

and prints one summary line with the success rate. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lit_propulse.cli import register_command
from lit_propulse.commands import common
from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.reports import write_json

if TYPE_CHECKING:  # imported where used: ``--help`` and the other commands do not pay for them
    from datamodules.degradations import Degradation
    from lit_propulse.networks.stylegan2 import Generator
    from lit_propulse.pulse import PULSE, PULSEConfig, PULSEResult, PULSEStep
    from lit_propulse.pulse.results import SearchRow


@dataclass
class _Item:
    """One (image, sample) search: LR to search against, the clean LR, its seed key."""

    name: str
    file: str
    sample: int
    lr: Tensor  # [3, h, h]
    clean_lr: Tensor  # [3, h, h]
    key: int


@dataclass
class PulseJob:
    """What the command establishes before loading the generator: the parsed arguments, the search
    settings, the LR degradations, the parsed groups CSV (or None), the input files, the device and
    the (created) output folder."""

    args: argparse.Namespace
    config: PULSEConfig
    degradations: list[Degradation]
    groups: tuple[list[str], dict[str, dict[str, str]]] | None
    files: list[Path]
    device: torch.device
    out_dir: Path


@dataclass
class _Inputs:
    """The prepared searches and what happened to each input file."""

    items: list[_Item] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # name -> note (e.g. centre-cropped)
    lr_gap: dict[str, float] = field(default_factory=dict)  # name -> L_DS(degraded LR, clean LR)
    downscaled: int = 0  # images made LR with DS

    def skip(self, f: Path, reason: str) -> None:
        print(f"skipping {f}: {reason}", file=sys.stderr)
        self.skipped.append({"file": str(f), "reason": reason})


def _parse_degradation(spec: str) -> Degradation:
    """``gauss:STD`` (STD on 0..255) | ``motion:LENGTH[:ANGLE]`` (HR pixels) | ``saltpepper:DENSITY``."""
    from datamodules.degradations import (
        Degradation,
        GaussianNoise,
        MotionBlur,
        SaltPepper,
        std255_to_sigma,
    )

    kind, _, args = spec.partition(":")
    try:
        vals = [float(v) for v in args.split(":")] if args else []
        if kind in ("gauss", "gaussian", "noise") and len(vals) == 1:
            return Degradation([GaussianNoise(std255_to_sigma(vals[0]))], where="after_ds")
        if kind in ("motion", "blur") and len(vals) in (1, 2):
            return Degradation([MotionBlur(vals[0], vals[1] if len(vals) == 2 else None)], where="before_ds")
        if kind in ("saltpepper", "sp", "s&p") and len(vals) == 1:
            return Degradation([SaltPepper(vals[0])], where="after_ds")
    except ValueError as e:
        raise UserFacingError(f"--degrade {spec!r}: {e}") from None
    raise UserFacingError(
        f"--degrade {spec!r}: expected gauss:STD (0..255 scale, e.g. gauss:25), motion:LENGTH[:ANGLE] "
        f"(HR pixels, e.g. motion:100) or saltpepper:DENSITY (e.g. saltpepper:0.05)"
    )


def _parse_int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise UserFacingError(f"{what} must be a comma-separated list of integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lit_propulse pulse",
        description=(
            "PULSE (Menon et al., CVPR 2020): search a StyleGAN2's latent space for HR images that "
            "downscale to each LR input. Images smaller than the generator's output are the LR as they are; "
            "--lr-size N makes every image NxN with the project's DS (antialiased bicubic) first."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input / output")
    io.add_argument("--generator", required=True, help="StyleGAN2 checkpoint (port layout or lit_propulse's own)")
    io.add_argument("--input", required=True, help="folder of images (png/jpg/jpeg/webp; not recursive)")
    io.add_argument("--output", required=True, help="output folder (created)")
    common.add_lr_arguments(io, detects=False)
    io.add_argument("--save-steps", type=int, default=0, help="save the current HR every K steps (0 = no intermediate images)")
    io.add_argument("--groups", default=None, help="CSV 'name,<group column>,...' -> success rate per group (PULSE Fig. 8)")
    io.add_argument(
        "--degrade",
        action="append",
        default=[],
        metavar="SPEC",
        help="degrade the LR (PULSE Sec. 5), repeatable: gauss:STD (0..255 scale), motion:LENGTH[:ANGLE] "
        "(before DS, HR pixels), saltpepper:DENSITY; the report gives the loss against the degraded "
        "and the clean LR",
    )
    run = p.add_argument_group("search")
    run.add_argument("--samples", type=int, default=1, help="HR samples per LR from different initialisations and noise (Sec. 4.4)")
    run.add_argument("--steps", type=int, default=100, help="optimisation steps")
    run.add_argument("--learning-rate", type=float, default=0.4, help="base learning rate")
    run.add_argument("--optimizer", default="adam", choices=["adam", "sgd", "sgdm", "adamax"])
    run.add_argument("--lr-schedule", default="linear1cycledrop", choices=["linear1cycledrop", "linear1cycle", "fixed"])
    run.add_argument("--eps", type=float, default=2e-3, help="success threshold on the per-image downscaling loss (paper tables: 1e-3)")
    run.add_argument("--tile-latent", action="store_true", help="one latent for all layers instead of one per w+ row")
    run.add_argument("--noise-type", default="trainable", choices=["trainable", "fixed", "zero"])
    run.add_argument("--trainable-noise", type=int, default=5, help="leading noise maps optimised with --noise-type trainable")
    run.add_argument("--bad-noise-layers", default="-1", help="noise maps always zeroed (comma list, negatives from the end, '' = none)")
    run.add_argument("--downscale-weight", type=float, default=100.0, help="weight of the downscaling loss")
    run.add_argument("--geocross-weight", type=float, default=0.05, help="weight of GEOCROSS")
    run.add_argument("--batch-size", type=int, default=4, help="searches run together")
    run.add_argument("--seed", type=int, default=0, help="base seed of initialisations and degradations")
    sysg = p.add_argument_group("system")
    sysg.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    sysg.add_argument("--cache-dir", default=None, help="Gaussian-fit cache (default $LIT_PROPULSE_CACHE/pulse or ~/.cache/lit_propulse/pulse)")
    sysg.add_argument("--fit-samples", type=int, default=100_000, help="z samples for the Gaussian fit of the mapping output")
    return p


# ----------------------------------------------------------------------------------------------
# Read: arguments, settings, inputs; the output folder is created before any model loads.


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--samples", args.samples, 1),
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--save-steps", args.save_steps, 0),
        ("--lr-size", args.lr_size, 1),
        ("--fit-samples", args.fit_samples, 2),
    ):
        if value is not None and value < low:
            raise UserFacingError(f"{flag} must be >= {low}, got {value}")


def _config(args: argparse.Namespace) -> PULSEConfig:
    from lit_propulse.pulse import NoiseConfig, PULSEConfig, PULSELossConfig

    try:
        return PULSEConfig(
            steps=args.steps,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            lr_schedule=args.lr_schedule,
            eps=args.eps,
            tile_latent=args.tile_latent,
            noise=NoiseConfig(args.noise_type, args.trainable_noise, _parse_int_list(args.bad_noise_layers, "--bad-noise-layers")),
            loss=PULSELossConfig(downscale_weight=args.downscale_weight, geocross_weight=args.geocross_weight),
            seed=args.seed,
            gaussian_fit_samples=args.fit_samples,
        )
    except ValueError as e:
        raise UserFacingError(str(e)) from None


def read_job(argv: Sequence[str]) -> PulseJob:
    """Parse and check every argument, list the inputs and create the output folder; loads nothing."""
    from lit_propulse.pulse import read_groups_csv

    args = build_parser().parse_args(list(argv))
    _check_numbers(args)
    common.check_lr_flags(args)
    degradations = [_parse_degradation(s) for s in args.degrade]
    if args.lr_size is None and any(d.where == "before_ds" for d in degradations):
        raise UserFacingError("--degrade motion:... blurs the HR before DS: give --lr-size N, so the inputs are HRs made LR with DS")
    groups = None
    if args.groups:
        try:
            groups = read_groups_csv(args.groups)
        except (FileNotFoundError, ValueError) as e:
            raise UserFacingError(f"--groups: {e}") from None
    config = _config(args)
    files = common.list_inputs(args.input)
    device = common.resolve_device(args.device)
    return PulseJob(args, config, degradations, groups, files, device, common.prepare_output_dir(args.output))


def read_inputs(job: PulseJob, rule: common.LRRule) -> _Inputs:
    """Every input as its LR by ``rule`` (the LR as it is, or DS to --lr-size), then degraded,
    ``--samples`` searches each; unusable files are reported and skipped, an LR of a size the
    generator cannot take stops the command (one line naming the file and the sizes)."""
    from datamodules.degradations import degrade_lr
    from lit_propulse.core.downscale import downscale
    from lit_propulse.core.seeding import seed_generator
    from lit_propulse.losses.pulse import downscale_l2

    args, out = job.args, _Inputs()
    motion = any(d.where == "before_ds" for d in job.degradations)
    for f in job.files:
        img, reason = common.read_rgb(f)
        if img is None:
            out.skip(f, reason)
            continue
        name = f.stem
        role, reason = rule.role(str(f), img.shape[-1], img.shape[-2])
        if name in out.notes:
            reason = f"another input is also named {name!r} (outputs are named by file stem)"
        elif role == "hr" and motion and min(img.shape[-2:]) == rule.lr_size:
            reason = "already at the LR size, so there is no HR for the motion blur (before DS) to act on"
        if reason:
            out.skip(f, reason)
            continue
        img, note = common.center_square(img)
        lr_size = rule.lr_size if role == "hr" else img.shape[-1]
        hr = img[None]  # [1, 3, s, s]
        clean = downscale(hr, lr_size)
        out.downscaled += int(hr.shape[-1] > lr_size)
        key = zlib.crc32(name.encode())
        degraded = degrade_lr(hr, lr_size, job.degradations, generator=seed_generator(args.seed, key)) if job.degradations else clean
        out.notes[name] = note
        out.lr_gap[name] = float(downscale_l2(degraded, clean)[0])
        out.items += [_Item(name, str(f), s, degraded[0], clean[0], key) for s in range(args.samples)]
    if not out.items:
        raise UserFacingError(f"--input {args.input!r}: no usable images ({len(out.skipped)} skipped, reasons above)")
    if out.downscaled:
        print(
            f"{out.downscaled} image(s) larger than {rule.lr_size}x{rule.lr_size} were made LR with DS (antialiased bicubic, "
            f"--lr-size {rule.lr_size}); without --lr-size, inputs smaller than the generator's output are the LR as they are"
        )
    return out


# ----------------------------------------------------------------------------------------------
# Run: the generator, the Gaussian fit, the searches batched by LR size.


def load_generator(job: PulseJob) -> tuple[Generator, common.LRRule]:
    """The --generator checkpoint on the device, and the LR convention for its output size
    (--lr-size must be smaller than it and divide it)."""
    from lit_propulse.networks.stylegan2 import Generator

    G = Generator.from_checkpoint(job.args.generator, map_location=job.device).eval()  # CheckpointError is user-facing
    return G, common.lr_rule(job.args, G.size, None, detects=False)


def build_pulse(job: PulseJob, G: Generator) -> PULSE:
    """PULSE on ``G`` with its Gaussian fit (from the cache, or fitted and cached)."""
    from lit_propulse.pulse import PULSE

    try:
        return PULSE.from_generator(G, job.config, cache_dir=job.args.cache_dir, log=print)
    except ValueError as e:  # e.g. noise settings that do not fit this generator
        raise UserFacingError(f"{job.args.generator}: {e}") from None


def save_lrs(job: PulseJob, inputs: _Inputs) -> None:
    """``lr/<name>.png`` (and ``lr/<name>_clean.png`` with --degrade): what each search is given."""
    from lit_propulse.core.images import save_image

    for it in inputs.items:
        if it.sample == 0:
            save_image(it.lr, job.out_dir / "lr" / f"{it.name}.png")
            if job.degradations:
                save_image(it.clean_lr, job.out_dir / "lr" / f"{it.name}_clean.png")


def _search_batch(job: PulseJob, pulse: PULSE, batch: list[_Item]) -> tuple[list[SearchRow], PULSEResult]:
    """One batched search; writes each best HR (and every --save-steps image) and returns the rows."""
    from lit_propulse.core.images import save_image
    from lit_propulse.core.seeding import mix_seed
    from lit_propulse.pulse.results import SearchRow, sample_name

    args, out_dir = job.args, job.out_dir
    lr = torch.stack([b.lr for b in batch]).to(job.device)  # [B, 3, h, h]
    clean_lr = torch.stack([b.clean_lr for b in batch]).to(job.device) if job.degradations else None
    seeds = [mix_seed(args.seed, b.key, b.sample) for b in batch]

    def on_step(st: PULSEStep) -> None:
        if st.step % args.save_steps == 0 or st.step == args.steps - 1:
            for b, img in zip(batch, st.image):
                save_image(img.clamp(-1, 1), out_dir / "steps" / sample_name(b.name, b.sample) / f"{st.step:04d}.png")

    res = pulse(lr, seeds=seeds, clean_lr=clean_lr, on_step=on_step if args.save_steps else None).cpu()
    rows = []
    for j, b in enumerate(batch):
        out_file = out_dir / f"{sample_name(b.name, b.sample)}.png"
        save_image(res.image[j].clamp(-1, 1), out_file)
        loss = float(res.loss[j])
        rows.append(
            SearchRow(
                name=b.name,
                sample=b.sample,
                loss=loss,
                loss_clean=float(res.loss_clean[j]) if res.loss_clean is not None else loss,
                success=bool(res.success[j]),
                best_step=int(res.best_step[j]),
                steps=res.steps,
                time_s=res.time_s / len(batch),
                seed=seeds[j],
                file=out_file.name,
                lr_size=b.lr.shape[-1],
                input=b.file,
            )
        )
    return rows, res


def run(job: PulseJob, pulse: PULSE, inputs: _Inputs) -> list[SearchRow]:
    """Every search, batched by LR size (``--batch-size`` at a time); one progress line per batch.

    ``results.csv`` is rewritten after every batch, so an interrupted run (Ctrl-C, a kill) leaves the
    index of every search it finished; Ctrl-C ends with one line saying how far it got."""
    from lit_propulse.pulse import results

    by_size: dict[int, list[_Item]] = {}
    for it in inputs.items:
        by_size.setdefault(it.lr.shape[-1], []).append(it)
    rows: list[SearchRow] = []
    size_b = job.args.batch_size
    for size, group in sorted(by_size.items()):
        for i in range(0, len(group), size_b):
            try:
                batch_rows, res = _search_batch(job, pulse, group[i : i + size_b])
            except KeyboardInterrupt:
                raise UserFacingError(
                    f"interrupted after {len(rows)} of {len(inputs.items)} searches; the finished ones are listed in "
                    f"{job.out_dir / 'results.csv'} (their images beside it)"
                ) from None
            rows += batch_rows
            results.write_results_csv(job.out_dir / "results.csv", rows)
            print(
                f"[{len(rows)}/{len(inputs.items)}] {size}px batch of {len(batch_rows)}: {int(res.success.sum())}/{len(batch_rows)} "
                f"within eps={job.args.eps:g} (loss {float(res.loss.min()):.2e}..{float(res.loss.max()):.2e}, {res.time_s:.1f} s)"
            )
    return rows


# ----------------------------------------------------------------------------------------------
# Report: per-image JSON, results.csv, groups, summary.json and one summary line.


def _write_groups(job: PulseJob, rows: list[SearchRow]) -> list[dict[str, Any]]:
    from lit_propulse.pulse import group_success_rates, results

    rates = group_success_rates([r.name for r in rows], [r.success for r in rows], job.groups)
    results.write_groups_csv(job.out_dir / "groups.csv", rates)
    print("success rate per group:")
    for g in rates:
        print(f"  {g.column}={g.label}: {g.successes}/{g.n} ({100 * g.rate:.1f}%)")
    return [{**asdict(g), "rate": g.rate} for g in rates]


def report(job: PulseJob, rule: common.LRRule, inputs: _Inputs, rows: list[SearchRow], seconds: float) -> int:
    """reports/<name>.json, results.csv, groups.csv (--groups), summary.json and the summary line."""
    from lit_propulse.pulse import results

    args, out_dir = job.args, job.out_dir
    settings = {
        "generator": str(args.generator),
        "generator_size": rule.size,
        "lr_size": rule.lr_size,
        "inputs": rule.describe(),
        "degrade": list(args.degrade),
        "samples": args.samples,
        "config": results.jsonable(asdict(job.config)),
    }
    results.write_image_reports(out_dir / "reports", rows, inputs.notes, inputs.lr_gap, args.eps, settings)
    results.write_results_csv(out_dir / "results.csv", rows)
    summary = {**results.summarize(rows, inputs.lr_gap), "skipped": inputs.skipped, "time_s": seconds, "settings": settings}
    if job.groups is not None:
        summary["groups"] = _write_groups(job, rows)
    write_json(out_dir / "summary.json", summary)
    extra = f"; {len(inputs.skipped)} file(s) skipped" if inputs.skipped else ""
    clean = ""
    if job.degradations:
        clean = (
            f"; mean loss vs degraded LR {summary['mean_loss']:.2e}, vs clean LR {summary['mean_loss_clean']:.2e} "
            f"(degraded LR vs clean LR {summary['mean_degraded_vs_clean']:.2e})"
        )
    print(
        f"PULSE: {summary['successes']}/{summary['searches']} searches within eps={args.eps:g} ({100 * summary['success_rate']:.1f}% "
        f"success) over {summary['images']} image(s) x {args.samples} sample(s){clean}{extra}; results in {out_dir / 'results.csv'}"
    )
    return 0


@register_command("pulse", "PULSE baseline: latent-space search for HR images that downscale to each LR")
def main(argv: Sequence[str]) -> int:
    job = read_job(argv)  # the output folder exists before any model loads
    G, rule = load_generator(job)
    inputs = read_inputs(job, rule)  # before the Gaussian fit: no fit for a folder of unusable files
    pulse = build_pulse(job, G)
    save_lrs(job, inputs)
    t0 = time.perf_counter()
    rows = run(job, pulse, inputs)
    return report(job, rule, inputs, rows, time.perf_counter() - t0)
