"""The evaluation's report (Pro-PULSE Table I layout, Fig. 8b/8a tables, Fig. 7 strip): ``report.json``,
``report.md``, ``grid.png`` (LR | methods | side outputs | GT) and ``strip.png`` (the multi-resolution
strip), written by :func:`write_report`; :func:`missing_metrics` says which required metrics a report lacks
and why (what the Table II grid checks)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from lit_propulse.core.images import rows_grid, save_image
from lit_propulse.evaluation.methods import FLOPS_CONVENTION

__all__ = ["missing_metrics", "write_report"]


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _flops(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    for unit, f in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if v >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g}"


def _ms(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v * 1e3:.3g} ms"


def missing_metrics(report: dict[str, Any] | str | os.PathLike, required: Sequence[str] = ("fid", "niqe")) -> dict[str, str]:
    """Which of ``required`` metric keys (e.g. Table I/II's "fid", "niqe") a report (its dict, or the
    path of its ``report.json``) does not hold for every method, each with the reason: the suite's
    skip reason when it skipped the metric, else "not in the report". {} = all there."""
    if not isinstance(report, dict):
        with open(report) as f:
            report = json.load(f)
    skipped = report.get("skipped") or {}
    out: dict[str, str] = {}
    for key in required:
        absent = [n for n, r in (report.get("results") or {}).items() if not isinstance(r.get(key), (int, float)) or not math.isfinite(r[key])]
        if absent or not report.get("results"):
            out[key] = skipped.get(key, f"not in the report for {absent or 'any method'}")
    return out


def write_report(
    out_dir: str,
    title: str,
    results: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    labels: dict[str, str],
    num_images: int,
    grid: dict[str, Any] | None = None,
    device: str = "cpu",
    world_size: int = 1,
    eps: float | None = None,
) -> dict[str, str]:
    """Write report.json, report.md (Table I layout, Fig. 8b/8a tables, skipped metrics with reasons),
    grid.png and strip.png into ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "report.json"), "md": os.path.join(out_dir, "report.md")}
    payload = {
        "title": title,
        "num_images": num_images,
        "device": device,
        "world_size": world_size,
        "eps": eps,
        "results": results,
        "skipped": skipped,
        "labels": labels,
    }
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=2, default=float)
    fid_label = labels.get("fid", "FID")
    eps_note = "" if eps is None else f"; success: L_DS ≤ ε = {eps:g}"
    lines = [f"# {title}", "", f"{num_images} test images, each once (device {device}, {world_size} process(es){eps_note}).", ""]
    sizes = sorted({int(r["runtime"].get("batch_size", 0)) for r in results.values()} - {0})
    batch = "/".join(str(b) for b in sizes) or "—"
    lines += [
        "## Table I layout",
        "",
        f"| method | {fid_label} ↓ | NIQE ↓ | runtime / image, batch 1 (mean / median) | throughput, batch {batch} | FLOPs / image (2×MACs) | MACs / image "
        "| PSNR ↑ | SSIM ↑ | LPIPS ↓ | identity ↑ | L_DS ↓ | success @ ε ↑ | attr. diff ↓ |",
        "|---" * 14 + "|",
    ]
    for name, r in results.items():
        rt = r["runtime"]
        runtime = (
            "—"
            if not math.isfinite(rt.get("batch1_mean_s", math.nan))
            else f"{_ms(rt['batch1_mean_s'])} / {_ms(rt['batch1_median_s'])} (n = {rt['batch1_images']})"
        )
        tput = rt.get("throughput_img_s", math.nan)
        throughput = "—" if not math.isfinite(tput) else f"{tput:.3g} img/s"
        flops = r.get("flops_per_image", math.nan)
        cells = [
            _fmt(r.get("fid")),
            _fmt(r.get("niqe")),
            runtime,
            throughput,
            _flops(flops),
            _flops(flops / 2),
            _fmt(r.get("psnr")),
            _fmt(r.get("ssim")),
            _fmt(r.get("lpips")),
            _fmt(r.get("identity")),
            _fmt(r.get("l_ds")),
            _fmt(r.get("success_rate")),
            _fmt(r.get("attr_diff")),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Runtime: each image upsampled alone (batch 1), warm (one untimed call first; not for per-image searches such as PULSE), "
        "device-synchronised; throughput: all test images / all seconds at the loader's batch size. "
        f"FLOPs: {FLOPS_CONVENTION}.",
    ]
    settings = {n: r["settings"] for n, r in results.items() if r.get("settings")}
    if settings:
        lines += ["", "Method settings:", ""] + [f"- **{n}**: {v}" for n, v in settings.items()]
    if skipped:
        lines += ["", "Skipped metrics (shown as —):", ""] + [f"- **{k}**: {v}" for k, v in sorted(skipped.items())]
    attrs = [n for n, r in results.items() if "attr_diff_per_attribute" in r]
    if attrs:
        names = list(results[attrs[0]]["attr_diff_per_attribute"])
        lines += [
            "",
            "## Attribute-score differences |score(SR) − score(GT)| (Fig. 8b)",
            "",
            "| attribute | " + " | ".join(attrs) + " |",
            "|---|" + "---|" * len(attrs),
        ]
        for a in names:
            lines.append(f"| {a} | " + " | ".join(_fmt(results[n]["attr_diff_per_attribute"][a], 3) for n in attrs) + " |")
        lines.append("| **mean** | " + " | ".join(_fmt(results[n]["attr_diff"], 3) for n in attrs) + " |")
    sides = [n for n, r in results.items() if r.get("attr_diff_side")]
    if sides:
        res_all = sorted({int(k) for n in sides for k in results[n]["attr_diff_side"]})
        lines += [
            "",
            "## Attribute-score difference per side-output resolution (Fig. 8a; vs DS(GT) at that resolution)",
            "",
            "| method | " + " | ".join(f"{r}²" for r in res_all) + " | final |",
            "|---|" + "---|" * (len(res_all) + 1),
        ]
        for n in sides:
            d = {int(k): v for k, v in results[n]["attr_diff_side"].items()}
            lines.append(f"| {n} | " + " | ".join(_fmt(d.get(r), 3) for r in res_all) + f" | {_fmt(results[n]['attr_diff'], 3)} |")
    if grid is not None:
        cols = grid["cols"]
        size = max(t.shape[-1] for _, t in cols)
        paths["grid"] = os.path.join(out_dir, "grid.png")
        save_image(rows_grid([t for _, t in cols], size), paths["grid"])
        lines += ["", "## Images", "", f"`grid.png` columns: {' | '.join(n for n, _ in cols)}"]
        if grid.get("strip"):
            strip = dict(sorted(grid["strip"].items()))
            paths["strip"] = os.path.join(out_dir, "strip.png")
            save_image(rows_grid([grid["lr"]] + list(strip.values()), size), paths["strip"])
            lines.append("`strip.png` (Fig. 7): LR | " + " | ".join(f"{r}²" for r in strip) + " (each shown at " + f"{size}² pixel by pixel)")
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines) + "\n")
    return paths
