"""PULSE's files: the groups CSV read for per-group success rates (Menon et al., CVPR 2020, Fig. 8),
and what the ``pulse`` command writes per search (``results.csv``, ``groups.csv``, per-image and
summary reports), with the name helpers that tie an output to its input image."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_propulse.core.images import IMAGE_EXTENSIONS
from lit_propulse.core.reports import write_json

if TYPE_CHECKING:
    from lit_propulse.pulse.metrics import GroupRate

__all__ = [
    "RESULT_COLUMNS",
    "SearchRow",
    "image_key",
    "image_report",
    "jsonable",
    "read_groups_csv",
    "sample_name",
    "summarize",
    "write_groups_csv",
    "write_image_reports",
    "write_results_csv",
]

#: the columns of results.csv, in order
RESULT_COLUMNS = ("name", "sample", "loss", "loss_clean", "success", "best_step", "steps", "time_s", "seed", "file")


# ----------------------------------------------------------------------------------------------
# Names


def image_key(name: str) -> str:
    """Match "a.png", "a" and "dir/a.png" alike: the file name without an image extension
    (:data:`~lit_propulse.core.images.IMAGE_EXTENSIONS`, any case)."""
    base = Path(str(name).strip()).name
    suffix = Path(base).suffix
    return base[: -len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else base


def sample_name(name: str, sample: int) -> str:
    """``<name>_<sample>``: the stem of sample ``sample``'s output for input image ``name``."""
    return f"{name}_{sample}"


# ----------------------------------------------------------------------------------------------
# Reading


def read_groups_csv(path: str | os.PathLike) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Read ``name,<group column>,...`` (header row first; labels are free text, e.g. FairFace's
    ``race``, ``gender``, ``age``). Returns (group columns, image key -> {column: label}).
    Image names match with or without their extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"groups file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"groups file {str(path)!r} needs a header 'name,<group column>,...' with at least one group column")
    columns = rows[0][1:]
    table: dict[str, dict[str, str]] = {}
    for ln, r in enumerate(rows[1:], start=2):
        if len(r) != len(rows[0]):
            raise ValueError(f"{path}:{ln}: expected {len(rows[0])} columns like the header, got {len(r)}")
        table[image_key(r[0])] = dict(zip(columns, r[1:]))
    return columns, table


# ----------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class SearchRow:
    """One (image, sample) search as the ``pulse`` command reports it (a row of results.csv).

    name: the input's file stem. sample: 0-based sample index (Sec. 4.4). loss: best L_DS against
    the LR searched against; loss_clean: the same image against the clean LR (= loss without
    degradation, Sec. 5). success: loss <= ε. best_step: 0-based step of the best iterate.
    steps: steps run. time_s: the batch's wall time over its size. seed: the initialisation seed.
    file: the output file name. lr_size: the LR's side. input: the input file path.
    """

    name: str
    sample: int
    loss: float
    loss_clean: float
    success: bool
    best_step: int
    steps: int
    time_s: float
    seed: int
    file: str
    lr_size: int
    input: str


def write_results_csv(path: str | os.PathLike, rows: Sequence[SearchRow]) -> None:
    """``results.csv``: :data:`RESULT_COLUMNS`, one row per search, sorted by (name, sample)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RESULT_COLUMNS)
        for r in sorted(rows, key=lambda r: (r.name, r.sample)):
            w.writerow([r.name, r.sample, f"{r.loss:.6g}", f"{r.loss_clean:.6g}", r.success, r.best_step, r.steps, f"{r.time_s:.3f}", r.seed, r.file])


def write_groups_csv(path: str | os.PathLike, rates: Sequence[GroupRate]) -> None:
    """``groups.csv``: column, label, searches, successes, rate (one row per group label)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["column", "label", "searches", "successes", "rate"])
        for g in rates:
            w.writerow([g.column, g.label, g.n, g.successes, f"{g.rate:.4f}"])


def image_report(rows: Sequence[SearchRow], note: str, degraded_vs_clean: float, eps: float, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report of one input image from its samples' rows. ``degraded_vs_clean``: L_DS
    between the degraded and the clean LR (same units as ``loss``; 0 = no degradation)."""
    rows = sorted(rows, key=lambda r: r.sample)
    first = rows[0]
    return {
        "name": first.name,
        "input": first.input,
        "lr_size": first.lr_size,
        "note": note,
        "lr_file": f"lr/{first.name}.png",
        "eps": eps,
        "steps": first.steps,
        "degraded_vs_clean": degraded_vs_clean,
        "success_any": any(r.success for r in rows),
        "samples": [
            {
                "sample": r.sample,
                "file": r.file,
                "loss": r.loss,
                "loss_clean": r.loss_clean,
                "success": r.success,
                "best_step": r.best_step,
                "time_s": r.time_s,
                "seed": r.seed,
            }
            for r in rows
        ],
        "settings": dict(settings),
    }


def write_image_reports(
    folder: Path,
    rows: Sequence[SearchRow],
    notes: Mapping[str, str],
    degraded_vs_clean: Mapping[str, float],
    eps: float,
    settings: Mapping[str, Any],
) -> None:
    """``<folder>/<name>.json``: the :func:`image_report` of every input image in ``rows``."""
    by_name: dict[str, list[SearchRow]] = {}
    for r in rows:
        by_name.setdefault(r.name, []).append(r)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rs in by_name.items():
        report = image_report(rs, notes.get(name, ""), degraded_vs_clean[name], eps, settings)
        write_json(folder / f"{name}.json", report)


def summarize(rows: Sequence[SearchRow], degraded_vs_clean: Mapping[str, float]) -> dict[str, Any]:
    """Success rate (Sec. 6) and mean losses over every search; ``failed`` names the searches
    (:func:`sample_name`) that missed ε. ``degraded_vs_clean``: per image name, as in
    :func:`image_report`."""
    if not rows:
        raise ValueError("summarize needs at least one search")
    n, ok = len(rows), sum(r.success for r in rows)
    return {
        "success_rate": ok / n,
        "successes": ok,
        "searches": n,
        "images": len({r.name for r in rows}),
        "failed": [sample_name(r.name, r.sample) for r in rows if not r.success],
        "mean_loss": sum(r.loss for r in rows) / n,
        "mean_loss_clean": sum(r.loss_clean for r in rows) / n,
        "mean_degraded_vs_clean": sum(degraded_vs_clean[r.name] for r in rows) / n,
    }


def jsonable(x: Any) -> Any:
    """``x`` (e.g. ``dataclasses.asdict`` of a config) with only JSON values: non-finite floats as
    strings, callables (a custom optimizer factory) by their name, anything else by its repr."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return getattr(x, "__name__", repr(x))
