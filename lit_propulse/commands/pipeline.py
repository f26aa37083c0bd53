"""``python -m lit_propulse pipeline --config experiments/toy/pipeline.yaml``: the Pro-PULSE stages in
order (G_ds -> E_W -> E_W+), each stage's export feeding the next, exactly the ``fit`` commands a
cluster user runs one by one. A finished stage (its export and the export's ``.done`` marker exist) is
skipped unless ``--force``; an interrupted one (a ``checkpoints/last.ckpt`` but no marker) resumes from its
last checkpoint (:func:`lit_propulse.runs.plan_stage`). Writes ``<out_dir>/report.md`` with every stage's
export, checkpoint, wall time and last validation loss, followed by the evaluation stage's report
(``command: test``: the metrics table and image grids).

The pipeline file::

    out_dir: runs/toy
    stages:
      - name: gds                                   # run directory <out_dir>/<name> (trainer.default_root_dir)
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
        links: {model.init_args.methods[E_W].init_args.gds: gds}   # a list item by its name

A stage marked ``optional: true`` is never run by the pipeline (e.g. the toy pSp, which would lengthen
the quick start; not even with ``--force``): when its export is finished (the export and its ``.done``
marker, as ``fit --config <config> --trainer.default_root_dir <out_dir>/<name>`` leaves them), later
stages link it like any other, and a stage whose result is older than that export runs again; without
it, the list item each link to it points into is dropped (``methods[pSp]``: the evaluation runs without
that row). Links to an optional stage must therefore point into a named list item.

Each stage runs as ``<command> --config <config> --config <out_dir>/<name>/pipeline_links.yaml
--trainer.default_root_dir <out_dir>/<name>``: the links file sets only the linked keys (a list with a
linked item, ``methods[E_W]``, is written whole: the one item whose ``init_args.name`` is ``E_W`` changed).
The stage writes everything (export, checkpoints, logs) in its run directory whatever its logger, so a
stage may log to CSV, TensorBoard, W&B or nothing (``overrides: [--trainer.logger=false]``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from lit_propulse.cli import composed_view, register_command
from lit_propulse.core.errors import UserFacingError
from lit_propulse.runs import is_done, last_checkpoint, mark_done, plan_stage

#: a link key's parts: ``name`` (a mapping key) or ``[item]`` (the list item named ``item``)
_LINK_PART = re.compile(r"\[([^\]]+)\]|([^.\[\]]+)")


@dataclass
class Stage:
    name: str
    config: str
    export: str
    links: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    command: str = "fit"
    optional: bool = False  # never run here; used by later stages when its export is finished (module docstring)


def read_pipeline(path: str) -> tuple[str, list[Stage]]:
    if not os.path.isfile(path):
        raise UserFacingError(f"{path}: pipeline file not found (e.g. experiments/toy/pipeline.yaml)")
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list) or not spec["stages"]:
        raise UserFacingError(f"{path}: expected a mapping with 'out_dir' and a non-empty 'stages' list")
    stages = []
    for i, raw in enumerate(spec["stages"]):
        unknown = set(raw) - {"name", "config", "export", "links", "overrides", "command", "optional"}
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
        optional = {s.name for s in stages if s.optional}
        loose = [k for k, v in stage.links.items() if v in optional and not any(isinstance(p, tuple) for p in link_parts(k))]
        if loose:
            raise UserFacingError(
                f"{path}: stage {stage.name!r}: links to an optional stage must point into a named list item (e.g. "
                f"model.init_args.methods[pSp].init_args.encoder), dropped when that stage has no export; got {loose}"
            )
        stages.append(stage)
    return str(spec.get("out_dir", "runs/pipeline")), stages


def link_parts(key: str) -> list[str | tuple[str]]:
    """``model.init_args.methods[E_W].init_args.gds`` -> ``["model", "init_args", "methods", ("E_W",), "init_args", "gds"]``."""
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _LINK_PART.finditer(key):
        if key[pos : m.start()] not in ("", "."):
            break
        parts.append((m.group(1),) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if pos != len(key) or not parts or isinstance(parts[0], tuple):
        raise UserFacingError(f"pipeline link {key!r}: expected dotted keys, a list item by its name in brackets (model.init_args.methods[E_W].init_args.gds)")
    return parts


def _item_name(item) -> str | None:
    if isinstance(item, dict):
        args = item.get("init_args") if isinstance(item.get("init_args"), dict) else item
        return args.get("name")
    return None


def link_delta(config: str, links: dict[str, str], drop: Sequence[str] = ()) -> dict:
    """The config delta that sets each key of ``links`` to its value in ``config`` (with its bases),
    and removes the list item each key of ``drop`` points into.

    Mapping keys go into the delta alone (the parser merges them into the stage's config); a key inside
    a list names the item (``methods[E_W]``: the item whose ``init_args.name`` is ``E_W``) and the whole
    list, as ``config`` has it, goes into the delta with that item changed, or without it for a key of
    ``drop`` (a list is replaced as a whole). Every linked key must already be in ``config`` or a base of it."""
    view = composed_view(config)
    delta: dict = {}
    dropped: set[str] = set()
    for key, value, dropping in [*((k, v, False) for k, v in links.items()), *((k, None, True) for k in drop)]:
        parts = link_parts(key)
        if dropping and not any(isinstance(p, tuple) for p in parts):
            raise UserFacingError(f"{config}: pipeline link {key!r}: only a list item can be dropped (name it in brackets, e.g. methods[pSp])")
        node, out = view, delta  # out: the delta's node at the same place; None once inside a copied list
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = f"{config}: pipeline link {key!r}"
            if isinstance(part, tuple):
                if not isinstance(node, list):
                    raise UserFacingError(f"{where}: {part[0]!r} in brackets names a list item, but that key is not a list")
                hits = [j for j, item in enumerate(node) if _item_name(item) == part[0]]
                if dropping and len(hits) == 1:
                    node.pop(hits[0])
                    dropped.add(part[0])
                    break
                if dropping and not hits and part[0] in dropped:
                    break  # a second key into an item dropped already
                if len(hits) != 1:
                    names = [_item_name(item) for item in node]
                    raise UserFacingError(f"{where}: {'no' if not hits else 'several'} list items named {part[0]!r} (names: {names})")
                if last:
                    raise UserFacingError(f"{where}: link a key inside the item, e.g. {key}.init_args.<key>")
                node = node[hits[0]]
                continue
            if isinstance(node, list):
                raise UserFacingError(f"{where}: {'.'.join(map(str, parts[:i]))} is a list: name an item in brackets, e.g. [E_W]")
            if not isinstance(node, dict) or (part not in node and not last):
                raise UserFacingError(f"{where}: no {'.'.join(p if isinstance(p, str) else f'[{p[0]}]' for p in parts[: i + 1])!r} in the file or its bases")
            if last:
                node[part] = value
                if out is not None:
                    out[part] = value
            elif out is not None and isinstance(node[part], list):
                out[part] = node[part] = copy.deepcopy(node[part])  # the delta holds the whole list; edits below land in it
                out = None
                node = node[part]
            else:
                node = node[part]
                if out is not None:
                    out = out.setdefault(part, {})
    return delta


def write_links(config: str, links: dict[str, str], out_path: str, drop: Sequence[str] = ()) -> str:
    """Write :func:`link_delta` of ``config`` to ``out_path`` (a config file applied after ``config``)."""
    delta = link_delta(config, links, drop)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(f"# pipeline links for {config}: the earlier stages' exports of this pipeline run\n")
        yaml.safe_dump(delta, f, sort_keys=False, allow_unicode=True)
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
    absent: set[str] = set()  # optional stages without a finished export
    found: set[str] = set()  # optional stages with one
    for stage in stages:
        run_dir = os.path.join(out_dir, stage.name)
        export = exports[stage.name]
        if stage.optional:
            if is_done(export):
                found.add(stage.name)
                print(f"[pipeline] {stage.name}: optional, not run here; using its finished export {export}")
                rows.append((stage, "optional: export found", "-"))
            else:
                absent.add(stage.name)
                print(
                    f"[pipeline] {stage.name}: optional, not run here and no finished {export}: later stages run without it "
                    f"(train it with python -m lit_propulse {stage.command} --config {stage.config} --trainer.default_root_dir {run_dir})"
                )
                rows.append((stage, "optional: not run, no export", "-"))
            continue
        plan = plan_stage(run_dir, export, stage.command, args.force)
        newer = [v for v in stage.links.values() if v in found and os.path.isfile(export) and os.path.getmtime(exports[v]) > os.path.getmtime(export)]
        if plan.skip and newer:
            print(f"[pipeline] {stage.name}: {exports[newer[0]]} is newer than {export}: running it again")
            plan = plan_stage(run_dir, export, stage.command, force=True)
        if plan.skip:
            print(f"[pipeline] {stage.name}: {export} exists, skipped (--force to re-run)")
            rows.append((stage, "skipped (exists)", "-"))
            continue
        print(f"[pipeline] {stage.name}: python -m lit_propulse {stage.command} --config {stage.config} (run dir {run_dir})")
        configs = ["--config", stage.config]
        if stage.links:
            linked = {k: exports[v] for k, v in stage.links.items() if v not in absent}
            dropped = [k for k, v in stage.links.items() if v in absent]
            links = write_links(stage.config, linked, os.path.join(run_dir, "pipeline_links.yaml"), dropped)
            configs += ["--config", links]
        cli = [stage.command, *configs, "--trainer.default_root_dir", run_dir]
        cli += list(stage.overrides) + ([] if stage.command == "test" else list(args.overrides)) + list(extra)
        if plan.ckpt_path:  # an interrupted stage (checkpoint, no finished marker) continues where it stopped
            print(f"[pipeline] {stage.name}: interrupted earlier, resuming from {plan.ckpt_path}")
            cli += ["--ckpt_path", plan.ckpt_path]
        t0 = time.time()
        code = main(cli)
        if code != 0:
            return code
        if not os.path.isfile(export):
            raise UserFacingError(
                f"stage {stage.name!r} finished but wrote no {export}: does {stage.config} have a StageExport callback (fit) or an EvaluationModule (test) writing {stage.export!r}?"
            )
        if stage.command == "fit":
            mark_done(export)  # the fit completed (also when resumed at its very end)
        rows.append((stage, f"{time.time() - t0:.0f} s", _last_val(run_dir) if stage.command == "fit" else "-"))
    report = os.path.join(out_dir, "report.md")
    os.makedirs(out_dir, exist_ok=True)
    with open(report, "w") as f:
        f.write(f"# Pro-PULSE pipeline: {args.config}\n\n| stage | config | export | checkpoint | wall time | last validation |\n|---|---|---|---|---|---|\n")
        for stage, wall, val in rows:
            ck = last_checkpoint(os.path.join(out_dir, stage.name))
            f.write(f"| {stage.name} | `{stage.config}` | `{exports[stage.name]}` | `{ck if os.path.isfile(ck) else '-'}` | {wall} | {val} |\n")
        f.write("\nValidation panels: `<stage>/images/val_latest.png` (columns in `<stage>/images/columns.txt`).\n")
        for stage in stages:
            sub = os.path.join(out_dir, stage.name, "report.md")
            if stage.command == "test" and os.path.isfile(sub):
                with open(sub) as g:
                    body = g.read()
                # the evaluation's images live in its run directory: relative links from out_dir
                body = body.replace("`grid.png`", f"![grid]({stage.name}/grid.png)\n\n`grid.png`").replace(
                    "`strip.png`", f"![strip]({stage.name}/strip.png)\n\n`strip.png`"
                )
                f.write(f"\n---\n\n## Stage {stage.name}: {stage.config}\n\n" + body.replace("\n# ", "\n### ").replace("\n## ", "\n### ").lstrip("# "))
    print(f"[pipeline] done: {report}")
    return 0
