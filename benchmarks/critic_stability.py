"""Critic stability of the encoder stages (issue #15 item 2): does validation L_rec keep falling with
more steps, and what does the WGAN critic (Eq. (8)-(9)) do meanwhile?

Reads the ``metrics.csv`` of two or more E_W / E_W+ runs (``python -m lit_propulse fit --config
experiments/toy/ew.yaml --trainer.default_root_dir DIR ...``) and prints, per validation step, for
each run: the validation L_rec (``val/loss/rec``, Eq. (6) unweighted) and the means, over the
training steps logged since the previous validation, of the training L_rec, the encoder's
adversarial term L_adv = -E[D(fake)] (Eq. (8), unweighted), the critic's loss
L_D = E[D(fake)] - E[D(real)] (Eq. (9)) and, when the run has one, its gradient penalty.

    python benchmarks/critic_stability.py NAME=RUN_DIR NAME=RUN_DIR [...] [--png docs/images/critic_stability.png]

With ``--png`` and matplotlib installed, also plots validation L_rec and the critic loss L_D against the step.
"""

from __future__ import annotations

import argparse
import csv
import math
import os

# metrics.csv column -> table column
TRAIN_COLUMNS = {
    "train/loss/rec": "train L_rec",
    "train/loss/adv": "L_adv",
    "train/loss/D/wgan": "L_D",
    "train/loss/D/gp": "GP",
}
VAL_COLUMN = "val/loss/rec"


def _float(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def read_run(path: str) -> list[dict[str, float]]:
    """One row per validation step of the run's metrics.csv: ``step``, ``val L_rec`` and the window
    means of :data:`TRAIN_COLUMNS` (NaN where the run does not log a term)."""
    csv_path = os.path.join(path, "metrics.csv") if os.path.isdir(path) else path
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    table: list[dict[str, float]] = []
    window: dict[str, list[float]] = {k: [] for k in TRAIN_COLUMNS}
    for row in rows:
        for key in TRAIN_COLUMNS:
            v = _float(row.get(key))
            if v is not None:
                window[key].append(v)
        val = _float(row.get(VAL_COLUMN))
        if val is None:
            continue
        entry = {"step": int(row["step"]) + 1, "val L_rec": val}  # Lightning logs step = global_step - 1
        for key, name in TRAIN_COLUMNS.items():
            entry[name] = sum(window[key]) / len(window[key]) if window[key] else math.nan
        table.append(entry)
        window = {k: [] for k in TRAIN_COLUMNS}
    return table


def format_table(runs: dict[str, list[dict[str, float]]]) -> str:
    """A Markdown table: one row per step, the columns of every run side by side."""
    names = ["val L_rec", *TRAIN_COLUMNS.values()]
    present = {run: [n for n in names if any(not math.isnan(r[n]) for r in rows)] for run, rows in runs.items()}
    header = ["step"] + [f"{run}: {n}" for run in runs for n in present[run]]
    by_step = {run: {r["step"]: r for r in rows} for run, rows in runs.items()}
    steps = sorted({s for table in by_step.values() for s in table})
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for step in steps:
        cells = [str(step)]
        for run in runs:
            row = by_step[run].get(step)
            cells += ["" if row is None else f"{row[n]:.4f}" for n in present[run]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict[str, float]]], png: str) -> bool:
    """Validation L_rec and the critic loss L_D against the step; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for run, rows in runs.items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["val L_rec"] for r in rows], marker="o", label=run)
        axes[1].plot(steps, [r["L_D"] for r in rows], marker="o", label=run)
    axes[0].set(xlabel="encoder step", ylabel="validation L_rec (Eq. (6))", title="validation L_rec")
    axes[1].set(xlabel="encoder step", ylabel="L_D = E[D(fake)] - E[D(real)]", title="critic loss, Eq. (9) (train, window mean)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR (or NAME=path/to/metrics.csv)")
    parser.add_argument("--png", default=None, help="write the plot here (needs matplotlib)")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(os.path.normpath(spec)), spec
        runs[name] = read_run(path)
    print(format_table(runs))
    if args.png:
        print(f"plot: {args.png}" if plot(runs, args.png) else "matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
