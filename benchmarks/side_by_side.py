"""Our StyleGAN2 synthesis against the standard PyTorch port, in one process, with the same weights.

    python benchmarks/side_by_side.py [--sizes 256 1024] [--batch 2] [--rounds 3] [--threads N]
                                      [--no-bf16] [--profile] [--out FILE.md]
    STYLEGAN2_PORT_DIR=/tmp/port python benchmarks/side_by_side.py      # adds the port's columns

What it times, per size and precision (float32 and bf16 autocast), on CPU:

* forward: ``G.synthesis(w+)`` under ``torch.no_grad()``;
* forward+backward: the generator frozen (``requires_grad_(False)``), w+ requiring grad, and
  ``backward()`` of a scalar loss on the image: the gradient PULSE and every encoder stage take.

Weights: a random config-f generator of ours, written to the port's layout with
:func:`lit_propulse.networks.checkpoints.ours_to_port` (the port's layout is our on-disk layout)
and loaded into the port's ``Generator`` with ``strict=True``; both get the same w+ and noise
maps, and the max-abs difference of their images is printed next to the timings (under bf16
autocast both run in bf16, so that column then compares two roundings; the column "ours image vs
ours float32" gives our bf16 image's own deviation from our float32 image).

The port (rosinality/stylegan2-pytorch, a checkout named by ``STYLEGAN2_PORT_DIR``) is imported
as it is, nothing of it copied here: its ``op`` package compiles CUDA extensions at import time,
so ``torch.utils.cpp_extension.load`` is replaced by a stub while it is imported; its modules
then take their own pure-PyTorch CPU paths (``upfirdn2d_native``, the CPU ``fused_leaky_relu``,
``conv2d_gradfix`` falling back to ``F.conv2d``).

Timing: every variant once per round, interleaved, ``--rounds`` rounds after one warm-up call;
the table shows the fastest round (the least disturbed by other load) and ratios computed from
the same run. On a shared machine absolute seconds move with the load; the ratios are what to
compare between runs. ``--profile`` adds a torch.profiler breakdown of our forward+backward.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from lit_propulse.core.machine import cpu_name, load_average
from lit_propulse.networks.checkpoints import ours_to_port
from lit_propulse.networks.stylegan2 import Generator


def import_port(port_dir: str | os.PathLike):
    """The port's ``model`` module from a checkout, its CUDA-extension loaders stubbed."""
    port_dir = str(Path(port_dir).resolve())
    if not (Path(port_dir) / "model.py").is_file() or not (Path(port_dir) / "op").is_dir():
        raise SystemExit(f"STYLEGAN2_PORT_DIR={port_dir}: not a rosinality/stylegan2-pytorch checkout (no model.py / op/)")
    import torch.utils.cpp_extension as cpp

    real_load = cpp.load
    cpp.load = lambda *a, **k: types.SimpleNamespace()  # the CUDA ops are never called on CPU
    sys.path.insert(0, port_dir)
    try:
        for name in [m for m in sys.modules if m == "op" or m.startswith("op.") or m == "model"]:
            del sys.modules[name]
        return importlib.import_module("model")
    finally:
        sys.path.remove(port_dir)
        cpp.load = real_load


def build_pair(size: int, port_model, seed: int = 0):
    """Our frozen random config-f generator, and the port's with the same weights (or None)."""
    torch.manual_seed(seed)
    ours = Generator(size, 512, 8, channel_multiplier=2).eval().requires_grad_(False)
    with torch.no_grad():  # non-trivial noise strengths and biases, so every term is exercised
        for name, p in ours.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias"):
                p.normal_(0, 0.1)
    port = None
    if port_model is not None:
        port = port_model.Generator(size, 512, 8, channel_multiplier=2)
        port.load_state_dict(ours_to_port(ours.state_dict()), strict=True)
        port.eval().requires_grad_(False)
    return ours, port


