"""``python -m lit_propulse pipeline --config experiments/toy/pipeline.yaml``: the Pro-PULSE stages in
order (G_ds -> E_W -> E_W+), each stage's export feeding the next, exactly the ``fit`` commands a
cluster user runs one by one. A stage whose export exists is skipped unless ``--force``. Writes
``<out_dir>/report.md`` with every stage's export, checkpoint, wall time and last validation loss.

The pipeline file::

    out_dir: runs/toy
    stages:
      - name: gds                                   # run directory <out_dir>/<name>
        config: experiments/toy/gds.yaml
        export: gds.pt                              # written by the stage's StageExport callback
        links: {}                                   # config key -> name of an earlier stage (its export)
        overrides: []                               # extra command-line overrides
      - name: ew
        config: experiments/toy/ew.yaml
        export: ew.pt
        links: {model.init_args.gds.init_args.path: gds}
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import dataclass, field

import yaml

from lit_propulse.cli import register_command
from lit_propulse.errors import UserFacingError


@dataclass
class Stage:
    name: str
    config: str
    export: str
    links: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


def read_pipeline(path: str) -> tuple[str, list[Stage]]:
    if not os.path.isfile(path):
        raise UserFacingError(f"{path}: pipeline file not found (e.g. experiments/toy/pipeline.yaml)")
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise UserFacingError(f"{path}: expected a mapping with 'out_dir' and a non-empty 'stages' list")
    stages = []
    for i, raw in enumerate(spec["stages"]):
        unknown = set(raw) - {"name", "config", "export", "links", "overrides"}
        missing = {"name", "config", "export"} - set(raw)
        if unknown or missing:
            raise UserFacingError(f"{path}: stage {i}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        stage = Stage(**raw)
        earlier = {s.name for s in stages}
        bad = {k: v for k, v in stage.links.items() if v not in earlier}
        if bad:
            raise UserFacingError(f"{path}: stage {stage.name!r} links to stages that do not come before it: {bad}")
        stages.append(stage)
    return str(spec.get("out_dir", "runs/pipeline")), stages


def _last_val(run_dir: str) -> str:
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return "-"
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for key in ("val/loss/rec", "val/loss/gds/total"):
        vals = [r[key] for r in rows if r.get(key)]
        if vals:
            return f"{key} = {float(vals[-1]):.4g}"
    return "-"


@register_command("pipeline", "run the Pro-PULSE stages in order (G_ds -> E_W -> E_W+), each export feeding the next")
def run(argv: list[str]) -> int:
    from lit_propulse.cli import main

    ap = argparse.ArgumentParser(prog="python -m lit_propulse pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="pipeline YAML (e.g. experiments/toy/pipeline.yaml)")
    ap.add_argument("--force", action="store_true", help="re-run stages whose export already exists")
    ap.add_argument("--out_dir", default=None, help="override the pipeline's out_dir")
    ap.add_argument("overrides", nargs="*", help="overrides passed to every stage (e.g. --trainer.max_steps=10)")
    args, extra = ap.parse_known_args(argv)
    out_dir, stages = read_pipeline(args.config)
    out_dir = args.out_dir or out_dir
    exports = {s.name: os.path.join(out_dir, s.name, s.export) for s in stages}
    rows = []
    for stage in stages:
        run_dir = os.path.join(out_dir, stage.name)
        export = exports[stage.name]
        if os.path.isfile(export) and not args.force:
            print(f"[pipeline] {stage.name}: {export} exists, skipped (--force to re-run)")
            rows.append((stage, "skipped (exists)", "-"))
            continue
        print(f"[pipeline] {stage.name}: python -m lit_propulse fit --config {stage.config} (run dir {run_dir})")
        cli = ["fit", "--config", stage.config, "--trainer.default_root_dir", run_dir, "--trainer.logger.init_args.save_dir", run_dir]
        for key, source in stage.links.items():
            cli += [f"--{key}", exports[source]]
        cli += list(stage.overrides) + list(args.overrides) + list(extra)
        t0 = time.time()
        code = main(cli)
        if code != 0:
            return code
        if not os.path.isfile(export):
            raise UserFacingError(f"stage {stage.name!r} finished but wrote no {export}: does {stage.config} have a StageExport callback with path {stage.export!r}?")
        rows.append((stage, f"{time.time() - t0:.0f} s", _last_val(run_dir)))
    report = os.path.join(out_dir, "report.md")
    os.makedirs(out_dir, exist_ok=True)
    with open(report, "w") as f:
        f.write(f"# Pro-PULSE pipeline: {args.config}\n\n| stage | config | export | checkpoint | wall time | last validation |\n|---|---|---|---|---|---|\n")
        for stage, wall, val in rows:
            ck = os.path.join(out_dir, stage.name, "checkpoints", "last.ckpt")
            f.write(f"| {stage.name} | `{stage.config}` | `{exports[stage.name]}` | `{ck if os.path.isfile(ck) else '-'}` | {wall} | {val} |\n")
        f.write("\nValidation panels: `<stage>/images/val_latest.png` (columns in `<stage>/images/columns.txt`).\n")
    print(f"[pipeline] done: {report}")
    return 0
