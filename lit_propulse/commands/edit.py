"""``python -m lit_propulse edit``: semantic editing of Pro-PULSE's super-resolved faces (Fig. 9).

Inputs are prepared exactly as ``upsample`` prepares them (the same LR convention and flags,
:class:`~lit_propulse.commands.common.LRRule`: a square input smaller than the generator's output is
the LR as it is, ``--lr-size N`` makes every input an HR brought to the LR with DS, other inputs are
photos whose faces are detected and aligned). Each LR is encoded to w+, moved along ``--direction`` by every ``--strengths`` value
(:func:`lit_propulse.editing.edit_ws`, optionally only ``--layers``) and rendered at every
resolution. Written into ``--output``:

* ``<name>/grid.png`` — rows = resolutions (side outputs, then the final image; all shown at the
  final size), columns = strengths in the given order;
* ``<name>/strength_<s>/hr.png`` and ``side_<r>.png`` — every individual render;
* ``<name>/lr.png`` and ``<name>/aligned.png`` (``--lr-size``: ``input.png``) — what was edited;
* ``report.json`` — settings (direction, strengths, layers, grid layout) and per input the files
  written or why it was skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lit_propulse.cli import register_command
from lit_propulse.commands import common
from lit_propulse.core.errors import UserFacingError

if TYPE_CHECKING:
    from lit_propulse.inference import ProPulseUpsampler


def parse_strengths(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise UserFacingError(f"--strengths must be a comma-separated list of numbers, got {text!r}") from None
    if not vals:
        raise UserFacingError("--strengths lists no values")
    return vals


def parse_layers(text: str | None) -> list[int] | None:
    """``"0-3,8"`` -> [0, 1, 2, 3, 8]; None / "" / "all" = every layer."""
    if text is None or text.strip() in ("", "all"):
        return None
    out: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            a, sep, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if sep else [int(a)]
    except ValueError:
        raise UserFacingError(f"--layers must be w+ row indices and ranges like 0-3,8, got {text!r}") from None
    return out


def _strength_label(s: float) -> str:
    return f"{s:+g}"


def build_parser() -> argparse.ArgumentParser:
    p = common.photo_parser(
        "edit",
        "Semantic editing (Pro-PULSE Fig. 9): encode each LR to w+, add strength x direction, render every "
        "resolution; a grid per image (rows = resolutions, columns = strengths) and every render.",
    )
    g = p.add_argument_group("edit")
    g.add_argument("--direction", required=True, help="latent direction, .npy or .pt: [w_dim] or [1, w_dim] (InterFaceGAN; every layer) or [num_ws, w_dim]")
    g.add_argument("--strengths", default="-3,-1.5,0,1.5,3", help="comma-separated strengths s of ws + s*direction")
    g.add_argument("--layers", default=None, help="w+ rows to edit, e.g. 0-5 or 0,1,2 (default: all)")
    return p


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--strengths -3,-1.5`` would read as an option to argparse: glue it to its flag."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--strengths" and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


@dataclass
class EditSpec:
    """The edit of every image: ws + s·direction for each s of ``strengths``, on ``layers`` (None = all)."""

    direction: Tensor  # [w_dim], [1, w_dim] or [num_ws, w_dim]
    strengths: list[float]
    layers: list[int] | None


def read_edit(args: argparse.Namespace) -> EditSpec:
    """--strengths, --layers and the --direction file (shape checked once the model is known)."""
    from lit_propulse.editing import load_direction

    strengths, layers = parse_strengths(args.strengths), parse_layers(args.layers)
    try:
        direction = load_direction(args.direction)
    except (ValueError, FileNotFoundError) as e:
        raise UserFacingError(f"--direction: {e}") from None
    return EditSpec(direction, strengths, layers)


def fit_edit_to_model(spec: EditSpec, args: argparse.Namespace, up: ProPulseUpsampler, device: torch.device) -> EditSpec:
    """Check the direction's shape and the layers against the model's w+; the direction on ``device``."""
    from lit_propulse.editing import layer_direction

    num_ws, w_dim = up.gds.num_ws, up.gds.w_dim
    try:
        layer_direction(spec.direction, num_ws, w_dim)
    except ValueError as e:
        raise UserFacingError(f"--direction {args.direction}: {e}") from None
    if spec.layers is not None and not all(0 <= i < num_ws for i in spec.layers):
        raise UserFacingError(f"--layers {args.layers!r}: rows must be in [0, {num_ws}) for this generator (num_ws = {num_ws})")
    return EditSpec(spec.direction.to(device), spec.strengths, spec.layers)


def write_edits(out_dir: Path, item: common.Item, grid: Tensor, renders: dict[int, Tensor], spec: EditSpec, size: int) -> list[str]:
    """Write one image's grid, LR, source and every render (``renders[r]``: [S, 3, r, r]); returns
    the files written (relative to ``out_dir``)."""
    from lit_propulse.core.images import save_image

    files = {"grid.png": grid, "lr.png": item.lr}
    if item.source is not None:
        files[f"{item.source_label}.png"] = item.source
    for k, s in enumerate(spec.strengths):
        for r, images in renders.items():
            files[f"strength_{_strength_label(s)}/{'hr.png' if r == size else f'side_{r}.png'}"] = images[k]
    for fname, img in files.items():
        save_image(img.clamp(-1, 1).float().cpu(), out_dir / item.name / fname)
    return [f"{item.name}/{f}" for f in files]


def run(job: common.PhotoJob, up: ProPulseUpsampler, spec: EditSpec, rule: common.LRRule) -> tuple[list[common.Record], int, list[int]]:
    """Prepare every input by ``rule``, encode and render the edits in batches, writing each image's
    files as it comes; returns the records of every input, the number of images edited, the
    resolutions rendered."""
    from lit_propulse.editing import edit_grid, render_edits

    records: list[common.Record] = []
    done, resolutions = 0, []
    with torch.no_grad():
        for batch, lr in common.photo_batches(job, rule, records, lambda rec, items: f"{len(items)} image(s) to edit"):
            ws = up.encode(lr)  # [B, num_ws, w_dim]
            out = render_edits(up, ws, spec.direction, spec.strengths, spec.layers, batch_size=job.args.batch_size)
            resolutions = out.resolutions
            for j, (rec, it) in enumerate(batch):
                renders = {r: out.images[r][j] for r in resolutions}  # [S, 3, r, r]
                rec.add_output(it, write_edits(job.out_dir, it, edit_grid(out, j), renders, spec, up.size))
            done += len(batch)
            print(f"edited {done} image(s) so far ({len(spec.strengths)} strengths x {len(resolutions)} resolutions each)")
    return records, done, resolutions


def report(
    job: common.PhotoJob,
    up: ProPulseUpsampler,
    model_files: dict[str, str | None],
    spec: EditSpec,
    rule: common.LRRule,
    results: tuple[list[common.Record], int, list[int]],
    seconds: float,
) -> int:
    """Write report.json, print the summary line; the exit code (1 when nothing was edited)."""
    args, (records, done, resolutions) = job.args, results
    summary = {**common.input_counts(records, "edited_inputs"), "results": done, "time_s": round(seconds, 3)}
    settings = {
        **common.photo_settings(job, up, model_files, rule),
        "direction": str(args.direction),
        "direction_shape": list(spec.direction.shape),
        "direction_norm": float(spec.direction.float().norm()),
        "strengths": spec.strengths,
        "layers": spec.layers,
        "grid_rows": resolutions or sorted([*up.gds.resolutions, up.size]),
        "grid_columns": spec.strengths,
    }
    path = common.write_photo_report(job, settings, summary, records)
    skipped = summary["skipped_inputs"]
    print(
        f"edit: {done} image(s) edited from {summary['edited_inputs']}/{len(records)} input(s)"
        + (f"; {skipped} skipped" if skipped else "")
        + f"; grids <name>/grid.png (rows {settings['grid_rows']}, columns {spec.strengths}); report {path}"
    )
    return common.exit_code(done, "edited")


@register_command("edit", "semantic editing (Fig. 9): w+ + s*direction rendered at every resolution, one grid per image")
def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(_join_negative_values(list(argv)))
    spec = read_edit(args)
    job = common.read_photo_job(args)  # the output folder exists before any model loads
    up, model_files = common.load_upsampler(job.model_files, args.guidance, job.device)
    spec = fit_edit_to_model(spec, args, up, job.device)
    rule = common.lr_rule(args, up.size, up.lr_size, detects=True)
    t0 = time.perf_counter()
    results = run(job, up, spec, rule)
    return report(job, up, model_files, spec, rule, results, time.perf_counter() - t0)
