"""The performance tooling runs: the GPU check's CPU fallback, the side-by-side harness (its port
import with the CUDA-op loaders stubbed), the cost ladder, and PULSE's bf16 option. No timing is
asserted anywhere: the development machine is shared, only the figures' plumbing is checked."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.pulse import PULSE, GaussianFit, PULSEConfig

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_gpu_check_cpu_fallback(tmp_path):
    """``benchmarks/gpu_check.sh --cpu`` runs every row at tiny sizes and writes the table."""
    out = tmp_path / "gpu_check.md"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert "CPU fallback" in text
    for row in (
        "float32, channels_last: forward |",
        "float32, channels_last: forward+backward |",
        "bf16 autocast, channels_last: forward+backward |",
        "float32, NCHW: forward |",
        "torch.compile (eager backend): forward+backward |",
        "E_W+ training step, batch 2",
        "PULSE per image, 32², 100 steps, float32",
        "PULSE per image, 32², 100 steps, bf16 autocast",
        "forward+backward / forward =",
        "pytest -m gpu): skipped, no CUDA device",
    ):
        assert row in text, row
    assert "FAILED" not in text


_FAKE_PORT_MODEL = '''
import torch
from torch.utils.cpp_extension import load  # the port's op/ modules do this at import time

fused = load("fused", sources=["fused_bias_act.cpp", "fused_bias_act_kernel.cu"])  # must be stubbed

from lit_propulse.networks.checkpoints import port_to_ours
from lit_propulse.networks.stylegan2 import Generator as _Ours


class Generator(torch.nn.Module):
    """Port-shaped stand-in: the port's constructor, state-dict keys and call convention."""

    def __init__(self, size, style_dim, n_mlp, channel_multiplier=2):
        super().__init__()
        self._g = _Ours(size, style_dim, n_mlp, channel_multiplier=channel_multiplier)

    def load_state_dict(self, state, strict=True):
        return self._g.load_state_dict({**port_to_ours(state), "latent_avg": self._g.latent_avg, "has_latent_avg": self._g.has_latent_avg}, strict=strict)

    def forward(self, styles, input_is_latent=False, noise=None):
        assert input_is_latent and len(styles) == 1
        return self._g.synthesis(styles[0], noise=noise).image, None
