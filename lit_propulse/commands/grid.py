"""``python -m lit_propulse grid``: an ablation grid (Pro-PULSE Table II) — train every variant, evaluate
each, collect one row per variant.

Each variant is a YAML delta that names the stage it modifies in its ``variant_of:`` key
(``variant_of: ewplus``, as in ``experiments/ablations/``); it runs as ``fit --config <base-dir>/ewplus.yaml
--config <variant> --trainer.default_root_dir <out>/<variant>`` then ``test`` on its last checkpoint (the
stage modules score themselves: :mod:`lit_propulse.evaluation`), sequentially and resumably
(:func:`lit_propulse.runs.plan_stage`): a finished variant (export + ``.done`` marker) is not trained
again, an interrupted one resumes from ``checkpoints/last.ckpt``, a finished evaluation
(``test/report.json``) is reused. A variant that fails is reported in its row and the grid goes on.

    python -m lit_propulse grid --variants experiments/ablations/*.yaml --base-dir experiments/toy \
        --out runs/toy_ablations [--only ew_direct,ewplus_direct] [overrides for every run ...]

Writes ``<out>/table_ii.md`` and ``<out>/table_ii.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time

import yaml

from lit_propulse.cli import VARIANT_KEY, composed_view, register_command
from lit_propulse.core.errors import UserFacingError
from lit_propulse.runs import last_checkpoint, mark_done, plan_stage

#: report.json keys shown in Table II, with their column titles
COLUMNS: tuple[tuple[str, str], ...] = (
    ("l_ds", "L_DS ↓"),
    ("success_rate", "success @ ε ↑"),
    ("psnr", "PSNR ↑"),
    ("ssim", "SSIM ↑"),
    ("fid", "FID ↓"),
    ("niqe", "NIQE ↓"),
    ("attr_diff", "attr. diff ↓"),
    ("identity", "identity ↑"),
    ("lpips", "LPIPS ↓"),
)


def variant_base(path: str) -> str:
    """The stage a variant modifies, from its ``variant_of:`` key (``ewplus``): ``<base-dir>/ewplus.yaml``."""
    with open(path) as f:
        stage = (yaml.safe_load(f) or {}).get(VARIANT_KEY)
    if not isinstance(stage, str) or not stage or "/" in stage:
        raise UserFacingError(f"{path}: needs a '{VARIANT_KEY}: <stage>' key naming the stage YAML it modifies, e.g. '{VARIANT_KEY}: ewplus' (got {stage!r})")
    return stage if stage.endswith((".yaml", ".yml")) else f"{stage}.yaml"


def stage_export_name(config: str) -> str:
    """The StageExport file name of a stage YAML with its bases (``ewplus.pt``)."""
    for cb in reversed((composed_view(config).get("trainer") or {}).get("callbacks") or []):
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("StageExport"):
            return str((cb.get("init_args") or {}).get("path"))
    raise UserFacingError(f"{config}: has no lit_propulse.callbacks.export.StageExport callback; the grid needs the stage's export")


def _last_val_rec(run_dir: str) -> float | None:
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        vals = [r["val/loss/rec"] for r in csv.DictReader(f) if r.get("val/loss/rec")]
    return float(vals[-1]) if vals else None


def _call(main, argv: list[str]) -> tuple[int, str]:
    """Run one CLI command; a failure becomes (exit code, first line of its message), not an exception."""
    try:
        return main(argv), ""
    except SystemExit as e:
        return int(e.code or 0), ""
    except Exception as e:  # noqa: BLE001 - one variant's error must not stop the grid
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        cause = e.__cause__ or e.__context__
        while cause is not None and not lines:
            lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
            cause = cause.__cause__
        msg = next((ln for ln in lines if "needs" in ln or "must" in ln), lines[0] if lines else type(e).__name__)
        print(f"[grid] error: {msg}")
        return 1, msg


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


@register_command("grid", "train and evaluate a set of variant YAMLs (ablations, Table II), resumably")
def run(argv: list[str]) -> int:
    from lit_propulse.cli import main

    ap = argparse.ArgumentParser(prog="python -m lit_propulse grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", required=True, help="variant YAMLs (e.g. experiments/ablations/*.yaml)")
    ap.add_argument("--base-dir", required=True, help="directory of the base stage YAMLs (experiments or experiments/toy)")
    ap.add_argument("--out", required=True, help="output directory: one run directory per variant, table_ii.md/.csv")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run (default: all)")
    ap.add_argument("--force", action="store_true", help="retrain and re-evaluate finished variants")
    args, overrides = ap.parse_known_args(argv)
    variants = [v for v in args.variants if v.endswith((".yaml", ".yml"))]
    missing = [v for v in variants if not os.path.isfile(v)]
    if missing or not variants:
        raise UserFacingError(f"variant files not found: {missing or args.variants}")
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {os.path.splitext(os.path.basename(v))[0] for v in variants}
        if unknown:
            raise UserFacingError(f"--only names unknown variants {sorted(unknown)}")
        variants = [v for v in variants if os.path.splitext(os.path.basename(v))[0] in wanted]
    plan = []
    for v in variants:  # check every base before training anything
        base = os.path.join(args.base_dir, variant_base(v))
        if not os.path.isfile(base):
            raise UserFacingError(f"{v}: its base {base} does not exist (--base-dir {args.base_dir})")
        plan.append((os.path.splitext(os.path.basename(v))[0], v, base, stage_export_name(base)))

    rows = []
    for name, variant, base, export_name in plan:
        run_dir = os.path.join(args.out, name)
        export = os.path.join(run_dir, export_name)
        test_dir = os.path.join(run_dir, "test")
        configs = ["--config", base, "--config", variant]
        row = {"variant": name, "base": os.path.basename(base), "status": "ok"}
        t0 = time.time()
        fit_plan = plan_stage(run_dir, export, "fit", args.force)
        if not fit_plan.skip:
            resume = ["--ckpt_path", fit_plan.ckpt_path] if fit_plan.ckpt_path else []
            print(f"[grid] {name}: fit --config {base} --config {variant}" + (" (resuming)" if resume else ""))
            code, msg = _call(main, ["fit", *configs, "--trainer.default_root_dir", run_dir, *overrides, *resume])
            if code != 0 or not os.path.isfile(export):
                row["status"] = f"fit failed: {msg[:160]}" if msg else f"fit failed (exit {code}; see the message above)"
                rows.append(row)
                continue
            mark_done(export)
        else:
            print(f"[grid] {name}: trained already ({export})")
        report = os.path.join(test_dir, "report.json")
        if not plan_stage(test_dir, report, "test", args.force).skip:
            ckpt = last_checkpoint(run_dir)
            if not os.path.isfile(ckpt):
                row["status"] = f"no {ckpt} to evaluate (the base YAML's ModelCheckpoint needs save_last: true)"
                rows.append(row)
                continue
            print(f"[grid] {name}: test --ckpt_path {ckpt}")
            code, msg = _call(main, ["test", *configs, "--trainer.default_root_dir", test_dir, *overrides, "--ckpt_path", ckpt])
            if code != 0 or not os.path.isfile(report):
                row["status"] = f"test failed: {msg[:160]}" if msg else f"test failed (exit {code})"
                rows.append(row)
                continue
        with open(report) as f:
            rep = json.load(f)
        res = next(iter(rep["results"].values()))
        row.update({k: res.get(k) for k, _ in COLUMNS})
        row["val_rec"] = _last_val_rec(run_dir)
        row["fid_label"] = rep.get("labels", {}).get("fid", "FID")
        row["wall_s"] = round(time.time() - t0, 1)
        rows.append(row)

    os.makedirs(args.out, exist_ok=True)
    keys = ["variant", "base", "status", "val_rec", *[k for k, _ in COLUMNS]]
    with open(os.path.join(args.out, "table_ii.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fid_label = next((r["fid_label"] for r in rows if r.get("fid_label")), "FID")
    titles = ["variant", "base", "val L_rec ↓"] + [t.replace("FID", fid_label) for _, t in COLUMNS] + ["status"]
    lines = [
        "# Ablation grid (Table II layout)",
        "",
        f"Variants: {', '.join(r['variant'] for r in rows)}; metrics on the test split (`<variant>/test/report.md`).",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "---|" * len(titles),
    ]
    for r in rows:
        cells = [r["variant"], r["base"], _fmt(r.get("val_rec"))] + [_fmt(r.get(k)) for k, _ in COLUMNS] + [r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "table_ii.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"[grid] done: {os.path.join(args.out, 'table_ii.md')}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1
