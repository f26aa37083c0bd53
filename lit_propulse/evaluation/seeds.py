"""Evaluation reports of one experiment run with several seeds, summarised: every metric as mean ± std
over the seeds (``python -m lit_propulse pipeline --seeds 0,1,2``; the paper reports one run, the toy
domain's claims are checked with seeds, issue #15).

:func:`summarise_reports` reads the per-seed ``report.json`` files (:func:`lit_propulse.evaluation.report.write_report`)
of one evaluation stage; :func:`write_seed_summary` writes ``seeds.json`` and ``seeds.md``. The standard
deviation is the sample one (n − 1); with one seed it is not defined and shown as "—".
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["METRICS", "summarise_reports", "write_seed_summary"]

#: report keys summarised over seeds, with their column titles (Table I/II's metrics, then the rest)
METRICS: tuple[tuple[str, str], ...] = (
    ("fid", "FID ↓"),
    ("niqe", "NIQE ↓"),
    ("psnr", "PSNR ↑"),
    ("ssim", "SSIM ↑"),
    ("l_ds", "L_DS ↓"),
    ("success_rate", "success @ ε ↑"),
    ("attr_diff", "attr. diff ↓"),
    ("lpips", "LPIPS ↓"),
    ("identity", "identity ↑"),
    ("runtime_s", "runtime / image (s) ↓"),
)


def _value(result: dict[str, Any], key: str) -> float | None:
    v = result.get("runtime", {}).get("batch1_mean_s") if key == "runtime_s" else result.get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def summarise_reports(reports: dict[int, dict[str, Any] | str | os.PathLike]) -> dict[str, Any]:
    """{seed: report (dict or report.json path)} -> ``{"seeds": [...], "num_images": n, "labels": {...},
    "methods": {method: {metric: {"mean", "std", "n", "values": {seed: value}}}}}``.

    A method or metric missing from some seeds' reports is summarised over the seeds that have it (its
    ``n`` says how many); every report must describe the same test set (``num_images``)."""
    if not reports:
        raise ValueError("no reports to summarise")
    loaded = {}
    for seed, rep in sorted(reports.items()):
        if not isinstance(rep, dict):
            with open(rep) as f:
                rep = json.load(f)
        loaded[int(seed)] = rep
    sizes = {rep.get("num_images") for rep in loaded.values()}
    if len(sizes) != 1:
        raise ValueError(f"the seeds' reports have different test sets: num_images {sorted(map(str, sizes))}")
    methods: dict[str, dict[str, Any]] = {}
    for seed, rep in loaded.items():
        for name, result in (rep.get("results") or {}).items():
            for key, _ in METRICS:
                v = _value(result, key)
                if v is not None:
                    methods.setdefault(name, {}).setdefault(key, {})[seed] = v
    out_methods = {}
    for name, metrics in methods.items():
        out_methods[name] = {}
        for key, values in metrics.items():
            vals = list(values.values())
            out_methods[name][key] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "n": len(vals),
                "values": values,
            }
    first = next(iter(loaded.values()))
    labels = first.get("labels") or {}
    return {
        "seeds": list(loaded),
        "num_images": first.get("num_images"),
        "title": first.get("title", ""),
        "labels": labels if isinstance(labels, dict) else {},
        "methods": out_methods,
    }


def _cell(stats: dict[str, Any] | None, seeds: int) -> str:
    if not stats:
        return "—"
    mean, std, n = stats["mean"], stats["std"], stats["n"]
    digits = 4 if abs(mean) < 1000 else 6
    text = f"{mean:.{digits}g}" + ("" if std is None else f" ± {std:.2g}")
    return text + ("" if n == seeds else f" (n = {n})")


def write_seed_summary(out_dir: str, summaries: dict[str, dict[str, Any]], title: str, notes: Sequence[str] = ()) -> dict[str, str]:
    """Write ``<out_dir>/seeds.json`` (``{stage: summary}``) and ``seeds.md`` (one mean ± std table per
    evaluation stage); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "seeds.json"), "md": os.path.join(out_dir, "seeds.md")}
    with open(paths["json"], "w") as f:
        json.dump(summaries, f, indent=2)
    lines = [f"# {title}: mean ± std over seeds", ""]
    lines += list(notes) + ([""] if notes else [])
    for stage, summary in summaries.items():
        seeds = summary["seeds"]
        present = [(k, t) for k, t in METRICS if any(k in m for m in summary["methods"].values())]
        fid_label = summary["labels"].get("fid", "FID")
        lines += [
            f"## {stage}: {summary['title']}",
            "",
            f"Seeds {', '.join(map(str, seeds))}; {summary['num_images']} test images per seed; mean ± sample std (n − 1).",
            "",
            "| method | " + " | ".join(t.replace("FID", fid_label) for _, t in present) + " |",
            "|---" * (len(present) + 1) + "|",
        ]
        for name, metrics in summary["methods"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(k), len(seeds)) for k, _ in present) + " |")
        lines.append("")
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines))
    return paths
