"""Toy-domain figures of docs/beyond.md: refinement to ε at encoder speed, the fidelity dial, many
answers per input, pSp in the comparison.

    python benchmarks/beyond_toy.py --gds runs/toy/gds/gds.pt --ew runs/toy/ew/ew.pt --ewplus runs/toy/ewplus/ewplus.pt \
        [--psp runs/toy/psp/psp.pt] [--num-test 256] [--pulse-images 64] [--out docs]

The test faces are the toy evaluation's (render indices [20000, 20000 + num_test), as
experiments/toy/eval.yaml); metrics are the evaluation's MetricSuite (ε = 2e-3, toy-FID on the attribute
classifier's features, attribute-score difference). Runtime per image = batch time / batch size at the
evaluation's batch of 32 (what the toy report's "runtime / image" column is), one process, CPU; both the
process's CPU time (comparable on a shared machine) and wall time are recorded.
Writes <out>/images/beyond_*.png and <out>/beyond_toy.json; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from datamodules.toy_faces import ToyFacesDataset  # noqa: E402
from lit_propulse.core.batch import SRBatch, collate_sr  # noqa: E402
from lit_propulse.core.images import to_uint8  # noqa: E402
from lit_propulse.core.outputs import ImageOutput  # noqa: E402
from lit_propulse.core.weights import load_module  # noqa: E402
from lit_propulse.dial import blend_dial, dial_ends, dial_rows, scale_dial  # noqa: E402
from lit_propulse.evaluation.methods import PULSEMethod, clamp_output  # noqa: E402
from lit_propulse.evaluation.suite import MetricSuite  # noqa: E402
from lit_propulse.inference import ProPulseUpsampler  # noqa: E402
from lit_propulse.networks.encoders import EWEncoder  # noqa: E402
from lit_propulse.networks.gds import load_gds  # noqa: E402
from lit_propulse.refine import RefineConfig, RefinedUpsampler  # noqa: E402
from lit_propulse.samples import SampleConfig, sample_answers  # noqa: E402

EPS = 2e-3
REFINE = {
    "refine W+": RefineConfig.for_variant("wplus", eps=EPS),
    "refine sphere": RefineConfig.for_variant("sphere", eps=EPS),
}


def batches(num: int, size: int = 32) -> list[SRBatch]:
    ds = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=20000, num_test=num)
    items = [ds[i] for i in range(len(ds))]
    return [collate_sr(items[i : i + size]) for i in range(0, len(items), size)]


class PSPStart(torch.nn.Module):
    """pSp's encoder as the start of a refinement (what RefinedUpsampler reads: ``encode``, ``gds.generator``)."""

    noise = "const"

    def __init__(self, generator: str, encoder: str) -> None:
        super().__init__()
        from lit_propulse.evaluation.psp_method import PSPMethod

        self.psp = PSPMethod("pSp", generator, encoder)
        self.gds = types.SimpleNamespace(generator=self.psp.generator)

    def encode(self, lr: torch.Tensor) -> torch.Tensor:
        return self.psp.encoder(lr)


def run(name, upsample, data, suite, log, warm_up: bool = True) -> dict:
    """Score ``upsample`` on every batch; per-image wall and CPU (process) time = batch time / batch size.
    CPU time is the one to compare on a shared machine (wall time counts other processes' turns)."""
    suite.add_method(name)
    if warm_up:
        with torch.no_grad():
            upsample(data[0])
    wall, cpu = [], []
    for b in data:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = upsample(b)
        wall.append((time.perf_counter() - t0) / len(b))
        cpu.append((time.process_time() - c0) / len(b))
        suite.update(name, clamp_output(out), b)
    res = suite.compute(name)
    res["wall_ms_per_image_median"] = 1000 * statistics.median(wall)
    res["cpu_ms_per_image_median"] = 1000 * statistics.median(cpu)
    res["cpu_ms_per_image_mean"] = 1000 * statistics.fmean(cpu)
    log(
        f"{name}: {len(data)} batches, CPU {res['cpu_ms_per_image_median']:.1f} ms/image (wall {res['wall_ms_per_image_median']:.1f}), L_DS {res['l_ds']:.5f}, "
        f"success {res['success_rate']:.3f}, toy-FID {res.get('fid', float('nan')):.1f}, attr diff {res.get('attr_diff', float('nan')):.4f}"
    )
    return res


