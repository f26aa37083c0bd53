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
        --out runs/toy_ablations [--only ew_direct,ewplus_direct] [--require fid,niqe] [overrides for every run ...]

Writes ``<out>/table_ii.md`` and ``<out>/table_ii.csv``. A row whose report lacks one of Table II's
columns FID and NIQE (:data:`TABLE_II_METRICS`; a metric the suite skipped, e.g. its weights file is not
there) is flagged in both, with the reason (:func:`lit_propulse.evaluation.report.missing_metrics`).
``--require fid,niqe`` makes such a row an error: the grid writes the table so far and stops with one
line naming the variant, the metric and why, before it trains the next variant.
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

#: the metrics Table II reports: a row without one of them is flagged in the table
TABLE_II_METRICS: tuple[str, ...] = ("fid", "niqe")


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


def _metric_keys(text: str | None) -> tuple[str, ...]:
    """``--require fid,niqe`` -> ("fid", "niqe"); a name that is not a column of the table is an error."""
    if not text:
        return ()
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in dict(COLUMNS)]
    if unknown or not keys:
        raise UserFacingError(f"--require {text!r}: unknown metric(s) {unknown}; choose from {', '.join(k for k, _ in COLUMNS)}")
    return keys


def _missing_note(missing: dict[str, str]) -> str:
    """{"fid": "why"} -> "fid (why)"; one line."""
    return "; ".join(f"{k} ({' '.join(str(why).split())})" for k, why in missing.items())


@register_command("grid", "train and evaluate a set of variant YAMLs (ablations, Table II), resumably")
def run(argv: list[str]) -> int:
    from lit_propulse.cli import main
    from lit_propulse.evaluation.report import missing_metrics  # here: every CLI call imports the commands

    ap = argparse.ArgumentParser(prog="python -m lit_propulse grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", required=True, help="variant YAMLs (e.g. experiments/ablations/*.yaml)")
    ap.add_argument("--base-dir", required=True, help="directory of the base stage YAMLs (experiments or experiments/toy)")
    ap.add_argument("--out", required=True, help="output directory: one run directory per variant, table_ii.md/.csv")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run (default: all)")
    ap.add_argument("--force", action="store_true", help="retrain and re-evaluate finished variants")
    ap.add_argument(
        "--require",
        default=None,
        metavar="METRICS",
        help="comma-separated report metrics every row must have, e.g. fid,niqe (Table II's columns): the grid stops "
        "with an error at the first evaluated variant without one (default: such rows are only flagged)",
    )
    args, overrides = ap.parse_known_args(argv)
    required = _metric_keys(args.require)
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
        missing = missing_metrics(rep, tuple(dict.fromkeys((*TABLE_II_METRICS, *required))))
        row["missing"] = _missing_note(missing)
        rows.append(row)
        if missing:
            print(f"[grid] {name}: no {row['missing']} in {report}")
        lacking = {k: why for k, why in missing.items() if k in required}
        if lacking:
            _write_table(args.out, rows)
            raise UserFacingError(
                f"grid --require {','.join(required)}: variant {name} has no {_missing_note(lacking)} in {report}; "
                f"the rows so far are in {os.path.join(args.out, 'table_ii.md')}"
            )

    _write_table(args.out, rows)
    print(f"[grid] done: {os.path.join(args.out, 'table_ii.md')}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _write_table(out: str, rows: list[dict]) -> None:
    """``<out>/table_ii.csv`` and ``<out>/table_ii.md``: one row per variant; a row without one of
    :data:`TABLE_II_METRICS` (or a required metric) names it, with the reason, in its "missing" cell."""
    os.makedirs(out, exist_ok=True)
    keys = ["variant", "base", "status", "val_rec", *[k for k, _ in COLUMNS], "missing"]
    with open(os.path.join(out, "table_ii.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fid_label = next((r["fid_label"] for r in rows if r.get("fid_label")), "FID")
    titles = ["variant", "base", "val L_rec ↓"] + [t.replace("FID", fid_label) for _, t in COLUMNS] + ["status", "missing metrics"]
    lines = [
        "# Ablation grid (Table II layout)",
        "",
        f"Variants: {', '.join(r['variant'] for r in rows)}; metrics on the test split (`<variant>/test/report.md`).",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "---|" * len(titles),
    ]
    for r in rows:
        cells = [r["variant"], r["base"], _fmt(r.get("val_rec"))] + [_fmt(r.get(k)) for k, _ in COLUMNS] + [r["status"], r.get("missing") or ""]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    flagged = [r["variant"] for r in rows if r.get("missing")]
    if flagged:
        lines += [
            "",
            f"**Rows with missing metrics:** {', '.join(flagged)} (the last column says which and why). "
            f"A row without {' or '.join(k.upper() for k in TABLE_II_METRICS)} cannot be compared with Table II.",
        ]
    with open(os.path.join(out, "table_ii.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
