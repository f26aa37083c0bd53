"""``python -m lit_propulse upsample``: trained Pro-PULSE on a folder of photos or LRs (issues 8, 17).

Every image of ``--input`` (png/jpg/jpeg/webp, not recursive) is taken by the LR convention
(:class:`~lit_propulse.commands.common.LRRule`, docs/photos-editing.md "Which inputs are LRs"):

* a square input smaller than the generator's output is the LR as it is (it must be the encoder's
  LR size; anything else stops the command with one line naming the file and the sizes);
* ``--lr-size N`` (N = the encoder's LR size): every input is an HR (an aligned face crop, e.g. a
  ground truth to test against), centre-cropped and made the LR with the project's ``DS``
  (:func:`~lit_propulse.core.downscale.downscale`);
* any other input (larger, or not square; every input with ``--photos``) is a photo: faces are
  detected with MTCNN (:mod:`lit_propulse.faces`), the largest kept (``--faces largest``) or every
  one (``--faces all``) with probability >= ``--min-prob``, each aligned FFHQ-style to the
  generator's size and made the LR with ``DS``;

then the upsampler (:class:`~lit_propulse.inference.ProPulseUpsampler`) runs in batches of
``--batch-size``. Written into ``--output``:

* ``<name>/hr.png`` — the final image; ``<name>/side_<r>.png`` — every side output;
* ``<name>/lr.png`` — the LR the model saw; ``<name>/aligned.png`` — the aligned crop the LR was made
  from (``--lr-size``: ``<name>/input.png``, the square input, when it was larger than the LR);
* ``<name>/panel.png`` — LR | side outputs | HR | aligned crop, side by side at the output size;
* ``--paste-back``: ``<stem>_restored.png`` — the whole photo with every restored face warped back
  through a feathered mask (:func:`lit_propulse.faces.paste_faces`), enlarged by the HR crop's size
  over the largest face's size in the photo, capped by ``--paste-max-scale``;
* ``--samples N``: ``<name>/sample_<k>.png``, ``<name>/spread.png``, ``<name>/samples.png`` — N answers
  and where they differ (:mod:`lit_propulse.commands.samples_args`; ``--dial``: answer at a dial position);
* ``report.json`` — settings, a summary and, per input file, what it was taken as, the faces found
  and used (box, probability, landmarks, crop facts), the files written, or why it was skipped.

``<name>`` is the file's stem; with ``--faces all`` every face gets ``<stem>_face<k>`` (k = 0 for the
largest). Unreadable files, images without a (usable) face and too-small faces are reported and
skipped; they never stop the batch.
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
from lit_propulse.commands.refine_args import add_refine_arguments, refine_settings, refined_upsampler
from lit_propulse.commands.samples_args import add_samples_arguments, dial_settings, dialed_upsampler, draw_samples, samples_settings, write_samples
from lit_propulse.core.errors import UserFacingError

if TYPE_CHECKING:
    from lit_propulse.faces import BackgroundUpsampler
    from lit_propulse.inference import ProPulseUpsampler


def write_outputs(out_dir: Path, item: common.Item, image: Tensor, side: dict[int, Tensor], size: int) -> list[str]:
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


def _panel_columns(up: ProPulseUpsampler) -> str:
    return " | ".join(["LR"] + [f"side {r}" for r in up.gds.resolutions] + ["HR", "aligned crop (photos) or HR input (--lr-size, when larger than the LR)"])


@dataclass
class PasteBack:
    """How ``--paste-back`` puts the restored faces back into their photo (:func:`lit_propulse.faces.paste_faces`).

    Args:
        max_scale: the largest enlargement of the photo (:func:`lit_propulse.faces.paste_scale`); 1 = keep its size.
        colour: "match" = each face's colour statistics matched to the photo's face at the LR size;
            "none" = the generator's output as it is.
        background_upsampler: what enlarges the photo (Python API only, e.g. a Real-ESRGAN wrapper);
            None = bicubic (:func:`lit_propulse.faces.resize_background`).
    """

    max_scale: float = 4.0
    colour: str = "match"
    background_upsampler: BackgroundUpsampler | None = None

    def settings(self) -> dict:
        return {
            "max_scale": self.max_scale,
            "colour": self.colour,
            "mask": "feathered square (faces.feather_mask defaults)",
            "background": "bicubic" if self.background_upsampler is None else getattr(self.background_upsampler, "__name__", "custom"),
            "scale_rule": "HR crop side / largest face's crop side in the photo, capped by max_scale and a 4096 px long side, >= 1",
        }


def paste_back(out_dir: Path, rec: common.Record, faces: list[tuple[common.Item, Tensor]], up: ProPulseUpsampler, paste: PasteBack) -> dict:
    """Write ``<stem>_restored.png``: the photo of ``rec`` with its restored ``faces`` ((item, HR [3, S, S])
    pairs, largest first) pasted back; returns its entry for the report."""
    from lit_propulse.core.images import save_image
    from lit_propulse.faces import paste_faces, paste_scale

    photo = faces[0][0].photo
    quads = [it.quad for it, _ in faces]
    scale = paste_scale(tuple(photo.shape[-2:]), quads, up.size, paste.max_scale)
    res = paste_faces(
        photo,
        [hr.clamp(-1, 1) for _, hr in faces],
        quads,
        scale,
        references=[it.source for it, _ in faces],
        colour=paste.colour,
        colour_size=up.lr_size,
        background_upsampler=paste.background_upsampler,
    )
    name = f"{Path(rec.file).stem}_restored.png"
    save_image(res.image.clamp(-1, 1).float().cpu(), out_dir / name)
    h, w = res.image.shape[-2:]
    return {"file": name, "size": [w, h], "scale": round(scale, 4), "faces": len(faces), "pasted_fraction": round(float(res.mask.mean()), 4)}


def build_parser() -> argparse.ArgumentParser:
    p = common.photo_parser(
        "upsample",
        "Pro-PULSE on photos and LRs: inputs smaller than the generator's output are the LR as they are; "
        "photos have their faces detected and aligned (MTCNN, FFHQ alignment) and made LR with DS; "
        "writes HR, side outputs, LR, aligned crop, optionally the photo with its faces pasted back, and report.json.",
    )
    add_refine_arguments(p)
    add_samples_arguments(p)
    g = p.add_argument_group("paste back (photos)")
    g.add_argument("--paste-back", action="store_true", help="also write <stem>_restored.png: each photo with every restored face put back (feathered mask)")
    g.add_argument(
        "--paste-max-scale",
        type=float,
        default=4.0,
        help="the photo is enlarged by the HR crop's size over the largest face's size in it, at most this much (1 = keep the photo's size)",
    )
    g.add_argument(
        "--paste-colour",
        default="match",
        choices=["match", "none"],
        help="match each restored face's colour statistics to the photo's face (at the LR size), or keep the generator's",
    )
    return p


def check_paste_arguments(args: argparse.Namespace) -> PasteBack | None:
    """The :class:`PasteBack` of ``--paste-back`` (None without it); its flags checked."""
    if not args.paste_back:
        return None
    if args.paste_max_scale < 1:
        raise UserFacingError(f"--paste-max-scale must be >= 1 (1 = keep the photo's size), got {args.paste_max_scale}")
    if args.lr_size is not None or args.as_lr:
        raise UserFacingError(
            f"--paste-back puts faces back into photos, but {'--lr-size' if args.lr_size is not None else '--as-lr'} "
            f"takes every input as an HR face crop; drop one of them"
        )
    return PasteBack(args.paste_max_scale, args.paste_colour)


def run(job: common.PhotoJob, up: ProPulseUpsampler, rule: common.LRRule, paste: PasteBack | None = None) -> tuple[list[common.Record], int]:
    """Prepare every input by ``rule`` and upsample the LRs in batches, writing each result as it comes
    (and each photo with its faces pasted back once all of them are done, with ``paste``); returns the
    records of every input and the number of results."""
    records: list[common.Record] = []

    def describe(rec: common.Record, items: list[common.Item]) -> str:
        if rec.taken_as == "lr":
            return "the LR as it is"
        if rec.taken_as == "hr":
            return "an HR, made LR with DS"
        return f"{rec.faces_used} face(s) of {rec.faces_found} found"

    done = 0
    pending: dict[int, list[tuple[common.Item, Tensor]]] = {}  # id(record) -> the faces of its photo upsampled so far
    with torch.no_grad():
        for batch, lr in common.photo_batches(job, rule, records, describe, keep_photo=paste is not None):
            out = up(lr)
            answers = draw_samples(up, lr, job.args, [it.name for _, it in batch])  # --samples (None without)
            for j, (rec, it) in enumerate(batch):
                rec.add_output(it, write_outputs(job.out_dir, it, out.image[j], {r: s[j] for r, s in out.side_images.items()}, up.size))
                if answers is not None:
                    rec.outputs[-1]["samples"] = write_samples(job.out_dir, it, answers, j, up.size)
                if paste is not None and it.photo is not None:
                    got = pending.setdefault(id(rec), [])
                    got.append((it, out.image[j]))
                    if len(got) == rec.faces_used:
                        rec.restored = paste_back(job.out_dir, rec, pending.pop(id(rec)), up, paste)
            done += len(batch)
            print(f"upsampled {done} image(s) so far (batch of {len(batch)})")
    return records, done


def report(
    job: common.PhotoJob,
    up: ProPulseUpsampler,
    model_files: dict[str, str | None],
    rule: common.LRRule,
    paste: PasteBack | None,
    records: list[common.Record],
    done: int,
    seconds: float,
) -> int:
    """Write report.json, print the summary line; the exit code (1 when nothing was upsampled)."""
    summary = {
        **common.input_counts(records, "upsampled_inputs"),
        "results": done,
        "time_s": round(seconds, 3),
        "taken_as": {k: sum(r.taken_as == k for r in records) for k in ("lr", "hr", "photo")},
    }
    if paste is not None:
        summary["restored_photos"] = sum(r.restored is not None for r in records)
    settings = {
        **common.photo_settings(job, up, model_files, rule),
        "side_resolutions": list(up.gds.resolutions),
        "alignment": "ffhq (MTCNN eye centres and mouth corners)",
        "lr_from": "DS (antialiased bicubic, lit_propulse.core.downscale)",
        "panel_columns": _panel_columns(up),
        "paste_back": paste.settings() if paste is not None else None,
        "refine": refine_settings(up),
        "dial": dial_settings(up),
        "samples": samples_settings(job.args, up),
    }
    path = common.write_photo_report(job, settings, summary, records)
    skipped = summary["skipped_inputs"]
    kinds = ", ".join(f"{k}: {v}" for k, v in summary["skipped_by_kind"].items())
    print(
        f"upsample: {done} result(s) from {summary['upsampled_inputs']}/{len(records)} input(s)"
        + (f"; {skipped} skipped ({kinds})" if skipped else "")
        + (f"; {summary['restored_photos']} photo(s) with faces pasted back" if paste is not None else "")
        + f"; report {path}"
    )
    return common.exit_code(done, "upsampled")


@register_command("upsample", "Pro-PULSE on photos and LRs: the LR as it is, or detect, align, DS; HR + side outputs (+ pasted back) + report.json")
def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    paste = check_paste_arguments(args)
    job = common.read_photo_job(args)  # the output folder exists before any model loads
    up, model_files = common.load_upsampler(job.model_files, args.guidance, job.device)
    up = refined_upsampler(dialed_upsampler(up, args), args)
    rule = common.lr_rule(args, up.size, up.lr_size, detects=True)
    t0 = time.perf_counter()
    records, done = run(job, up, rule, paste)
    return report(job, up, model_files, rule, paste, records, done, time.perf_counter() - t0)
