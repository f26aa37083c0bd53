"""Generator forward speed on this machine, against its own dense conv2d peak measured in the same run.

    python benchmarks/generator_speed.py [--quick] [--threads N]

Prints, for CPU float32 (and bf16 autocast for reference): images/s and achieved GFLOP/s of the
generator forward (FLOPs counted with torch.utils.flop_counter) at 1024 config-f (batch 2) and at
the toy 64x64 table, next to dense 3x3 conv2d GFLOP/s; and the share of the forward time spent in
the FIR up/down-sampling (Blur / Upsample modules), which must not be the bottleneck.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lit_propulse.core.machine import cpu_name
from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.networks.upfirdn2d import Blur, Upsample


def timeit(fn, min_time: float = 3.0, warmup: int = 1) -> float:
    """Median seconds per call over repeated calls totalling >= min_time."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def conv_peak(channels_last: bool, bf16: bool = False, c: int = 512, hw: int = 64, batch: int = 2) -> float:
    x = torch.randn(batch, c, hw, hw)
    w = torch.randn(c, c, 3, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def run():
        with ctx:
            F.conv2d(x, w, padding=1)

    return flops_of(run) / timeit(run, 2.0) / 1e9


@torch.no_grad()
def generator_speed(G: Generator, batch: int, channels_last: bool, bf16: bool = False, min_time: float = 3.0) -> dict:
    G.synthesis.channels_last = channels_last
    z = torch.randn(batch, G.z_dim)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def run():
        with ctx:
            G(z, noise="random")

    flops = flops_of(run)
    sec = timeit(run, min_time)
    # time inside the FIR modules (forward hooks; CPU ops are synchronous)
    spent = [0.0]
    starts = {}
    hooks = []
    for m in G.modules():
        if isinstance(m, (Blur, Upsample)):
            hooks.append(m.register_forward_pre_hook(lambda mod, inp: starts.__setitem__(id(mod), time.perf_counter())))
            hooks.append(m.register_forward_hook(lambda mod, inp, out: spent.__setitem__(0, spent[0] + time.perf_counter() - starts[id(mod)])))
    t = time.perf_counter()
    run()
    total = time.perf_counter() - t
    for h in hooks:
        h.remove()
    return {"img_s": batch / sec, "gflops": flops / sec / 1e9, "gflop_per_img": flops / batch / 1e9, "fir_share": spent[0] / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timings")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = 1.0 if args.quick else 3.0
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    # the peak is the best of three measurements and two shapes: a conservative denominator
    shapes = [dict(c=512, hw=64), dict(c=256, hw=128)]
    peak = {cl: max(conv_peak(cl, **sh) for sh in shapes for _ in range(3)) for cl in (False, True)}
    peak_bf16 = conv_peak(True, bf16=True)
    print(
        f"dense conv2d 3x3 (512ch @64x64 / 256ch @128x128, best of 3), batch 2, float32: {peak[False]:.1f} GFLOP/s (NCHW), {peak[True]:.1f} GFLOP/s (channels_last); bf16 autocast channels_last: {peak_bf16:.1f} GFLOP/s"
    )
    best_peak = max(peak.values())
    configs = [
        ("1024 config-f", Generator(1024, 512, 8, channel_multiplier=2), 2),
        ("64 toy table", Generator(64, 128, 4, channels={4: 128, 8: 128, 16: 128, 32: 64, 64: 32}), 16),
    ]
    for name, G, batch in configs:
        G.eval().requires_grad_(False)
        for cl in (False, True):  # G.synthesis.channels_last is True by default
            r = generator_speed(G, batch, cl, min_time=t)
            print(
                f"{name:14s} batch {batch:2d} float32 {'channels_last' if cl else 'NCHW         '}: {r['img_s']:7.2f} img/s, "
                f"{r['gflops']:6.1f} GFLOP/s = {100 * r['gflops'] / best_peak:5.1f}% of the float32 conv2d peak "
                f"({r['gflop_per_img']:.1f} GFLOP/img; FIR {100 * r['fir_share']:.1f}% of the time)"
            )
        r = generator_speed(G, batch, True, bf16=True, min_time=t)
        print(f"{name:14s} batch {batch:2d} bf16 autocast channels_last: {r['img_s']:7.2f} img/s, {r['gflops']:6.1f} GFLOP/s (FIR {100 * r['fir_share']:.1f}%)")


if __name__ == "__main__":
    main()
