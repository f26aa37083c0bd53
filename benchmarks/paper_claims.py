"""The papers' claims, checked one by one on a seeded evaluation (issue #15 item 4).

Reads the ``seeds.json`` that ``python -m lit_propulse pipeline --config experiments/toy/table_ii.yaml
--seeds 0,1,2`` writes (:mod:`lit_propulse.evaluation.seeds`) and, for each claim of Pro-PULSE (Sec. IV-D
Table I, Sec. IV-G Table II) that the toy domain can test, compares the two rows seed by seed: the
difference in the claim's direction per seed, its mean ± sample std over the seeds, and a verdict:

- **holds**: the claimed row is better on every seed;
- **holds on average**: better on average, but not on every seed (within the seeds' spread);
- **does not hold**: not better on average.

"Better" follows each metric's direction (FID, NIQE, L_DS, runtime: lower). A claim the paper makes
strongly ("dramatically") is also given the relative size of the effect, so the reader can judge it.

    python benchmarks/paper_claims.py runs/toy_table_ii/seeds.json [--stage eval] [--out docs/toy_claims.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass

#: metric -> True when lower is better
LOWER_IS_BETTER = {"fid": True, "niqe": True, "l_ds": True, "runtime_s": True, "psnr": False, "ssim": False, "attr_diff": True, "success_rate": False}


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` on each of ``metrics`` (the paper's claim, with where it says so)."""

    text: str
    better: str
    worse: str
    metrics: tuple[str, ...]
    where: str


#: the claims the toy Table I/II analogue can test (method names of experiments/toy/table_ii/eval.yaml)
CLAIMS: tuple[Claim, ...] = (
    Claim("Pro-PULSE beats PULSE on FID and NIQE", "Pro-PULSE", "PULSE", ("fid", "niqe"), "Sec. IV-D, Table I"),
    Claim("Pro-PULSE beats pSp on FID and NIQE", "Pro-PULSE", "pSp", ("fid", "niqe"), "Sec. IV-D, Table I"),
    Claim("Pro-PULSE is faster than PULSE", "Pro-PULSE", "PULSE", ("runtime_s",), "Sec. IV-D, Table I"),
    Claim("progressive E_W+ beats E_W+ direct", "Pro-PULSE", "E_W+ direct", ("fid", "niqe"), "Sec. IV-G, Table II"),
    Claim("E_W direct beats E_W+ direct", "E_W direct", "E_W+ direct", ("fid", "niqe"), "Sec. IV-G, Table II"),
    Claim("progressive E_W+ beats E_W direct", "Pro-PULSE", "E_W direct", ("fid", "niqe"), "Sec. IV-G, Table II"),
    Claim("removing the adversarial term hurts (dramatically)", "Pro-PULSE", "without L_adv", ("fid", "niqe"), "Sec. IV-G, Table II"),
    Claim("removing the reconstruction term hurts FID", "Pro-PULSE", "without L_rec", ("fid",), "Sec. IV-G, Table II"),
    Claim("removing E_W's guidance hurts", "Pro-PULSE", "without E_W", ("fid", "niqe"), "Sec. IV-G, Table II"),
    Claim("removing deep supervision (G_ds) hurts", "Pro-PULSE", "without G_ds", ("fid", "niqe"), "Sec. IV-G, Table II"),
    Claim("end-to-end training is worse than Pro-PULSE", "Pro-PULSE", "E2E", ("fid", "niqe"), "Sec. IV-G, Table II"),
)


