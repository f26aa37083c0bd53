"""``python -m lit_propulse pipeline --config experiments/toy/pipeline.yaml``: the Pro-PULSE stages in
order (G_ds -> E_W -> E_W+), each stage's export feeding the next, exactly the ``fit`` commands a
cluster user runs one by one. A finished stage (its export and the export's ``.done`` marker exist) is skipped unless ``--force``;
an interrupted one (a ``checkpoints/last.ckpt`` but no marker) resumes from its last checkpoint. Writes
``<out_dir>/report.md`` with every stage's export, checkpoint, wall time and last validation loss,
followed by the evaluation stage's report (``command: test``: the metrics table and image grids).

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
      - name: eval
        command: test                               # python -m lit_propulse test (default: fit)
        config: experiments/toy/eval.yaml
        export: report.json                         # written by EvaluationModule into the run directory
        links: {model.init_args.methods.2.init_args.gds: gds}   # list items by index

Links are written into a copy of the stage's YAML (``<out_dir>/<name>/pipeline_config.yaml``), so any
key of the file can be linked, list items included.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import dataclass, field

import yaml

from lit_propulse.callbacks.export import done_marker
from lit_propulse.cli import register_command
from lit_propulse.core.errors import UserFacingError


@dataclass
class Stage:
    name: str
    config: str
    export: str
    links: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    command: str = "fit"


def read_pipeline(path: str) -> tuple[str, list[Stage]]:
    if not os.path.isfile(path):
        raise UserFacingError(f"{path}: pipeline file not found (e.g. experiments/toy/pipeline.yaml)")
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise UserFacingError(f"{path}: expected a mapping with 'out_dir' and a non-empty 'stages' list")
    stages = []
    for i, raw in enumerate(spec["stages"]):
        unknown = set(raw) - {"name", "config", "export", "links", "overrides", "command"}
        missing = {"name", "config", "export"} - set(raw)
        if unknown or missing:
            raise UserFacingError(f"{path}: stage {i}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        stage = Stage(**raw)
        if stage.command not in ("fit", "test"):
            raise UserFacingError(f"{path}: stage {stage.name!r}: command must be 'fit' or 'test', got {stage.command!r}")
        earlier = {s.name for s in stages}
        bad = {k: v for k, v in stage.links.items() if v not in earlier}
        if bad:
            raise UserFacingError(f"{path}: stage {stage.name!r} links to stages that do not come before it: {bad}")
        stages.append(stage)
    return str(spec.get("out_dir", "runs/pipeline")), stages


def linked_config(config: str, links: dict[str, str], out_path: str) -> str:
    """Copy ``config`` to ``out_path`` with each dotted key of ``links`` (integers index lists) set to its value."""
    with open(config) as f:
        cfg = yaml.safe_load(f)
    for key, value in links.items():
        node, parts = cfg, key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                idx = int(part)
            elif isinstance(node, dict) and (part in node or last):
                idx = part
            else:
                raise UserFacingError(f"{config}: pipeline link {key!r}: no {'.'.join(parts[:i + 1])!r} in the file")
            if last:
                node[idx] = value
            else:
                node = node[idx]
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True)
    return out_path


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
        finished = os.path.isfile(export) and (stage.command == "test" or os.path.isfile(done_marker(export)))
        if finished and not args.force:
            print(f"[pipeline] {stage.name}: {export} exists, skipped (--force to re-run)")
            rows.append((stage, "skipped (exists)", "-"))
            continue
        last = os.path.join(run_dir, "checkpoints", "last.ckpt")
        resume = stage.command == "fit" and not args.force and os.path.isfile(last)
        print(f"[pipeline] {stage.name}: python -m lit_propulse {stage.command} --config {stage.config} (run dir {run_dir})")
        config = stage.config
        if stage.links:
            config = linked_config(stage.config, {k: exports[v] for k, v in stage.links.items()}, os.path.join(run_dir, "pipeline_config.yaml"))
        cli = [stage.command, "--config", config, "--trainer.default_root_dir", run_dir, "--trainer.logger.init_args.save_dir", run_dir]
        cli += list(stage.overrides) + ([] if stage.command == "test" else list(args.overrides)) + list(extra)
        if resume:  # an interrupted stage (checkpoint, no finished marker) continues where it stopped
            print(f"[pipeline] {stage.name}: interrupted earlier, resuming from {last}")
            cli += ["--ckpt_path", last]
        t0 = time.time()
        code = main(cli)
        if code != 0:
            return code
        if stage.command == "fit" and os.path.isfile(export):
            with open(done_marker(export), "w") as f:  # the fit completed (also when resumed at its end)
                f.write("finished\n")
        if not os.path.isfile(export):
            raise UserFacingError(f"stage {stage.name!r} finished but wrote no {export}: does {stage.config} have a StageExport callback (fit) or an EvaluationModule (test) writing {stage.export!r}?")
        rows.append((stage, f"{time.time() - t0:.0f} s", _last_val(run_dir) if stage.command == "fit" else "-"))
    report = os.path.join(out_dir, "report.md")
    os.makedirs(out_dir, exist_ok=True)
    with open(report, "w") as f:
        f.write(f"# Pro-PULSE pipeline: {args.config}\n\n| stage | config | export | checkpoint | wall time | last validation |\n|---|---|---|---|---|---|\n")
        for stage, wall, val in rows:
            ck = os.path.join(out_dir, stage.name, "checkpoints", "last.ckpt")
            f.write(f"| {stage.name} | `{stage.config}` | `{exports[stage.name]}` | `{ck if os.path.isfile(ck) else '-'}` | {wall} | {val} |\n")
        f.write("\nValidation panels: `<stage>/images/val_latest.png` (columns in `<stage>/images/columns.txt`).\n")
        for stage in stages:
            sub = os.path.join(out_dir, stage.name, "report.md")
            if stage.command == "test" and os.path.isfile(sub):
                with open(sub) as g:
                    body = g.read()
                # the evaluation's images live in its run directory: relative links from out_dir
                body = body.replace("`grid.png`", f"![grid]({stage.name}/grid.png)\n\n`grid.png`").replace("`strip.png`", f"![strip]({stage.name}/strip.png)\n\n`strip.png`")
                f.write(f"\n---\n\n## Stage {stage.name}: {stage.config}\n\n" + body.replace("\n# ", "\n### ").replace("\n## ", "\n### ").lstrip("# "))
    print(f"[pipeline] done: {report}")
    return 0
