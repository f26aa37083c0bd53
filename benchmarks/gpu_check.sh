#!/usr/bin/env bash
# GPU check of lit_propulse's StyleGAN2 and the stages built on it; prints a table and writes it to a file.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine: 1024 config-f, about 5 minutes on one H200
#   bash benchmarks/gpu_check.sh --cpu           # the CPU fallback: tiny sizes, seconds (what tests/test_benchmarks.py runs)
#   bash benchmarks/gpu_check.sh --out FILE.md   # where the table goes (default: $OUT/gpu_check.md when $OUT is set,
#                                                # else ./gpu_check.md)
#   GPU_CHECK_COMPILE=0 bash benchmarks/gpu_check.sh   # skip the torch.compile rows
#
# Rows (CUDA, random config-f weights, batch 2 unless said otherwise):
#   generator forward and forward+backward (frozen G, grad w.r.t. w+) at 1024 in float32, bf16 autocast,
#   NCHW (channels_last off) and torch.compile; an E_W+ training step at batch 8 (E_W+ -> G_ds -> L_rec,
#   Adam on E_W+); PULSE per image at 1024 (100 steps = 100 x the median timed step, float32 and bf16);
#   peak GPU memory of each row; then the CUDA-only tests (pytest -m gpu).
# The whole run is bounded: the Python part by GPU_CHECK_TIMEOUT seconds (default 360), the tests by 100 s.
set -uo pipefail
cd "$(dirname "$0")/.."

device=auto
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) device=cpu ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--cpu] [--out FILE.md]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$out" ]; then
  if [ -n "${OUT:-}" ]; then out="$OUT/gpu_check.md"; else out="gpu_check.md"; fi
fi

timeout "${GPU_CHECK_TIMEOUT:-360}" python - "$device" "$out" <<'PY'
import os
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from lit_propulse.losses.propulse import EncoderLoss
from lit_propulse.networks.encoders import EWPlusEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.pulse import PULSE, GaussianFit, PULSEConfig

want, out_path = sys.argv[1], sys.argv[2]
cuda = want != "cpu" and torch.cuda.is_available()
dev = torch.device("cuda" if cuda else "cpu")
if cuda:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 rows are float32
    torch.backends.cudnn.allow_tf32 = False
    size, batch, lr_size, ew_batch, reps, pulse_steps = 1024, 2, 16, 8, 10, 5
    G = Generator(size, 512, 8, channel_multiplier=2)
    name = torch.cuda.get_device_name()
else:  # the CPU fallback: the same code paths at tiny sizes
    size, batch, lr_size, ew_batch, reps, pulse_steps = 32, 2, 8, 2, 2, 3
    G = Generator(size, 32, 2, channels={4: 32, 8: 32, 16: 16, 32: 8})
    name = "CPU fallback (no CUDA" + (" requested" if want == "cpu" else " device") + ")"
G = G.to(dev).eval().requires_grad_(False)
compile_ok = os.environ.get("GPU_CHECK_COMPILE", "1") != "0"


def sync():
    if cuda:
        torch.cuda.synchronize()


def timed(fn, n=reps):
    """(median seconds, peak memory in GiB) of n calls after two warm-up calls."""
    fn(), fn()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return statistics.median(ts), peak


ws0 = torch.randn(batch, G.num_ws, G.w_dim, device=dev)
noise = G.synthesis.make_noise(batch)
rows = []


def write():
    """The table so far, to the file (rewritten after every row: a timeout keeps what was measured)."""
    head = f"# GPU check: {name}, torch {torch.__version__}\n"
    table = ["| row | seconds | items/s | peak GPU memory (GiB) |", "|---|---|---|---|"]
    table += [f"| {r} | {t:.4f} | {ips:.2f} | {m:.2f} |" for r, t, ips, m in rows]
    by = {r: t for r, t, _, _ in rows}
    notes = []
    for label in ("float32, channels_last", "bf16 autocast, channels_last"):
        f = by.get(f"generator {size}², batch {batch}, {label}: forward")
        fb = by.get(f"generator {size}², batch {batch}, {label}: forward+backward")
        if f and fb:
            notes.append(f"- {label}: forward+backward / forward = {fb / f:.2f}")
    with open(out_path, "w") as fh:
        fh.write(head + "\n" + "\n".join(table) + "\n\n" + "\n".join(notes) + "\n")
    print(table[-1], flush=True)