def check(claim: Claim, metric: str, methods: dict) -> dict:
    """One claim on one metric: per-seed advantage of ``better`` (positive = as claimed), its mean and
    std, how many seeds agree, the relative effect, and the verdict; ``verdict`` "not measured" when a
    row or the metric is missing."""
    a, b = methods.get(claim.better, {}).get(metric), methods.get(claim.worse, {}).get(metric)
    out = {"claim": claim.text, "where": claim.where, "metric": metric, "better": claim.better, "worse": claim.worse}
    if not a or not b:
        missing = [n for n, v in ((claim.better, a), (claim.worse, b)) if not v]
        return {**out, "verdict": "not measured", "why": f"no {metric} for {', '.join(missing)}"}
    seeds = sorted(set(a["values"]) & set(b["values"]), key=int)
    if not seeds:
        return {**out, "verdict": "not measured", "why": "no seed has both rows"}
    sign = 1.0 if LOWER_IS_BETTER[metric] else -1.0
    adv = [sign * (b["values"][s] - a["values"][s]) for s in seeds]  # > 0: the claimed row is better
    mean = statistics.fmean(adv)
    worse_mean = statistics.fmean(b["values"][s] for s in seeds)
    agree = sum(d > 0 for d in adv)
    verdict = "holds" if agree == len(seeds) else "holds on average" if mean > 0 else "does not hold"
    return {
        **out,
        "seeds": len(seeds),
        "agree": agree,
        "advantage_mean": mean,
        "advantage_std": statistics.stdev(adv) if len(adv) > 1 else None,
        "relative": mean / abs(worse_mean) if worse_mean else None,
        "better_mean": statistics.fmean(a["values"][s] for s in seeds),
        "worse_mean": worse_mean,
        "verdict": verdict,
    }


def check_all(summary: dict, claims: tuple[Claim, ...] = CLAIMS) -> list[dict]:
    methods = summary["methods"]
    return [check(c, m, methods) for c in claims for m in c.metrics]


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def markdown(rows: list[dict], summary: dict) -> str:
    fid = summary.get("labels", {}).get("fid", "FID")
    lines = [
        f"Seeds {', '.join(map(str, summary['seeds']))}; {summary['num_images']} test images each. Advantage: the worse "
        "row's value minus the claimed row's, per seed, in the metric's better direction (positive = as the paper "
        "says); mean ± sample std over the seeds, and the seeds on which it holds.",
        "",
        "| claim (paper) | metric | claimed row | other row | means | advantage | relative | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        metric = {"fid": fid, "niqe": "NIQE", "runtime_s": "runtime / image (s)"}.get(r["metric"], r["metric"])
        if r["verdict"] == "not measured":
            lines.append(f"| {r['claim']} ({r['where']}) | {metric} | {r['better']} | {r['worse']} | — | — | — | — | not measured: {r['why']} |")
            continue
        std = "" if r["advantage_std"] is None else f" ± {r['advantage_std']:.2g}"
        rel = "—" if r["relative"] is None else f"{100 * r['relative']:+.0f} %"
        if r["metric"] == "runtime_s" and r["better_mean"]:
            rel = f"{r['worse_mean'] / r['better_mean']:.3g}× faster"
        lines.append(
            f"| {r['claim']} ({r['where']}) | {metric} | {r['better']} | {r['worse']} | {_num(r['better_mean'])} vs {_num(r['worse_mean'])} "
            f"| {_num(r['advantage_mean'])}{std} | {rel} | {r['agree']}/{r['seeds']} | **{r['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seeds_json", help="seeds.json of a seeded pipeline run (runs/toy_table_ii/seeds.json)")
    ap.add_argument("--stage", default="eval", help="the evaluation stage's name in the pipeline (default: eval)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    with open(args.seeds_json) as f:
        summaries = json.load(f)
    if args.stage not in summaries:
        print(f"error: {args.seeds_json} has no stage {args.stage!r} (stages: {sorted(summaries)})", file=sys.stderr)
        return 2
    summary = summaries[args.stage]
    text = markdown(check_all(summary), summary)
    print(text)
    if args.out:
        with open(args.out, "w") as f:  # a page of its own: a title naming its source
            f.write(f"# The papers' claims, seed by seed\n\n`python benchmarks/paper_claims.py {args.seeds_json}`\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