def show(ax, img, title=None):
    ax.imshow(to_uint8(img.clamp(-1, 1).cpu()).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_dial(report: dict, path: str) -> None:
    """L_DS against toy-FID along both dials, with the other methods as points."""
    dial = report["dial"]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    xs = [d["l_ds"] for d in dial["scale"]]
    ax.plot(xs, [d["fid"] for d in dial["scale"]], "o-", label="scale dial (E_W+ scales used)")
    for d in dial["scale"]:
        ax.annotate(f"{d['position']}", (d["l_ds"], d["fid"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([d["l_ds"] for d in dial["blend"]], [d["fid"] for d in dial["blend"]], "s--", label="blend dial α (0 = E_W, 1 = E_W+)")
    for d in dial["blend"]:
        ax.annotate(f"α={d['position']:g}", (d["l_ds"], d["fid"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    marks = (("refine W+", "*"), ("refine sphere", "P"), ("refine W+ from E_W", "v"), ("refine W+ from pSp", "^"), ("PULSE", "x"), ("pSp", "D"))
    for name, mk in marks:
        r = report.get("methods", {}).get(name)
        if r:
            label = name if r["count"] == report["setup"]["num_test"] else f"{name} ({r['count']} faces: its FID is not comparable)"
            ax.plot([r["l_ds"]], [r["fid"]], mk, markersize=9, label=label)
    ax.axvline(EPS, color="grey", lw=0.8, ls=":")
    ax.text(EPS, ax.get_ylim()[1], " ε", va="top", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("L_DS = ||DS(SR) - LR||² (mean over test faces, log)")
    ax.set_ylabel("toy-FID (attribute-classifier features)")
    ax.set_title("Fidelity / realism dial, toy faces 8² → 64²", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gds", required=True)
    ap.add_argument("--ew", required=True)
    ap.add_argument("--ewplus", required=True)
    ap.add_argument("--psp", default=None, help="a toy pSp export (experiments/toy/psp.yaml)")
    ap.add_argument("--generator", default="lit_propulse/data/toy_stylegan2_64.pt", help="the generator pSp / PULSE use")
    ap.add_argument("--classifier", default="lit_propulse/data/toy_attributes_64.pt")
    ap.add_argument("--num-test", type=int, default=256)
    ap.add_argument("--pulse-images", type=int, default=64, help="PULSE on the first N test faces (0 = skip)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: methods,dial,samples,strip")
    ap.add_argument("--only", default="", help="comma-separated method rows to run (default: all), e.g. 'refine W+ from E_W'")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.manual_seed(0)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    report_path = os.path.join(args.out, "beyond_toy.json")
    report = json.load(open(report_path)) if os.path.isfile(report_path) else {}
    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    data = batches(args.num_test)
    suite = MetricSuite(eps=EPS, fid="attributes", attribute_classifier=args.classifier, niqe=False)
    gds = load_gds(args.gds)
    ew = load_module(args.ew, expected=EWEncoder, what="E_W")
    pro = ProPulseUpsampler.from_files(args.gds, args.ewplus, ew=args.ew)
    ew_up = ProPulseUpsampler(gds, ew)
    G = gds.generator
    report["setup"] = {
        "num_test": args.num_test,
        "eps": EPS,
        "files": {k: getattr(args, k) for k in ("gds", "ew", "ewplus", "psp", "generator")},
        "threads": torch.get_num_threads(),
        "batch": 32,
    }

    if "methods" not in skip:
        only = set(filter(None, args.only.split(",")))
        wanted = lambda name: not only or name in only  # noqa: E731
        res, per_image = {}, {}
        if wanted("E_W"):
            res["E_W"] = run("E_W", lambda b: ew_up(b.lr), data, suite, log)
        if wanted("Pro-PULSE"):
            res["Pro-PULSE"] = run("Pro-PULSE", lambda b: pro(b.lr), data, suite, log)
        starts = [("", pro), (" from E_W", ew_up)]
        if args.psp:
            starts.append((" from pSp", PSPStart(args.generator, args.psp)))
        for start_name, start in starts:
            for variant, cfg in REFINE.items():
                name = variant + start_name
                if not wanted(name):
                    continue
                ru = RefinedUpsampler(start, cfg, sides=False)  # as RefineMethod in the evaluation
                ru.fit()

                def up(b, ru=ru):
                    return ru(b.lr)

                res[name] = run(name, up, data, suite, log)
                recs = ru.records[len(data[0]) :]  # without the warm-up batch
                steps = [r["steps"] for r in recs]
                res[name].update(steps_mean=statistics.fmean(steps), steps_median=statistics.median(steps), steps_max=max(steps), settings=cfg.describe())
                per_image[name] = recs
                log(f"  {name}: steps per image mean {res[name]['steps_mean']:.2f}, median {res[name]['steps_median']}, max {res[name]['steps_max']}")
        if args.psp and wanted("pSp"):
            from lit_propulse.evaluation.psp_method import PSPMethod

            psp = PSPMethod("pSp", args.generator, args.psp)
            res["pSp"] = run("pSp", psp.upsample, data, suite, log)
        if args.pulse_images and wanted("PULSE"):
            pulse = PULSEMethod("PULSE", args.generator)
            pulse.bind_eps(EPS)
            pulse.prepare()
            sub = data[: max(1, args.pulse_images // 32)]
            res["PULSE"] = run("PULSE", pulse.upsample, sub, suite, log, warm_up=False)
            res["PULSE"]["images"] = sum(len(b) for b in sub)
        report["methods"] = {**report.get("methods", {}), **res}
        report["refine_per_image"] = {**report.get("refine_per_image", {}), **per_image}

    if "dial" not in skip:
        dial = {"scale": [], "blend": []}
        enc = pro.encoder
        positions = list(range(len(enc.scales) + 1))
        alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
        ends = [dial_ends(G, enc, ew, b.lr, pro.scale) for b in data]
        for kind, values in (("scale", positions), ("blend", alphas)):
            for i, v in enumerate(values):
                name = f"dial-{kind}-{i}"
                suite.add_method(name, keys=["consistency", "fid", "attr_diff"])
                for b, (ws_ew, ws_p) in zip(data, ends):
                    ws = scale_dial(ws_ew, ws_p, dial_rows(enc, v)) if kind == "scale" else blend_dial(ws_ew, ws_p, v)
                    with torch.no_grad():
                        out = gds(ws, noise="const")
                    suite.update(name, clamp_output(ImageOutput(out.image, {}, ws)), b)
                r = suite.compute(name)
                dial[kind].append({"position": v, "l_ds": r["l_ds"], "fid": r["fid"], "attr_diff": r["attr_diff"], "success_rate": r["success_rate"]})
                log(f"dial {kind} {v}: L_DS {r['l_ds']:.5f}, toy-FID {r['fid']:.1f}, attr diff {r['attr_diff']:.4f}")
        report["dial"] = dial

    if "dial" in report:
        plot_dial(report, os.path.join(args.out, "images", "beyond_dial.png"))

    if "samples" not in skip:
        # what resampling changes: L_DS and spread of 6 samples of 32 test faces per choice of rows / noise
        b = data[0]
        lr, keys = b.lr, b.index.tolist()
        table = []
        for rows_above, noise_above in ((64, 64), (64, 8), (32, 8), (16, 8), (8, 8)):
            cfg = SampleConfig(num_samples=6, rows_above=rows_above, noise_above=noise_above)
            s = sample_answers(pro, lr, cfg, keys=keys)
            table.append(
                {
                    "rows_above": rows_above,
                    "noise_above": noise_above,
                    "l_ds_mean": s.l_ds.mean().item(),
                    "l_ds_max": s.l_ds.max().item(),
                    "spread_mean": s.spread.mean().item(),
                }
            )
            log(
                f"samples rows above {rows_above}, noise above {noise_above}: L_DS mean {table[-1]['l_ds_mean']:.5f} (max {table[-1]['l_ds_max']:.5f}), "
                f"spread {table[-1]['spread_mean']:.4f}"
            )
        idx = [0, 1, 2]
        n = 6
        plain = sample_answers(pro, lr[idx], SampleConfig(num_samples=n), keys=[keys[i] for i in idx])
        wide = sample_answers(pro, lr[idx], SampleConfig(num_samples=n, rows_above=8), keys=[keys[i] for i in idx], refine_config=REFINE["refine W+"])
        report["samples"] = {"table": table, "figure_default": plain.l_ds.tolist(), "figure_rows_above_8_refined": wide.l_ds.tolist()}
        log(f"samples rows above 8, noise above 8, refined: L_DS mean {wide.l_ds.mean():.5f} (max {wide.l_ds.max():.5f}), spread {wide.spread.mean():.4f}")
        vmax = max(float(plain.spread.max()), float(wide.spread.max()), 1e-6)
        fig, axes = plt.subplots(2 * len(idx), n + 3, figsize=(1.1 * (n + 3), 1.2 * 2 * len(idx)))
        labels = ("LR; default:\nrows>32², noise>8²", "LR; rows>8², noise>8²,\nrefined to ε")
        for row, (samples, label) in enumerate(((plain, labels[0]), (wide, labels[1]))):
            for i in range(len(idx)):
                axr = axes[2 * i + row]
                show(axr[0], torch.nn.functional.interpolate(lr[idx[i] : idx[i] + 1], size=64, mode="nearest")[0], label)
                for j in range(n):
                    show(axr[j + 1], samples.images[i, j], f"L_DS {samples.l_ds[i, j]:.4f}")
                axr[n + 1].imshow(samples.spread[i, 0].cpu().numpy(), cmap="magma", vmin=0, vmax=vmax)
                axr[n + 1].set_xticks([]), axr[n + 1].set_yticks([])
                axr[n + 1].set_title("spread", fontsize=7)
                show(axr[n + 2], b.hr[idx[i]], "GT")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "images", "beyond_samples.png"), dpi=110)
        plt.close(fig)

    if "strip" not in skip:  # a strip: LR | E_W | Pro-PULSE | refined | pSp | GT
        b = data[0]
        k = 6
        cols = [
            ("LR", torch.nn.functional.interpolate(b.lr[:k], size=64, mode="nearest")),
            ("E_W", ew_up(b.lr[:k]).image),
            ("Pro-PULSE", pro(b.lr[:k]).image),
            ("refine W+", RefinedUpsampler(pro, REFINE["refine W+"])(b.lr[:k]).image),
        ]
        if args.psp:
            from lit_propulse.evaluation.psp_method import PSPMethod

            psp = PSPMethod("pSp", args.generator, args.psp)
            cols.append(("pSp", psp.upsample(SRBatch(hr=b.hr[:k], lr=b.lr[:k], index=b.index[:k])).image))
        cols.append(("GT", b.hr[:k]))
        fig, axes = plt.subplots(k, len(cols), figsize=(1.1 * len(cols), 1.15 * k))
        for i in range(k):
            for j, (t, imgs) in enumerate(cols):
                show(axes[i, j], imgs[i].detach(), t if i == 0 else None)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "images", "beyond_strip.png"), dpi=110)
        plt.close(fig)

    report["log"] = report.get("log", []) + lines
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {report_path}")


if __name__ == "__main__":
    main()