'''


def test_side_by_side_against_a_port_checkout(tmp_path, monkeypatch):
    """The port's columns: imported from STYLEGAN2_PORT_DIR with torch.utils.cpp_extension.load stubbed
    (a real call would try to compile CUDA here), the weights handed over in the port's layout."""
    port = tmp_path / "port"
    (port / "op").mkdir(parents=True)
    (port / "op" / "__init__.py").write_text("")
    (port / "model.py").write_text(_FAKE_PORT_MODEL)
    import torch.utils.cpp_extension as cpp

    real = cpp.load
    sbs = _load("side_by_side")
    monkeypatch.setenv("STYLEGAN2_PORT_DIR", str(port))
    text = sbs.main(["--sizes", "8", "--batch", "2", "--rounds", "1", "--out", str(tmp_path / "sbs.md")])
    assert cpp.load is real  # restored after the import
    assert "port fwd+bwd (s)" in text and "| 8², 2, float32 |" in text and "| 8², 2, bf16 autocast |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 8², 2, float32"))
    assert float(row.rstrip(" |").split("|")[-1]) == 0.0  # same weights, same code: identical images
    bf16_row = next(line for line in text.splitlines() if line.startswith("| 8², 2, bf16 autocast"))
    assert float(row.split("|")[7]) == 0.0 and float(bf16_row.split("|")[7]) > 0  # ours bf16 vs ours float32: bf16 really ran
    assert (tmp_path / "sbs.md").read_text().strip() == text.strip()
    monkeypatch.setenv("STYLEGAN2_PORT_DIR", str(tmp_path))  # not a checkout: one clear message
    with pytest.raises(SystemExit, match="not a rosinality/stylegan2-pytorch checkout"):
        sbs.main(["--sizes", "8", "--rounds", "1"])


@pytest.mark.slow
def test_cost_ladder_rows(tmp_path):
    ladder = _load("cost_ladder")
    text = ladder.main(["--sizes", "16", "--pulse-steps-timed", "1", "--no-training", "--out", str(tmp_path / "l.md")])
    assert "| 16² (8²) |" in text and "PULSE per image = 100 x the median" in text
    assert ladder.toy_training_img_s(bf16=True, channels_last=True, batches=1, warmup=1, batch=4, size=16) > 0


@pytest.mark.slow
def test_cost_ladder_training_and_bf16_sections():
    """The training section interleaves all four option combinations and reports them against the
    all-off baseline; the bf16 section runs PULSE and the E_W+ stage in both precisions on the
    packaged toy generator and reports finite losses (3 PULSE steps, 1 training step: plumbing only)."""
    ladder = _load("cost_ladder")
    rows = ladder.training(batches=1, rounds=1, size=16)
    table = [r for r in rows if r.startswith("| ") and "img/s" not in r]
    assert [r.split("|")[1].strip() for r in table] == ["float32, NCHW", "float32, channels_last", "bf16 autocast, NCHW", "bf16 autocast, channels_last"]
    assert table[0].rstrip(" |").endswith("1.00x")
    pulse = ladder.pulse_bf16(images=1, rounds=1, steps=3)
    assert "3 steps, 1 images in one batch" in pulse[0]
    lds = next(r for r in pulse if r.startswith("| final L_DS, re-scored")).split("|")[2:4]
    assert all(0 < float(v) < 1 for v in lds)
    enc = ladder.encoder_stage_bf16(steps=1, rounds=1, batch=2, warmup=1)
    first = next(r for r in enc if r.startswith("| training L_rec, first step")).split("|")[2:4]
    assert float(first[0]) == pytest.approx(float(first[1]), rel=0.05)  # same seed, same batch: bf16 only rounds
    assert "max relative L_rec deviation over the 2 steps" in "\n".join(enc)


def _tiny_pulse_setup():
    torch.manual_seed(0)
    G = Generator(32, 16, 1, channels={4: 16, 8: 16, 16: 8, 32: 8}).eval()
    fit = GaussianFit(G.w_dim)
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    return G, fit, lr


def test_pulse_bf16_option_and_the_generator_left_as_it_was():
    """PULSE(bf16=True) searches with the generator under bf16 autocast and reports float32 results
    close to the float32 search; the search runs G frozen (the generator's fast backward) and
    hands it back with its parameters' requires_grad as they were."""
    G, fit, lr = _tiny_pulse_setup()
    G.synthesis.to_rgb1.bias.requires_grad_(False)  # a mixed state, restored exactly
    before = {n: p.requires_grad for n, p in G.named_parameters()}
    seen = []
    G.synthesis.conv1.register_forward_hook(lambda m, i, o: seen.append(any(p.requires_grad for p in G.parameters())))
    res32 = PULSE(G, fit, PULSEConfig(steps=4))(lr, seeds=[1, 2])
    res16 = PULSE(G, fit, PULSEConfig(steps=4), bf16=True)(lr, seeds=[1, 2])
    assert {n: p.requires_grad for n, p in G.named_parameters()} == before
    assert seen and not any(seen)  # frozen while searching
    assert res16.image.dtype == torch.float32 and res16.loss.dtype == torch.float32
    assert torch.isfinite(res16.loss).all()
    assert torch.allclose(res16.loss, res32.loss, rtol=0.1, atol=1e-3)
    assert not torch.equal(res16.image, res32.image)  # bf16 really ran
    assert PULSE.from_generator.__defaults__[-1] is False and PULSE(G, fit).bf16 is False  # off by default


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_ship_toy_exports_checks_float16_and_the_budget(stage_exports, tmp_path, monkeypatch, capsys):
    """benchmarks/ship_toy_exports.py: float16 copies that load into the float32 networks and give
    nearly the same outputs; refused (nothing written) over the tolerance or the size budget, or
    without finished exports."""
    import shutil

    from lit_propulse.core.weights import safe_load
    from lit_propulse.inference import ProPulseUpsampler
    from lit_propulse.runs import mark_done

    ship = _load("ship_toy_exports")
    run = tmp_path / "run"
    shutil.copytree(stage_exports, run)
    data = tmp_path / "data"
    data.mkdir()
    (data / "other.pt").write_bytes(b"x" * 1000)
    monkeypatch.setattr(ship, "DATA", data)
    assert ship.main([str(run), "--num", "4"]) == 2 and "no finished gds export" in capsys.readouterr().err
    for f in ("gds/gds.pt", "ew/ew.pt", "ewplus/ewplus.pt"):
        mark_done(run / f)
    assert ship.main([str(run), "--num", "4", "--tolerance", "0"]) == 1 and "not shipped" in capsys.readouterr().err
    assert ship.main([str(run), "--num", "4", "--budget-mb", "0.001"]) == 1 and "--budget-mb" in capsys.readouterr().err
    assert ship.main([str(run), "--num", "4", "--dry-run"]) == 0 and sorted(p.name for p in data.iterdir()) == ["other.pt"]
    assert ship.main([str(run), "--num", "4"]) == 0
    out = capsys.readouterr().out
    assert "| Pro-PULSE |" in out and "all shipped weights" in out
    shipped = {k: data / f"toy_{k}_64.pt" for k in ("gds", "ew", "ewplus")}
    state = safe_load(shipped["ewplus"], "test")["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert shipped["ewplus"].stat().st_size < 0.6 * (run / "ewplus" / "ewplus.pt").stat().st_size
    up16 = ProPulseUpsampler.from_files(shipped["gds"], shipped["ewplus"], shipped["ew"])
    up32 = ProPulseUpsampler.from_files(run / "gds" / "gds.pt", run / "ewplus" / "ewplus.pt", run / "ew" / "ew.pt")
    assert up16.scale == up32.scale == 32 and next(up16.encoder.parameters()).dtype == torch.float32
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        a, b = up32(lr).image, up16(lr).image
    assert 0 < float((a - b).abs().max()) < 0.02


def test_toy_generator_pyramid_levels(capsys):
    """benchmarks/toy_generator_pyramid.py: a constant image has all its energy at the coarsest level
    (analytic), low-passing removes what is finer than r, and both tables run on the port fixture generator."""
    from tests.helpers import PORT_G64

    pyr = _load("toy_generator_pyramid")
    levels = pyr.pyramid(torch.full((2, 3, 64, 64), 0.5), [4, 8, 16, 32, 64])
    assert levels[4] == pytest.approx(0.5, abs=1e-6) and all(levels[r] < 1e-6 for r in (8, 16, 32, 64))
    skips = {4: torch.ones(1, 3, 4, 4), 8: torch.ones(1, 3, 8, 8) * 3}
    assert pyr.contributions(skips) == pytest.approx({4: 1.0, 8: 2.0})
    # low-passing to r keeps what is coarser than r: a 1-px checkerboard (amplitude 1) vanishes but for
    # the bicubic kernel's edge effects, a constant stays
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 2.0 - 1
    checker = checker.expand(2, 3, 64, 64)
    assert pyr.low_pass(checker, 32).abs().max() < 0.03 and pyr.low_pass(checker, 64).equal(checker)
    assert pyr.low_pass(torch.full((1, 3, 64, 64), 0.3), 16) == pytest.approx(torch.full((1, 3, 64, 64), 0.3), abs=1e-6)
    assert pyr.main([str(PORT_G64), "--num", "4", "--fid", "8"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint.pt: RGB contribution" in out and "real test faces: pyramid" in out
    assert "| checkpoint.pt | " in out and "| real train faces (floor) | " in out and "≤ 32²" in out


def test_toy_generator_pyramid_grain(tmp_path, capsys):
    """benchmarks/toy_generator_pyramid.py --grain: a flat image is all flat pixels; faint detail painted
    only into the outer frame is counted there and vanishes when the frame is replaced; the table runs."""
    from tests.helpers import PORT_G64

    pyr = _load("toy_generator_pyramid")
    flat = torch.full((2, 3, 64, 64), 0.2)
    assert pyr.grain(flat) == {"flat": 1.0, "faint": 0.0, "faint_in_frame": 0.0}
    # a 1-px checkerboard of amplitude 0.02 (its 3×3 detail: 0.02 · 8/9 or 10/9, all faint) in the frame only
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 0.04 - 0.02).expand(2, 3, 64, 64)
    framed = flat + checker * pyr.frame(64)
    g = pyr.grain(framed)
    assert g["faint_in_frame"] == 1.0 and 0.15 < g["faint"] < 0.2 and g["flat"] + g["faint"] == pytest.approx(1.0)
    assert pyr.without_frame(framed).equal(flat)
    assert pyr.frame(64).float().mean() == pytest.approx(1 - 58**2 / 64**2)
    assert pyr.main([str(PORT_G64), "--num", "4", "--grain", "8"]) == 0
    out = capsys.readouterr().out
    assert "faint pixels in the frame" in out and "| checkpoint.pt (g_ema samples) | " in out and "| real test faces | " in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| real test faces") and line.count("|") == 9}
    # the noise controls: clean faces scored against themselves (0), σ 0.02 fewer flat pixels than σ 0.01, a D logit each
    assert float(rows["real test faces"][3]) == 0.0 and float(rows["real test faces + noise σ 0.02"][0]) < float(rows["real test faces + noise σ 0.01"][0])
    assert all(r[5].strip() != "—" and r[6].strip() != "—" for r in rows.values())
    assert all(abs(float(r[5]) - float(r[6])) < 0.1 for r in rows.values())  # bf16 autocast: near the float32 logit
    # a generator-only export (no "d"): the table still runs, without the D column
    ckpt = torch.load(PORT_G64, map_location="cpu", weights_only=False)
    g_only = tmp_path / "g_only.pt"
    torch.save({"g_ema": ckpt["g_ema"], "latent_avg": ckpt["latent_avg"]}, g_only)
    assert pyr.main([str(g_only), "--num", "4", "--grain", "8"]) == 0
    out = capsys.readouterr().out
    assert "no discriminator in the first file" in out and "| g_only.pt (g_ema samples) | " in out and out.rstrip().endswith("| — | — |")


def test_toy_generator_curve_keeps_earlier_rows(tmp_path, monkeypatch, capsys):
    """benchmarks/toy_generator_curve.py --earlier: the rows of earlier calls stay in the table, the
    plot and the CSV (marked), and a kimg measured again replaces its earlier row."""
    import shutil

    from tests.helpers import PORT_G64

    curve = _load("toy_generator_curve")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(PORT_G64, run / "stylegan2-kimg_00016.pt")
    earlier = tmp_path / "earlier.csv"
    earlier.write_text('kimg,toy_fid,max_gap,largest_gaps\n8.0,200.0,50.0,"Bangs +50.0"\n16.0,999.0,1.0,"old"\n')
    argv = ["x", str(run), "--num", "8", "--out", str(tmp_path / "out"), "--earlier", str(earlier), "--noise-control", "0", "0.5"]
    monkeypatch.setattr(sys, "argv", argv)
    curve.main()
    rows = curve.read_rows(tmp_path / "out" / "toy_generator_curve.csv")
    assert [r[0] for r in rows] == [8.0, 16.0] and rows[0][1] == 200.0 and rows[1][1] != 999.0
    table = (tmp_path / "out" / "toy_generator_curve.md").read_text()
    assert "| 8 (earlier call) | 200.0 |" in table and "| 16 | " in table
    # the noise controls: σ 0 is the clean faces against themselves (toy-FID 0); σ 0.5 is far from them
    controls = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in table.splitlines() if "control:" in line}
    assert controls["control: real test faces + noise σ 0"] < 0.5 < 10 < controls["control: real test faces + noise σ 0.5"]
    assert len(rows) == 2  # the controls stay out of the CSV and the plot
    assert (tmp_path / "out" / "toy_generator_curve.png").is_file()


def test_toy_generator_curve_noise_modes_and_weight_average(tmp_path, monkeypatch, capsys):
    """benchmarks/toy_generator_curve.py --noise/--average: the average of two files is their weights'
    mean; the average of identical files scores as they do (with no noise inputs: deterministic)."""
    import shutil

    from tests.helpers import PORT_G64

    curve = _load("toy_generator_curve")
    ckpt = torch.load(PORT_G64, map_location="cpu", weights_only=False)
    shifted = {**ckpt, "g_ema": {k: v + 1.0 if v.is_floating_point() else v for k, v in ckpt["g_ema"].items()}}
    torch.save(shifted, tmp_path / "shifted.pt")
    mean = curve.averaged([str(PORT_G64), str(tmp_path / "shifted.pt")]).port_state_dict()
    key = next(k for k, v in ckpt["g_ema"].items() if v.is_floating_point() and "noise" not in k)
    assert torch.allclose(mean[key], ckpt["g_ema"][key].float() + 0.5, atol=1e-6)
    G = curve.Generator.from_checkpoint(PORT_G64).eval()
    assert curve.samples(G, 4, noise="none").equal(curve.samples(G, 4, noise="none"))
    assert not curve.samples(G, 4, noise="random").equal(curve.samples(G, 4, noise="none"))
    run = tmp_path / "run"
    run.mkdir()
    for k in (16, 32):
        shutil.copy(PORT_G64, run / f"stylegan2-kimg_{k:05d}.pt")
    monkeypatch.setattr(sys, "argv", ["x", str(run), "--num", "8", "--noise", "none", "--average"])
    curve.main()
    table = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and "kimg" not in line and "---" not in line
    }
    assert table["mean weights of the 16–32 snapshots"] == pytest.approx(table["16"], abs=1e-3) and table["16"] == pytest.approx(table["32"], abs=1e-3)


def test_toy_generator_curve_score_spread(monkeypatch, capsys):
    """benchmarks/toy_generator_curve.py --scores: the bins, mean, confident share and per-hair
    frequency of a stub classifier whose scores are known (analytic); the table runs on the fixture."""
    from tests.helpers import PORT_G64

    curve = _load("toy_generator_curve")
    A, bangs, gray = len(curve.TOY_ATTRIBUTES), curve.TOY_ATTRIBUTES.index("Bangs"), curve.TOY_ATTRIBUTES.index("Gray_Hair")

    class Stub:  # Bangs score = the image's first pixel; Gray_Hair = its second; all else 0
        def scores(self, x):
            s = torch.zeros(len(x), A)
            s[:, bangs], s[:, gray] = x[:, 0, 0, 0], x[:, 0, 0, 1]
            return s

    images = torch.zeros(5, 3, 2, 2)
    images[:, 0, 0, 0] = torch.tensor([0.0, 0.1, 0.6, 0.97, 1.0])
    images[:, 0, 0, 1] = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    sp = curve.score_spread(curve.scores_of(images, Stub()), "Bangs")
    assert sp["counts"] == [1, 1, 0, 1, 0, 2] and sp["mean"] == pytest.approx(2.67 / 5) and sp["confident"] == pytest.approx(3 / 5)
    assert sp["beside"]["Gray_Hair"] == pytest.approx(1 / 3) and math.isnan(sp["beside"]["Blond_Hair"])
    with pytest.raises(SystemExit):
        monkeypatch.setattr(sys, "argv", ["x", str(PORT_G64), "--num", "8", "--scores", "Fringe"])
        curve.main()
    assert "not a toy attribute" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["x", str(PORT_G64), "--num", "8", "--scores", "Bangs"])
    curve.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| real test faces |") or line.endswith("|") and " kimg samples |" in line]
    assert "| Bangs score | 0–0.05 |" in out and len(rows) == 2
    assert all(sum(int(c) for c in r.split("|")[2:8]) == 8 for r in rows)  # every image in one bin