def generator_rows(label, synth, bf16=False, channels_last=True):
    G.synthesis.channels_last = channels_last
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else nullcontext

    def fwd():
        with torch.no_grad(), ctx():
            synth(ws0, noise=noise)

    def fwd_bwd():
        ws = ws0.clone().requires_grad_(True)
        with ctx():
            img = synth(ws, noise=noise).image
        img.float().square().mean().backward()

    f, mf = timed(fwd)
    fb, mfb = timed(fwd_bwd)
    rows.append((f"generator {size}², batch {batch}, {label}: forward", f, batch / f, mf))
    rows.append((f"generator {size}², batch {batch}, {label}: forward+backward", fb, batch / fb, mfb))
    write()
    G.synthesis.channels_last = True
    return f, fb


generator_rows("float32, channels_last", G.synthesis)
generator_rows("bf16 autocast, channels_last", G.synthesis, bf16=True)
generator_rows("float32, NCHW", G.synthesis, channels_last=False)

# E_W+ training step at batch ew_batch: E_W+ -> G_ds (frozen G, side branches) -> L_rec (Eq. (6)) -> Adam on E_W+
scales = [2**k for k in range((2 * lr_size).bit_length() - 1, size.bit_length())]
enc = EWPlusEncoder(lr_size, G.w_dim, G.num_ws, scales, channels=64 if cuda else 16, out_channels=512 if cuda else 32).to(dev)
gds = DeeplySupervisedGenerator(G, lr_size, head_hidden=(128, 64) if cuda else (8, 4)).to(dev)
loss = EncoderLoss(lambda_rec=1.0, lambda_id=0.0, lambda_adv=0.0).to(dev)
opt = torch.optim.Adam(enc.parameters(), lr=1e-4)
lr_img = torch.rand(ew_batch, 3, lr_size, lr_size, device=dev) * 2 - 1
gt = torch.rand(ew_batch, 3, size, size, device=dev) * 2 - 1


def ew_step():
    out = gds(enc(lr_img), noise="const")
    total, _ = loss(out, lr_img, gt)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


t, m = timed(ew_step, n=max(2, reps // 2))
rows.append((f"E_W+ training step, batch {ew_batch} ({size}², LR {lr_size}², L_rec)", t, ew_batch / t, m))
write()

# PULSE per image (batch 1): 100 steps = 100 x the median of the timed steps after a warm-up step
for bf16 in (False, True):
    stamps = []
    pulse = PULSE(G, GaussianFit(G.w_dim).to(dev), PULSEConfig(steps=pulse_steps + 2), bf16=bf16)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def stamp(step):
        sync()
        stamps.append(time.perf_counter())

    pulse(torch.rand(1, 3, lr_size, lr_size, device=dev) * 2 - 1, seeds=[0], on_step=stamp)
    step = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    rows.append((f"PULSE per image, {size}², 100 steps, {'bf16 autocast' if bf16 else 'float32'}", 100 * step, 1 / (100 * step), peak))
    write()

if compile_ok:  # last: compilation is the slowest part, and the table so far is already on disk
    try:
        compiled = torch.compile(G.synthesis, **({} if cuda else {"backend": "eager"}))
        generator_rows("float32, torch.compile" + ("" if cuda else " (eager backend)"), compiled)
    except Exception as e:  # report it, keep the rest of the check
        rows.append((f"generator torch.compile: FAILED {type(e).__name__}: {str(e).splitlines()[0][:120]}", float("nan"), float("nan"), float("nan")))
        write()
print(open(out_path).read())
print(f"table written to {out_path}")
PY
status=$?
if [ $status -ne 0 ]; then
  echo "gpu_check: the benchmark part failed or timed out (exit $status); the rows measured so far are in $out" | tee -a "$out" >&2
fi

if [ "$device" != cpu ] && python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "## CUDA-only tests (pytest -m gpu)" | tee -a "$out"
  timeout 100 python -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -n 15 | tee -a "$out"
  tests=${PIPESTATUS[0]}
  [ $status -eq 0 ] && status=$tests
else
  echo "CUDA-only tests (pytest -m gpu): skipped, no CUDA device" | tee -a "$out"
fi
exit $status
