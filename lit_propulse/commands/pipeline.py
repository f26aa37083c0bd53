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
        links: {}                                   # config key -> an earlier stage (its export), or stage/<file>
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
A link's value is an earlier stage's name (its export) or ``<stage>/<file>``, another file that stage
writes in its run directory (``e2e_ew/ew_gds.pt``, the E2E stage's G_ds). A stage's ``config`` may be a list: the stage YAML, then deltas applied after it in order (an ablation
variant: ``config: [experiments/toy/ewplus.yaml, experiments/ablations/without_adv.yaml]``); its links
are checked against the first.

``--seeds 0,1,2`` runs the whole pipeline once per seed, in ``<out_dir>/seed<S>`` with
``--seed_everything=S`` for every stage (resumable per seed as above), then writes ``<out_dir>/seeds.md``
and ``seeds.json``: every evaluation stage's metrics as mean ± std over the seeds
(:mod:`lit_propulse.evaluation.seeds`). ``experiments/toy/table_ii.yaml`` is such a pipeline: the toy
Table I and Table II analogues with equal total steps for every variant (docs/toy-domain.md).
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
    config: str | list[str]  # a list: the stage's YAML then deltas on it (e.g. an ablation variant), in order
    export: str
    links: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    command: str = "fit"
    optional: bool = False  # never run here; used by later stages when its export is finished (module docstring)

    @property
    def configs(self) -> list[str]:
        return [self.config] if isinstance(self.config, str) else list(self.config)

    @property
    def config_text(self) -> str:
        return " + ".join(self.configs)


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
        if not stage.configs or not all(isinstance(c, str) and c for c in stage.configs):
            raise UserFacingError(f"{path}: stage {stage.name!r}: config must be a YAML path or a list of them, got {stage.config!r}")
        if stage.command not in ("fit", "test"):
            raise UserFacingError(f"{path}: stage {stage.name!r}: command must be 'fit' or 'test', got {stage.command!r}")
        earlier = {s.name for s in stages}
        bad = {k: v for k, v in stage.links.items() if link_stage(v) not in earlier or v.endswith("/")}
        if bad:
            raise UserFacingError(f"{path}: stage {stage.name!r} links to stages that do not come before it: {bad}")
        optional = {s.name for s in stages if s.optional}
        loose = [k for k, v in stage.links.items() if link_stage(v) in optional and not any(isinstance(p, tuple) for p in link_parts(k))]
        if loose:
            raise UserFacingError(
                f"{path}: stage {stage.name!r}: links to an optional stage must point into a named list item (e.g. "
                f"model.init_args.methods[pSp].init_args.encoder), dropped when that stage has no export; got {loose}"
            )
        stages.append(stage)
    return str(spec.get("out_dir", "runs/pipeline")), stages


def link_stage(value: str) -> str:
    """A link's stage: ``ew`` (its export) or ``e2e_ew/ew_gds.pt`` (another file in its run directory) -> ``ew`` / ``e2e_ew``."""
    return str(value).split("/", 1)[0]


def link_target(value: str, out_dir: str, exports: dict[str, str]) -> str:
    """The path a link value points to: the stage's export, or ``<out_dir>/<stage>/<file>``."""
    stage, _, rest = str(value).partition("/")
    return os.path.join(out_dir, stage, rest) if rest else exports[stage]


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


#: a stage's wall time, kept in its run directory for the reports of later runs that skip it
WALL_FILE = "pipeline_wall_time.txt"


def _write_wall(run_dir: str, wall: str) -> None:
    with open(os.path.join(run_dir, WALL_FILE), "w") as f:
        f.write(wall + "\n")


def _read_wall(run_dir: str) -> str:
    """The wall time the stage's last run took ("" when unknown, e.g. a run from before this file)."""
    try:
        with open(os.path.join(run_dir, WALL_FILE)) as f:
            return f.read().strip()
    except OSError:
        return ""


def _seed_list(text: str | None) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2]; distinct integers."""
    if text is None:
        return []
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserFacingError(f"--seeds {text!r}: expected distinct comma-separated integers, e.g. --seeds 0,1,2")
    return seeds


@register_command("pipeline", "run the Pro-PULSE stages in order (G_ds -> E_W -> E_W+), each export feeding the next")
def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m lit_propulse pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="pipeline YAML (e.g. experiments/toy/pipeline.yaml)")
    ap.add_argument("--force", action="store_true", help="re-run stages whose export already exists")
    ap.add_argument("--out_dir", default=None, help="override the pipeline's out_dir")
    ap.add_argument(
        "--seeds",
        default=None,
        metavar="S,S,...",
        help="run the whole pipeline once per seed, in <out_dir>/seed<S> with --seed_everything=S for every stage, then "
        "write <out_dir>/seeds.md and seeds.json: each evaluation stage's metrics as mean ± std over the seeds",
    )
    ap.add_argument("overrides", nargs="*", help="overrides passed to every stage (e.g. --trainer.max_steps=10)")
    args, extra = ap.parse_known_args(argv)
    seeds = _seed_list(args.seeds)
    out_dir, stages = read_pipeline(args.config)
    out_dir = args.out_dir or out_dir
    if not seeds:
        return _run_once(args.config, stages, out_dir, args.force, list(args.overrides), list(extra))
    if any(a.split("=")[0] == "--seed_everything" for a in [*args.overrides, *extra]):
        raise UserFacingError("--seeds sets --seed_everything for every stage; give one or the other")
    from lit_propulse.evaluation.seeds import summarise_reports, write_seed_summary

    for seed in seeds:
        print(f"[pipeline] seed {seed}: {os.path.join(out_dir, f'seed{seed}')}")
        code = _run_once(args.config, stages, os.path.join(out_dir, f"seed{seed}"), args.force, list(args.overrides), [*extra, f"--seed_everything={seed}"])
        if code != 0:
            return code
    summaries = {
        s.name: summarise_reports({seed: os.path.join(out_dir, f"seed{seed}", s.name, s.export) for seed in seeds}) for s in stages if s.command == "test"
    }
    if summaries:
        paths = write_seed_summary(out_dir, summaries, f"Pipeline {args.config}", [f"Per-seed runs: `{out_dir}/seed<S>/` (each with its report.md)."])
        print(f"[pipeline] seeds {','.join(map(str, seeds))} done: {paths['md']}")
    return 0


def _run_once(config: str, stages: list[Stage], out_dir: str, force: bool, overrides: list[str], extra: list[str]) -> int:
    """One run of the pipeline's stages into ``out_dir`` (``overrides``: fit stages only; ``extra``: every stage)."""
    from lit_propulse.cli import main

    exports = {s.name: os.path.join(out_dir, s.name, s.export) for s in stages}
    rows = []
    absent: set[str] = set()  # optional stages without a finished export
    found: set[str] = set()  # optional stages with one
    for stage in stages:
        run_dir = os.path.join(out_dir, stage.name)
        export = exports[stage.name]
        config_args = [a for c in stage.configs for a in ("--config", c)]
        if stage.optional:
            if is_done(export):
                found.add(stage.name)
                print(f"[pipeline] {stage.name}: optional, not run here; using its finished export {export}")
                rows.append((stage, "optional: export found", "-"))
            else:
                absent.add(stage.name)
                print(
                    f"[pipeline] {stage.name}: optional, not run here and no finished {export}: later stages run without it "
                    f"(train it with python -m lit_propulse {stage.command} {' '.join(config_args)} --trainer.default_root_dir {run_dir})"
                )
                rows.append((stage, "optional: not run, no export", "-"))
            continue
        plan = plan_stage(run_dir, export, stage.command, force)
        used = {link_stage(v) for v in stage.links.values()}
        newer = [v for v in used if v in found and os.path.isfile(export) and os.path.getmtime(exports[v]) > os.path.getmtime(export)]
        if plan.skip and newer:
            print(f"[pipeline] {stage.name}: {exports[newer[0]]} is newer than {export}: running it again")
            plan = plan_stage(run_dir, export, stage.command, force=True)
        if plan.skip:
            print(f"[pipeline] {stage.name}: {export} exists, skipped (--force to re-run)")
            ran = _read_wall(run_dir)  # a re-run (e.g. to summarise seeds) keeps the earlier run's figures
            rows.append((stage, f"skipped (exists; ran in {ran})" if ran else "skipped (exists)", _last_val(run_dir) if stage.command == "fit" else "-"))
            continue
        print(f"[pipeline] {stage.name}: python -m lit_propulse {stage.command} {' '.join(config_args)} (run dir {run_dir})")
        if stage.links:
            linked = {k: link_target(v, out_dir, exports) for k, v in stage.links.items() if link_stage(v) not in absent}
            dropped = [k for k, v in stage.links.items() if link_stage(v) in absent]
            config_args += ["--config", write_links(stage.configs[0], linked, os.path.join(run_dir, "pipeline_links.yaml"), dropped)]
        cli = [stage.command, *config_args, "--trainer.default_root_dir", run_dir]
        cli += list(stage.overrides) + ([] if stage.command == "test" else overrides) + extra
        if plan.ckpt_path:  # an interrupted stage (checkpoint, no finished marker) continues where it stopped
            print(f"[pipeline] {stage.name}: interrupted earlier, resuming from {plan.ckpt_path}")
            cli += ["--ckpt_path", plan.ckpt_path]
        t0 = time.time()
        code = main(cli)
        if code != 0:
            return code
        if not os.path.isfile(export):
            raise UserFacingError(
                f"stage {stage.name!r} finished but wrote no {export}: does {stage.config_text} have a StageExport callback (fit) or an EvaluationModule (test) writing {stage.export!r}?"
            )
        if stage.command == "fit":
            mark_done(export)  # the fit completed (also when resumed at its very end)
        wall = f"{time.time() - t0:.0f} s"
        _write_wall(run_dir, wall)
        rows.append((stage, wall, _last_val(run_dir) if stage.command == "fit" else "-"))
    report = os.path.join(out_dir, "report.md")
    os.makedirs(out_dir, exist_ok=True)
    with open(report, "w") as f:
        f.write(f"# Pro-PULSE pipeline: {config}\n\n| stage | config | export | checkpoint | wall time | last validation |\n|---|---|---|---|---|---|\n")
        for stage, wall, val in rows:
            ck = last_checkpoint(os.path.join(out_dir, stage.name))
            f.write(f"| {stage.name} | `{stage.config_text}` | `{exports[stage.name]}` | `{ck if os.path.isfile(ck) else '-'}` | {wall} | {val} |\n")
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
                f.write(f"\n---\n\n## Stage {stage.name}: {stage.config_text}\n\n" + body.replace("\n# ", "\n### ").replace("\n## ", "\n### ").lstrip("# "))
    print(f"[pipeline] done: {report}")
    return 0
