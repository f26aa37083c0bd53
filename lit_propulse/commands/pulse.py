"""``python -m lit_propulse pulse``: PULSE on a folder of images (Menon et al., CVPR 2020).

Reads the images of ``--input`` (png/jpg/jpeg/webp, not recursive), makes each an LR of
``--lr-size`` with the project's ``DS`` when it is larger (``--as-lr``: take it as the LR as it
is), optionally degrades the LR (PULSE Sec. 5), runs batched PULSE ``--samples`` times per image
and writes, into ``--output``:

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
import csv
import json
import math
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from lit_propulse.commands.upsample import resolve_device
from lit_propulse.cli import register_command
from lit_propulse.core.errors import UserFacingError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class _Item:
    """One (image, sample) search: LR to search against, the clean LR, its seed key."""

    name: str
    file: str
    sample: int
    lr: Tensor  # [3, h, h]
    clean_lr: Tensor  # [3, h, h]
    key: int


def _parse_degradation(spec: str) -> Any:
    """``gauss:STD`` (STD on 0..255) | ``motion:LENGTH[:ANGLE]`` (HR pixels) | ``saltpepper:DENSITY``."""
    from datamodules.degradations import Degradation, GaussianNoise, MotionBlur, SaltPepper, std255_to_sigma

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
            "downscale to each LR input. Images larger than --lr-size are first downscaled to it with "
            "the project's DS (antialiased bicubic); --as-lr takes them as LR as they are."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input / output")
    io.add_argument("--generator", required=True, help="StyleGAN2 checkpoint (port layout or lit_propulse's own)")
    io.add_argument("--input", required=True, help="folder of images (png/jpg/jpeg/webp; not recursive)")
    io.add_argument("--output", required=True, help="output folder (created)")
    io.add_argument("--lr-size", type=int, default=32, help="LR side length; larger images are made LR with DS")
    io.add_argument("--as-lr", action="store_true", help="take every image as the LR as it is (no DS); its size is the LR size")
    io.add_argument("--save-steps", type=int, default=0, help="save the current HR every K steps (0 = no intermediate images)")
    io.add_argument("--groups", default=None, help="CSV 'name,<group column>,...' -> success rate per group (PULSE Fig. 8)")
    io.add_argument("--degrade", action="append", default=[], metavar="SPEC",
                    help="degrade the LR (PULSE Sec. 5), repeatable: gauss:STD (0..255 scale), motion:LENGTH[:ANGLE] "
                         "(before DS, HR pixels), saltpepper:DENSITY; the report gives the loss against the degraded "
                         "and the clean LR")
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


def _list_inputs(folder: Path) -> list[Path]:
    from lit_propulse.core.images import natural_key

    if not folder.exists():
        raise UserFacingError(f"--input {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise UserFacingError(f"--input {str(folder)!r} is not a folder")
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UserFacingError(f"--input {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}; subfolders are not searched)")
    return sorted(files, key=lambda f: natural_key(f.name))


def _read_image(path: Path) -> tuple[Tensor | None, str]:
    """[3, s, s] in [-1, 1] (centre-cropped to a square, as the data pipeline does) or (None, reason)."""
    from lit_propulse.core.images import BadFile, check_image, load_square_rgb, uint8_to_tensor

    info = check_image(path, scan_mode="full")
    if isinstance(info, BadFile):
        return None, info.reason
    try:
        arr = load_square_rgb(path, None)
    except Exception as e:  # noqa: BLE001 - any decoding failure skips this one file
        return None, f"cannot decode ({type(e).__name__}: {e})"
    note = "" if info.size[0] == info.size[1] else f"non-square {info.size[0]}x{info.size[1]}, centre-cropped"
    return uint8_to_tensor(arr), note




def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


@register_command("pulse", "PULSE baseline: latent-space search for HR images that downscale to each LR")
def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    from datamodules.degradations import degrade_lr
    from lit_propulse.core.seeding import mix_seed, seed_generator
    from lit_propulse.core.downscale import downscale
    from lit_propulse.losses.pulse import downscale_l2
    from lit_propulse.networks.stylegan2 import Generator
    from lit_propulse.pulse import (
        NoiseConfig,
        PULSE,
        PULSEConfig,
        PULSELossConfig,
        group_success_rates,
        read_groups_csv,
    )
    from lit_propulse.core.images import save_image

    for flag, value, low in (("--samples", args.samples, 1), ("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                             ("--save-steps", args.save_steps, 0), ("--lr-size", args.lr_size, 1), ("--fit-samples", args.fit_samples, 2)):
        if value < low:
            raise UserFacingError(f"{flag} must be >= {low}, got {value}")
    degradations = [_parse_degradation(s) for s in args.degrade]
    if args.as_lr and any(d.where == "before_ds" for d in degradations):
        raise UserFacingError("--degrade motion:... blurs the HR before DS, but --as-lr inputs have no HR")
    groups = None
    if args.groups:
        try:
            groups = read_groups_csv(args.groups)
        except (FileNotFoundError, ValueError) as e:
            raise UserFacingError(f"--groups: {e}") from None
    try:
        config = PULSEConfig(
            steps=args.steps, learning_rate=args.learning_rate, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
            eps=args.eps, tile_latent=args.tile_latent,
            noise=NoiseConfig(args.noise_type, args.trainable_noise, _parse_int_list(args.bad_noise_layers, "--bad-noise-layers")),
            loss=PULSELossConfig(downscale_weight=args.downscale_weight, geocross_weight=args.geocross_weight),
            seed=args.seed, gaussian_fit_samples=args.fit_samples,
        )
    except ValueError as e:
        raise UserFacingError(str(e)) from None
    in_dir, out_dir = Path(args.input), Path(args.output)
    files = _list_inputs(in_dir)
    device = resolve_device(args.device)

    G = Generator.from_checkpoint(args.generator, map_location=device).eval()  # CheckpointError is user-facing
    if not args.as_lr and args.lr_size >= G.size:
        raise UserFacingError(f"--lr-size {args.lr_size} must be smaller than the generator's output size {G.size}")
    try:
        pulse = PULSE.from_generator(G, config, cache_dir=args.cache_dir, log=print)
    except ValueError as e:  # e.g. noise settings that do not fit this generator
        raise UserFacingError(f"{args.generator}: {e}") from None

    # -- read and prepare every image; bad ones are reported and skipped ------------------------------
    items: list[_Item] = []
    skipped: list[dict[str, str]] = []
    notes: dict[str, str] = {}
    lr_gap: dict[str, float] = {}
    downscaled = 0
    for f in files:
        img, note = _read_image(f)
        if img is None:
            print(f"skipping {f}: {note}", file=sys.stderr)
            skipped.append({"file": str(f), "reason": note})
            continue
        name, side = f.stem, img.shape[-1]
        if name in notes:
            reason = f"another input is also named {name!r} (outputs are named by file stem)"
            print(f"skipping {f}: {reason}", file=sys.stderr)
            skipped.append({"file": str(f), "reason": reason})
            continue
        lr_size = side if args.as_lr else args.lr_size
        if side > G.size and args.as_lr:
            reason = f"{side}x{side} is larger than the generator's output {G.size} (drop --as-lr to downscale it)"
        elif side < lr_size:
            reason = f"{side}x{side} is smaller than --lr-size {lr_size} (use --as-lr or a smaller --lr-size)"
        elif side == lr_size and any(d.where == "before_ds" for d in degradations):
            reason = "already at the LR size, so there is no HR for the motion blur (before DS) to act on"
        else:
            reason = ""
        if reason:
            print(f"skipping {f}: {reason}", file=sys.stderr)
            skipped.append({"file": str(f), "reason": reason})
            continue
        hr = img[None]  # [1, 3, s, s]
        clean = downscale(hr, lr_size)
        downscaled += int(side > lr_size)
        key = zlib.crc32(name.encode())
        degraded = degrade_lr(hr, lr_size, degradations, generator=seed_generator(args.seed, key)) if degradations else clean
        notes[name] = note
        lr_gap[name] = float(downscale_l2(degraded, clean)[0])
        for s in range(args.samples):
            items.append(_Item(name, str(f), s, degraded[0], clean[0], key))
    if not items:
        raise UserFacingError(f"--input {str(in_dir)!r}: no usable images ({len(skipped)} skipped, reasons above)")
    if downscaled:
        print(f"{downscaled} image(s) larger than {args.lr_size}x{args.lr_size} were made LR with DS "
              f"(antialiased bicubic); pass --as-lr to use images as LR as they are")

    # -- run, batched by LR size -------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lr").mkdir(exist_ok=True)
    for it in items:
        if it.sample == 0:
            save_image(it.lr, out_dir / "lr" / f"{it.name}.png")
            if degradations:
                save_image(it.clean_lr, out_dir / "lr" / f"{it.name}_clean.png")
    rows: list[dict[str, Any]] = []
    by_size: dict[int, list[_Item]] = {}
    for it in items:
        by_size.setdefault(it.lr.shape[-1], []).append(it)
    done, n_total, t_run = 0, len(items), time.perf_counter()
    for size, group in sorted(by_size.items()):
        for i in range(0, len(group), args.batch_size):
            batch = group[i : i + args.batch_size]
            lr = torch.stack([b.lr for b in batch]).to(device)
            clean_lr = torch.stack([b.clean_lr for b in batch]).to(device) if degradations else None
            seeds = [mix_seed(args.seed, b.key, b.sample) for b in batch]
            on_step = None
            if args.save_steps:
                def on_step(st, batch=batch):  # noqa: ANN001 - PULSEStep
                    if st.step % args.save_steps == 0 or st.step == args.steps - 1:
                        for b, img in zip(batch, st.image):
                            save_image(img.clamp(-1, 1), out_dir / "steps" / f"{b.name}_{b.sample}" / f"{st.step:04d}.png")
            res = pulse(lr, seeds=seeds, clean_lr=clean_lr, on_step=on_step).cpu()
            per_item_time = res.time_s / len(batch)
            for j, b in enumerate(batch):
                out_file = out_dir / f"{b.name}_{b.sample}.png"
                save_image(res.image[j].clamp(-1, 1), out_file)
                loss = float(res.loss[j])
                loss_clean = float(res.loss_clean[j]) if res.loss_clean is not None else loss
                rows.append({
                    "name": b.name, "sample": b.sample, "loss": loss, "loss_clean": loss_clean,
                    "success": bool(res.success[j]), "best_step": int(res.best_step[j]), "steps": res.steps,
                    "time_s": per_item_time, "seed": seeds[j], "file": out_file.name,
                    "lr_size": size, "input": b.file,
                })
            done += len(batch)
            ok = int(res.success.sum())
            print(f"[{done}/{n_total}] {size}px batch of {len(batch)}: {ok}/{len(batch)} within eps={args.eps:g} "
                  f"(loss {float(res.loss.min()):.2e}..{float(res.loss.max()):.2e}, {res.time_s:.1f} s)")
    t_run = time.perf_counter() - t_run

    # -- reports ------------------------------------------------------------------------------------
    settings = {
        "generator": str(args.generator), "generator_size": G.size, "lr_size": None if args.as_lr else args.lr_size,
        "as_lr": args.as_lr, "degrade": list(args.degrade), "samples": args.samples,
        "config": _jsonable(asdict(config)),
    }
    (out_dir / "reports").mkdir(exist_ok=True)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    for name, rs in by_name.items():
        rs.sort(key=lambda r: r["sample"])
        report = {
            "name": name, "input": rs[0]["input"], "lr_size": rs[0]["lr_size"], "note": notes.get(name, ""),
            "lr_file": f"lr/{name}.png", "eps": args.eps, "steps": args.steps,
            # how far the degraded LR itself is from the clean one (same units as loss; 0 = no degradation)
            "degraded_vs_clean": lr_gap[name],
            "success_any": any(r["success"] for r in rs),
            "samples": [{k: r[k] for k in ("sample", "file", "loss", "loss_clean", "success", "best_step", "time_s", "seed")} for r in rs],
            "settings": settings,
        }
        (out_dir / "reports" / f"{name}.json").write_text(json.dumps(report, indent=2))
    columns = ["name", "sample", "loss", "loss_clean", "success", "best_step", "steps", "time_s", "seed", "file"]
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["name"], r["sample"])):
            w.writerow({**r, "loss": _fmt(r["loss"]), "loss_clean": _fmt(r["loss_clean"]), "time_s": f"{r['time_s']:.3f}"})
    n_ok = sum(r["success"] for r in rows)
    rate = n_ok / len(rows)
    summary: dict[str, Any] = {
        "success_rate": rate, "successes": n_ok, "searches": len(rows), "images": len(by_name),
        "failed": [f"{r['name']}_{r['sample']}" for r in rows if not r["success"]],
        "mean_loss": sum(r["loss"] for r in rows) / len(rows),
        "mean_loss_clean": sum(r["loss_clean"] for r in rows) / len(rows),
        "mean_degraded_vs_clean": sum(lr_gap[r["name"]] for r in rows) / len(rows),
        "skipped": skipped, "time_s": t_run, "settings": settings,
    }
    if groups is not None:
        rates = group_success_rates([r["name"] for r in rows], [r["success"] for r in rows], groups)
        summary["groups"] = [{**asdict(g), "rate": g.rate} for g in rates]
        with open(out_dir / "groups.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["column", "label", "searches", "successes", "rate"])
            for g in rates:
                w.writerow([g.column, g.label, g.n, g.successes, f"{g.rate:.4f}"])
        print("success rate per group:")
        for g in rates:
            print(f"  {g.column}={g.label}: {g.successes}/{g.n} ({100 * g.rate:.1f}%)")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    extra = f"; {len(skipped)} file(s) skipped" if skipped else ""
    clean = ""
    if degradations:
        gap = sum(lr_gap[r["name"]] for r in rows) / len(rows)
        clean = (f"; mean loss vs degraded LR {sum(r['loss'] for r in rows) / len(rows):.2e}, vs clean LR "
                 f"{sum(r['loss_clean'] for r in rows) / len(rows):.2e} (degraded LR vs clean LR {gap:.2e})")
    print(f"PULSE: {n_ok}/{len(rows)} searches within eps={args.eps:g} ({100 * rate:.1f}% success) over {len(by_name)} image(s) "
          f"x {args.samples} sample(s){clean}{extra}; results in {out_dir / 'results.csv'}")
    return 0


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return getattr(x, "__name__", repr(x))
