"""Ship a run's toy exports as the package's defaults (issue #15): G_ds, E_W and E_W+ of a finished
toy pipeline (experiments/toy/long.yaml writes them to runs/toy_long/<stage>/) are written, with
their floating-point tensors in float16 (:func:`lit_propulse.core.weights.half_precision`; half the
bytes), to lit_propulse/data/toy_{gds,ew,ewplus}_64.pt, where ``upsample``, ``edit``, ``export``,
``demo`` and the quick start's evaluation find them.

Before it writes anything it checks what float16 changes: E_W and Pro-PULSE (E_W+ with E_W
guidance) from the float32 and the float16 files on the same toy test faces, the largest absolute
difference of the 64² output and L_rec (Eq. (6), unweighted mean over scales) from both. It refuses
to ship when the outputs differ by more than ``--tolerance`` or when all the shipped weights together
(these three and the other files in lit_propulse/data) would exceed ``--budget-mb`` (40 MB, the issue's
limit).

    python benchmarks/ship_toy_exports.py runs/toy_long            # check, then write
    python benchmarks/ship_toy_exports.py runs/toy_long --dry-run  # check only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.toy_faces import ToyFacesDataModule  # noqa: E402
from lit_propulse.commands.common import PACKAGED_EXPORTS  # noqa: E402
from lit_propulse.core.weights import atomic_save, half_precision, safe_load  # noqa: E402
from lit_propulse.inference import ProPulseUpsampler  # noqa: E402
from lit_propulse.losses.propulse import MultiScaleReconstructionLoss  # noqa: E402

DATA = ROOT / "lit_propulse" / "data"
STAGE_FILES = {"gds": "gds/gds.pt", "ew": "ew/ew.pt", "ewplus": "ewplus/ewplus.pt"}


def compare(files32: dict[str, str], files16: dict[str, str], num: int) -> list[tuple[str, float, float, float]]:
    """(model, max |HR32 - HR16|, L_rec float32, L_rec float16) for E_W and Pro-PULSE on ``num`` test faces."""
    dm = ToyFacesDataModule(hr_size=64, lr_size=8, num_train=16, num_test=num, batch_size=num)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    rec = MultiScaleReconstructionLoss()
    rows = []
    for name, enc, ew in (("E_W", "ew", None), ("Pro-PULSE", "ewplus", "ew")):
        outs = []
        for f in (files32, files16):
            up = ProPulseUpsampler.from_files(f["gds"], f[enc], f[ew] if ew else None)
            with torch.no_grad():
                out = up(batch.lr)
            outs.append((out, float(rec(out, batch.lr))))
        rows.append((name, float((outs[0][0].image - outs[1][0].image).abs().max()), outs[0][1], outs[1][1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished toy pipeline's directory (runs/toy_long)")
    p.add_argument("--num", type=int, default=64, help="toy test faces for the float16 check")
    p.add_argument("--tolerance", type=float, default=0.02, help="largest allowed |HR32 - HR16| (images in [-1, 1])")
    p.add_argument("--budget-mb", type=float, default=40.0, help="all shipped weights together, MB (1e6 bytes)")
    p.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    args = p.parse_args(argv)

    files32 = {k: str(Path(args.run_dir) / v) for k, v in STAGE_FILES.items()}
    for k, f in files32.items():
        if not os.path.isfile(f) or not os.path.isfile(f + ".done"):
            print(f"error: {f}: no finished {k} export (its .done marker is missing); run the pipeline to the end first", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        files16 = {}
        for k, f in files32.items():
            files16[k] = os.path.join(tmp, PACKAGED_EXPORTS[k])
            atomic_save(half_precision(safe_load(f, f"the {k} export of {args.run_dir}")), files16[k])
        rows = compare(files32, files16, args.num)
        print(f"float16 check on {args.num} toy test faces:")
        print("| model | max abs HR difference | L_rec float32 | L_rec float16 |\n|---|---|---|---|")
        for name, diff, r32, r16 in rows:
            print(f"| {name} | {diff:.2e} | {r32:.5f} | {r16:.5f} |")
        new = {PACKAGED_EXPORTS[k]: os.path.getsize(f) for k, f in files16.items()}
        others = {f.name: f.stat().st_size for f in DATA.iterdir() if f.is_file() and f.name not in new}
        total = (sum(new.values()) + sum(others.values())) / 1e6
        for name, size in sorted({**others, **new}.items()):
            print(f"  {name}: {size / 1e6:.2f} MB")
        print(f"all shipped weights: {total:.2f} MB (budget {args.budget_mb:.0f} MB)")
        worst = max(diff for _, diff, _, _ in rows)
        if worst > args.tolerance:
            print(f"error: float16 changes the output by {worst:.3g} > --tolerance {args.tolerance}; not shipped", file=sys.stderr)
            return 1
        if total > args.budget_mb:
            print(f"error: {total:.2f} MB > --budget-mb {args.budget_mb}; not shipped", file=sys.stderr)
            return 1
        if args.dry_run:
            print("dry run: nothing written")
            return 0
        for k, f in files16.items():
            atomic_save(safe_load(f, "the float16 copy"), DATA / PACKAGED_EXPORTS[k])
            print(f"wrote {DATA / PACKAGED_EXPORTS[k]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