def best_of(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Fastest of ``rounds`` interleaved calls of each function (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def variants(ours: Generator, port, batch: int, bf16: bool) -> tuple[dict[str, Callable[[], None]], float | None, float]:
    """The timed calls for one size and precision, the image max-abs difference ours vs port (None
    without the port), and that of our image against our float32 image (0 in float32)."""
    g = torch.Generator().manual_seed(1)
    ws0 = torch.randn(batch, ours.num_ws, ours.w_dim, generator=g)
    noise = ours.synthesis.make_noise(batch, generator=g)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def ours_img(ws):
        with cast():
            return ours.synthesis(ws, noise=noise).image

    def port_img(ws):
        with cast():
            return port([ws], input_is_latent=True, noise=noise)[0]

    def fwd(img_fn):
        def run():
            with torch.no_grad():
                img_fn(ws0)

        return run

    def fwd_bwd(img_fn):
        def run():
            ws = ws0.clone().requires_grad_(True)
            img_fn(ws).float().square().mean().backward()

        return run

    fns = {"ours fwd": fwd(ours_img), "ours fwd+bwd": fwd_bwd(ours_img)}
    with torch.no_grad():
        vs_fp32 = (ours_img(ws0).float() - ours.synthesis(ws0, noise=noise).image).abs().max().item() if bf16 else 0.0
    diff = None
    if port is not None:
        fns.update({"port fwd": fwd(port_img), "port fwd+bwd": fwd_bwd(port_img)})
        with torch.no_grad():
            diff = (ours_img(ws0).float() - port_img(ws0).float()).abs().max().item()
    return fns, diff, vs_fp32


def profile_breakdown(ours: Generator, batch: int) -> str:
    """Where our forward+backward time goes (torch.profiler, self CPU time by op group)."""
    from torch.profiler import ProfilerActivity, profile

    ws0 = torch.randn(batch, ours.num_ws, ours.w_dim)
    noise = ours.synthesis.make_noise(batch)

    def run():
        ws = ws0.clone().requires_grad_(True)
        ours.synthesis(ws, noise=noise).image.square().mean().backward()

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    groups = {
        "convolution, forward (incl. transposed, FIR)": (
            "aten::mkldnn_convolution",
            "aten::_convolution",
            "aten::_slow_conv2d_forward",
            "aten::slow_conv_transpose2d",
            "aten::thnn_conv2d",
            "aten::convolution",
        ),
        "convolution, input gradient (backward)": ("aten::convolution_backward", "aten::_slow_conv2d_backward", "aten::mkldnn_convolution_backward"),
        "LeakyReLU forward/backward": ("aten::leaky_relu", "aten::leaky_relu_", "aten::leaky_relu_backward"),
        "per-channel reductions (style/demod gradients)": ("aten::sum", "aten::mm", "aten::mv", "aten::addmv_", "aten::addmm", "aten::bmm"),
        "other elementwise (modulation, noise, weights)": (
            "aten::mul",
            "aten::mul_",
            "aten::add",
            "aten::add_",
            "aten::pow",
            "aten::rsqrt",
            "aten::sub",
            "aten::div",
            "aten::copy_",
            "aten::fill_",
            "aten::cat",
            "aten::zero_",
        ),
    }
    totals = {k: 0.0 for k in groups}
    total = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total
        for k, names in groups.items():
            if e.key in names:
                totals[k] += e.self_cpu_time_total
                break
    totals["Python, autograd engine, allocation and the rest"] = total - sum(totals.values())
    lines = ["| where the time of our forward+backward goes (self CPU time by op name) | share |", "|---|---|"]
    lines += [f"| {k} | {100 * v / total:.1f} % |" for k, v in totals.items()]
    lines += ["", "| op (self CPU time, top 12) | calls | share |", "|---|---|---|"]
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    lines += [f"| `{e.key}` | {e.count} | {100 * e.self_cpu_time_total / total:.1f} % |" for e in top]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (the fastest is kept)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-bf16", action="store_true", help="float32 only")
    ap.add_argument("--no-port", action="store_true", help="ignore STYLEGAN2_PORT_DIR")
    ap.add_argument("--profile", action="store_true", help="add a torch.profiler breakdown of our fwd+bwd at the largest size")
    ap.add_argument("--out", default=None, help="also write the report (markdown) here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    port_dir = None if args.no_port else os.environ.get("STYLEGAN2_PORT_DIR")
    port_model = import_port(port_dir) if port_dir else None
    header = (
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
        f"load average at start {load_average()}"
    )
    print(header, flush=True)
    cols = ["ours fwd", "ours fwd+bwd", "port fwd", "port fwd+bwd"] if port_model else ["ours fwd", "ours fwd+bwd"]
    rows = [
        "| size, batch, precision | "
        + " | ".join(f"{c} (s)" for c in cols)
        + " | ours fwd+bwd / ours fwd | ours image vs ours float32, max-abs |"
        + (" port fwd / ours fwd | port fwd+bwd / ours fwd+bwd | image max-abs diff ours vs port |" if port_model else "")
    ]
    rows.append("|" + "---|" * (len(cols) + (6 if port_model else 3)))
    checks = []
    for size in args.sizes:
        ours, port = build_pair(size, port_model)
        for bf16 in [False] if args.no_bf16 else [False, True]:
            fns, diff, vs_fp32 = variants(ours, port, args.batch, bf16)
            t = best_of(fns, args.rounds)
            prec = "bf16 autocast" if bf16 else "float32"
            row = f"| {size}², {args.batch}, {prec} | " + " | ".join(f"{t[c]:.2f}" for c in cols)
            row += f" | {t['ours fwd+bwd'] / t['ours fwd']:.2f}x | {vs_fp32:.1e} |"
            if port_model:
                row += f" {t['port fwd'] / t['ours fwd']:.2f}x | {t['port fwd+bwd'] / t['ours fwd+bwd']:.2f}x | {diff:.1e} |"
            rows.append(row)
            print(row, flush=True)
            if size == 1024 and not bf16:
                checks.append(f"1024 float32: ours fwd+bwd / ours fwd = {t['ours fwd+bwd'] / t['ours fwd']:.2f} (target <= 2.2)")
                if port_model:
                    checks.append(f"1024 float32: port fwd+bwd / ours fwd+bwd = {t['port fwd+bwd'] / t['ours fwd+bwd']:.2f} (target >= 4)")
        del ours, port
    report = [header, "", *rows, ""]
    report += [f"- {c}" for c in checks]
    report.append(f"- load average at end {load_average()}")
    if args.profile:
        ours, _ = build_pair(max(args.sizes), None)
        report += ["", profile_breakdown(ours, args.batch)]
    text = "\n".join(report)
    print("\n" + text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
