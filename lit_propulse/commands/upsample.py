"""``python -m lit_propulse upsample``: trained Pro-PULSE on a folder of photos (issue 8).

For every image of ``--input`` (png/jpg/jpeg/webp, not recursive):

* default: detect faces with MTCNN (:mod:`lit_propulse.faces`), keep the largest (``--faces largest``)
  or every one (``--faces all``) with probability >= ``--min-prob``, align each FFHQ-style to the
  generator's size, and make the LR with the project's ``DS`` (:func:`~lit_propulse.core.downscale.downscale`);
* ``--as-lr``: no detection; the whole image (centre-cropped to a square) is the LR, brought to the
  model's LR size with ``DS`` when larger (an aligned face crop or an LR);

then the upsampler (:class:`~lit_propulse.inference.ProPulseUpsampler`) runs in batches of
``--batch-size``. Written into ``--output``:

* ``<name>/hr.png`` — the final image; ``<name>/side_<r>.png`` — every side output;
* ``<name>/lr.png`` — the LR the model saw; ``<name>/aligned.png`` — the aligned crop the LR was made
  from (``--as-lr``: ``<name>/input.png``, the square input, when it was larger than the LR);
* ``<name>/panel.png`` — LR | side outputs | HR | aligned crop, side by side at the output size;
* ``report.json`` — settings, a summary and, per input file, the faces found and used (box,
  probability, landmarks, crop facts), the files written, or why it was skipped.

``<name>`` is the file's stem; with ``--faces all`` every face gets ``<stem>_face<k>`` (k = 0 for the
largest). Unreadable files, images without a (usable) face and too-small faces are reported and
skipped; they never stop the batch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lit_propulse.cli import register_command
from lit_propulse.commands.common import (
    InputPreparer,
    Item,
    PhotoJob,
    Record,
    add_input_arguments,
    add_model_arguments,
    batched,
    input_counts,
    load_upsampler,
    prepare_all,
    read_photo_job,
)

if TYPE_CHECKING:
    from lit_propulse.inference import ProPulseUpsampler


def write_outputs(out_dir: Path, item: Item, image: Tensor, side: dict[int, Tensor], size: int) -> list[str]:
    """Write one result; returns the files written (relative to ``out_dir``)."""
    from lit_propulse.core.images import rows_grid, save_image

    d = out_dir / item.name
    files: dict[str, Tensor] = {"hr.png": image}
    files.update({f"side_{r}.png": side[r] for r in sorted(side)})
    files["lr.png"] = item.lr
    if item.source is not None:
        files[f"{item.source_label}.png"] = item.source
    panel = [item.lr] + [side[r] for r in sorted(side)] + [image] + ([item.source] if item.source is not None else [])
    files["panel.png"] = rows_grid([p[None].float().cpu() for p in panel], size)
    for fname, img in files.items():
        save_image(img.clamp(-1, 1).float().cpu(), d / fname)
    return [f"{item.name}/{f}" for f in files]


def _panel_columns(up: ProPulseUpsampler, as_lr: bool) -> str:
    return " | ".join(["LR"] + [f"side {r}" for r in up.gds.resolutions] + ["HR"] + ["input (when larger than the LR)" if as_lr else "aligned"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lit_propulse upsample",
        description="Pro-PULSE on photos: detect and align faces (MTCNN, FFHQ alignment), make each LR with DS, "
                    "upsample, and write HR, side outputs, LR, aligned crop and report.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(p)
    add_input_arguments(p)
    return p


def run(job: PhotoJob, up: ProPulseUpsampler) -> tuple[list[Record], int]:
    """Prepare every input and upsample the LRs in batches, writing each result as it comes;
    returns the records of every input and the number of results."""
    args = job.args
    prep = InputPreparer(up.lr_size, up.size, args.as_lr, args.faces, args.min_prob, args.min_face_size, job.device)
    records: list[Record] = []

    def describe(rec: Record, items: list[Item]) -> str:
        return "as LR" if args.as_lr else f"{rec.faces_used} face(s) of {rec.faces_found} found"

    done = 0
    with torch.no_grad():
        for batch in batched(prepare_all(job.files, prep, records, describe), args.batch_size):
            lr = torch.stack([it.lr for _, it in batch]).to(job.device)  # [B, 3, l, l]
            out = up(lr)
            for j, (rec, it) in enumerate(batch):
                written = write_outputs(job.out_dir, it, out.image[j], {r: s[j] for r, s in out.side_images.items()}, up.size)
                rec.outputs.append({"name": it.name, "files": written, **({"face": it.face} if it.face else {})})
            done += len(batch)
            print(f"upsampled {done} face(s) so far (batch of {len(batch)})")
    return records, done


def report(job: PhotoJob, up: ProPulseUpsampler, model_files: dict[str, str | None], records: list[Record], done: int, seconds: float) -> int:
    """Write report.json, print the summary line; the exit code (1 when nothing was upsampled)."""
    args = job.args
    summary = {**input_counts(records, "upsampled_inputs"), "results": done, "time_s": round(seconds, 3)}
    settings = {
        **model_files, "guidance": args.guidance,
        "size": up.size, "lr_size": up.lr_size, "side_resolutions": list(up.gds.resolutions),
        "as_lr": args.as_lr, "faces": None if args.as_lr else args.faces,
        "min_prob": None if args.as_lr else args.min_prob, "alignment": None if args.as_lr else "ffhq (MTCNN eye centres and mouth corners)",
        "lr_from": "DS (antialiased bicubic, lit_propulse.core.downscale)", "panel_columns": _panel_columns(up, args.as_lr),
    }
    path = job.out_dir / "report.json"
    path.write_text(json.dumps({"settings": settings, "summary": summary, "inputs": [r.as_dict() for r in records]}, indent=2))
    skipped = summary["skipped_inputs"]
    kinds = ", ".join(f"{k}: {v}" for k, v in summary["skipped_by_kind"].items())
    print(f"upsample: {done} result(s) from {summary['upsampled_inputs']}/{len(records)} input(s)"
          + (f"; {skipped} skipped ({kinds})" if skipped else "") + f"; report {path}")
    if not done:
        print("error: nothing was upsampled (every input was skipped, reasons above and in report.json)", file=sys.stderr)
        return 1
    return 0


@register_command("upsample", "Pro-PULSE on photos: detect, align, DS to LR, upsample; HR + side outputs + report.json")
def main(argv: Sequence[str]) -> int:
    job = read_photo_job(build_parser().parse_args(list(argv)))  # the output folder exists before any model loads
    up, model_files = load_upsampler(job.model_files, job.args.guidance, job.device)
    t0 = time.perf_counter()
    records, done = run(job, up)
    return report(job, up, model_files, records, done, time.perf_counter() - t0)
