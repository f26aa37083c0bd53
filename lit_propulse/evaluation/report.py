"""The evaluation's report (Pro-PULSE Table I layout, Fig. 8b/8a tables, Fig. 7 strip): ``report.json``,
``report.md``, ``grid.png`` (LR | methods | side outputs | GT) and ``strip.png`` (the multi-resolution
strip), written by :func:`write_report`."""
from __future__ import annotations

import json
import math
import os
from typing import Any

from lit_propulse.core.images import rows_grid, save_image

__all__ = ["write_report"]


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
) -> dict[str, str]:
    """Write report.json, report.md (Table I layout, Fig. 8b/8a tables, skipped metrics with reasons),
    grid.png and strip.png into ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "report.json"), "md": os.path.join(out_dir, "report.md")}
    payload = {"title": title, "num_images": num_images, "device": device, "world_size": world_size, "results": results, "skipped": skipped, "labels": labels}
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=2, default=float)
    fid_label = labels.get("fid", "FID")
    lines = [f"# {title}", "", f"{num_images} test images, each once (device {device}, {world_size} process(es)).", ""]
    lines += ["## Table I layout", "", f"| method | {fid_label} ↓ | NIQE ↓ | runtime / image (median [IQR]) | FLOPs / image | PSNR ↑ | SSIM ↑ | LPIPS ↓ | identity ↑ | L_DS ↓ | success @ ε ↑ | attr. diff ↓ |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rt = r["runtime"]
        runtime = "—" if not math.isfinite(rt["median_s"]) else f"{rt['median_s'] * 1e3:.3g} ms [{rt['q25_s'] * 1e3:.3g}, {rt['q75_s'] * 1e3:.3g}]"
        cells = [_fmt(r.get("fid")), _fmt(r.get("niqe")), runtime, _flops(r.get("flops_per_image", math.nan)), _fmt(r.get("psnr")), _fmt(r.get("ssim")),
                 _fmt(r.get("lpips")), _fmt(r.get("identity")), _fmt(r.get("l_ds")), _fmt(r.get("success_rate")), _fmt(r.get("attr_diff"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Skipped metrics (shown as —):", ""] + [f"- **{k}**: {v}" for k, v in sorted(skipped.items())]
    attrs = [n for n, r in results.items() if "attr_diff_per_attribute" in r]
    if attrs:
        names = list(results[attrs[0]]["attr_diff_per_attribute"])
        lines += ["", "## Attribute-score differences |score(SR) − score(GT)| (Fig. 8b)", "", "| attribute | " + " | ".join(attrs) + " |", "|---|" + "---|" * len(attrs)]
        for a in names:
            lines.append(f"| {a} | " + " | ".join(_fmt(results[n]["attr_diff_per_attribute"][a], 3) for n in attrs) + " |")
        lines.append("| **mean** | " + " | ".join(_fmt(results[n]["attr_diff"], 3) for n in attrs) + " |")
    sides = [n for n, r in results.items() if r.get("attr_diff_side")]
    if sides:
        res_all = sorted({int(k) for n in sides for k in results[n]["attr_diff_side"]})
        lines += ["", "## Attribute-score difference per side-output resolution (Fig. 8a; vs DS(GT) at that resolution)", "",
                  "| method | " + " | ".join(f"{r}²" for r in res_all) + " | final |", "|---|" + "---|" * (len(res_all) + 1)]
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
