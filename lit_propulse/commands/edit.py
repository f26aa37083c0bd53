"""``python -m lit_propulse edit``: semantic editing of Pro-PULSE's super-resolved faces (Fig. 9).

Inputs are prepared exactly as ``upsample`` prepares them (same flags: photos are detected and
aligned, ``--as-lr`` takes aligned face crops or LRs as they are, made LR with DS when larger). Each
LR is encoded to w+, moved along ``--direction`` by every ``--strengths`` value
(:func:`lit_propulse.editing.edit_ws`, optionally only ``--layers``) and rendered at every
resolution. Written into ``--output``:

* ``<name>/grid.png`` — rows = resolutions (side outputs, then the final image; all shown at the
  final size), columns = strengths in the given order;
* ``<name>/strength_<s>/hr.png`` and ``side_<r>.png`` — every individual render;
* ``<name>/lr.png`` and ``<name>/aligned.png`` (``--as-lr``: ``input.png``) — what was edited;
* ``report.json`` — settings (direction, strengths, layers, grid layout) and per input the files
  written or why it was skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from lit_propulse.cli import register_command
from lit_propulse.commands.upsample import (
    Record,
    InputPreparer,
    add_input_arguments,
    add_model_arguments,
    batched,
    check_input_arguments,
    list_inputs,
    load_upsampler,
    resolve_device,
)
from lit_propulse.core.errors import UserFacingError


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
    p = argparse.ArgumentParser(
        prog="python -m lit_propulse edit",
        description="Semantic editing (Pro-PULSE Fig. 9): encode each LR to w+, add strength x direction, render every "
                    "resolution; a grid per image (rows = resolutions, columns = strengths) and every render.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_arguments(p)
    add_input_arguments(p)
    g = p.add_argument_group("edit")
    g.add_argument("--direction", required=True,
                   help="latent direction, .npy or .pt: [w_dim] or [1, w_dim] (InterFaceGAN; every layer) or [num_ws, w_dim]")
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


@register_command("edit", "semantic editing (Fig. 9): w+ + s*direction rendered at every resolution, one grid per image")
def main(argv: Sequence[str]) -> int:
    from lit_propulse.editing import edit_grid, layer_direction, load_direction, render_edits
    from lit_propulse.core.images import save_image

    args = build_parser().parse_args(_join_negative_values(list(argv)))
    check_input_arguments(args)
    strengths = parse_strengths(args.strengths)
    layers = parse_layers(args.layers)
    try:
        direction = load_direction(args.direction)
    except (ValueError, FileNotFoundError) as e:
        raise UserFacingError(f"--direction: {e}") from None
    files = list_inputs(args.input)
    device = resolve_device(args.device)
    up, model_files = load_upsampler(args, device)
    num_ws, w_dim = up.gds.num_ws, up.gds.w_dim
    try:
        layer_direction(direction, num_ws, w_dim)
    except ValueError as e:
        raise UserFacingError(f"--direction {args.direction}: {e}") from None
    if layers is not None and not all(0 <= i < num_ws for i in layers):
        raise UserFacingError(f"--layers {args.layers!r}: rows must be in [0, {num_ws}) for this generator (num_ws = {num_ws})")
    direction = direction.to(device)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    prep = InputPreparer(up.lr_size, up.size, args.as_lr, args.faces, args.min_prob, args.min_face_size, device)

    records: list[Record] = []
    n = len(files)
    t0 = time.perf_counter()

    def stream():
        for i, f in enumerate(files, 1):
            rec, items = prep(f)
            records.append(rec)
            if rec.status == "skipped":
                print(f"[{i}/{n}] {f.name}: skipped: {rec.reason}", file=sys.stderr)
            else:
                print(f"[{i}/{n}] {f.name}: {len(items)} image(s) to edit" + (f" ({rec.note})" if rec.note else ""))
            yield rec, items

    done = 0
    resolutions: list[int] = []
    with torch.no_grad():
        for batch in batched(stream(), args.batch_size):
            lr = torch.stack([it.lr for _, it in batch]).to(device)  # [B, 3, l, l]
            ws = up.encode(lr)  # [B, num_ws, w_dim]
            out = render_edits(up, ws, direction, strengths, layers, batch_size=args.batch_size)
            resolutions = out.resolutions
            for j, (rec, it) in enumerate(batch):
                d = out_dir / it.name
                files_written = {"grid.png": edit_grid(out, j), "lr.png": it.lr}
                if it.source is not None:
                    files_written[f"{it.source_label}.png"] = it.source
                for k, s in enumerate(strengths):
                    for r in resolutions:
                        fname = "hr.png" if r == up.size else f"side_{r}.png"
                        files_written[f"strength_{_strength_label(s)}/{fname}"] = out.images[r][j, k]
                for fname, img in files_written.items():
                    save_image(img.clamp(-1, 1).float().cpu(), d / fname)
                rec.outputs.append({"name": it.name, "files": [f"{it.name}/{f}" for f in files_written],
                                    **({"face": it.face} if it.face else {})})
            done += len(batch)
            print(f"edited {done} image(s) so far ({len(strengths)} strengths x {len(resolutions)} resolutions each)")

    skipped = [r for r in records if r.status == "skipped"]
    report = {
        "settings": {
            **model_files, "guidance": args.guidance, "size": up.size, "lr_size": up.lr_size,
            "direction": str(args.direction), "direction_shape": list(direction.shape),
            "direction_norm": float(direction.float().norm()), "strengths": strengths, "layers": layers,
            "as_lr": args.as_lr, "faces": None if args.as_lr else args.faces, "min_prob": None if args.as_lr else args.min_prob,
            "grid_rows": resolutions or sorted([*up.gds.resolutions, up.size]), "grid_columns": strengths,
        },
        "summary": {
            "inputs": len(records), "edited_inputs": len(records) - len(skipped), "skipped_inputs": len(skipped),
            "results": done, "skipped_by_kind": dict(Counter(r.kind for r in skipped)),
            "time_s": round(time.perf_counter() - t0, 3),
        },
        "inputs": [r.as_dict() for r in records],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(f"edit: {done} image(s) edited from {len(records) - len(skipped)}/{len(records)} input(s)"
          + (f"; {len(skipped)} skipped" if skipped else "")
          + f"; grids <name>/grid.png (rows {report['settings']['grid_rows']}, columns {strengths}); report {out_dir / 'report.json'}")
    if not done:
        print("error: nothing was edited (every input was skipped, reasons above and in report.json)", file=sys.stderr)
        return 1
    return 0
