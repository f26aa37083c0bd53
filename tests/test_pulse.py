"""PULSE (Menon et al., CVPR 2020) on StyleGAN2: losses, spheres, the Gaussian fit, per-image ε,
convergence, the CLI and the LightningModule. All on the 64 px port fixture, CPU, one thread."""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch

from lit_propulse.cli import main as cli_main
from lit_propulse.core.batch import SRBatch, collate_sr
from lit_propulse.core.downscale import downscale
from lit_propulse.core.images import load_image, save_image
from lit_propulse.losses.pulse import (
    DownscaleLoss,
    GeoCross,
    PULSELoss,
    geocross,
    pairwise_angles,
)
from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.pulse import (
    PULSE,
    GaussianFit,
    NoiseConfig,
    PULSEConfig,
    SphericalOptimizer,
    SuccessRate,
    default_cache_dir,
    group_success_rates,
    lr_factor,
    noise_resolutions,
    project_to_sphere,
)
from lit_propulse.pulse.fit import CACHE_FILE_MODE
from lit_propulse.pulse.results import image_key

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end-to-end runs: outside `pytest -m "not slow"`

FIX = Path(__file__).parent / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt"


@pytest.fixture(scope="module")
def G():
    return Generator.from_checkpoint(FIX).eval()


@pytest.fixture(scope="module")
def fit(G):
    return GaussianFit.fit(G, num_samples=20_000, seed=0)


@pytest.fixture(scope="module")
def own_samples(G):
    """HR images of the generator itself, scaled into [-1, 1] (the fixture's random weights give a
    wider range), so an LR made from them is reachable up to that global scale."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        img = G(torch.randn(4, G.z_dim, generator=gen), noise=G.synthesis.make_noise(4, gen)).image
    return img / img.abs().amax(dim=(1, 2, 3), keepdim=True)


# ----------------------------------------------------------------------------------------------
# Losses


def test_geocross_is_zero_for_tiled_latents():
    v = torch.randn(3, 1, 16).expand(-1, 7, -1)
    assert torch.allclose(geocross(v), torch.zeros(3), atol=1e-6)
    assert torch.allclose(GeoCross()(v), torch.zeros(3), atol=1e-6)


def test_geocross_hand_computed():
    # e1, e2: θ = π/2 -> Σ_{i<j} θ² = π²/4; scaled vectors have the same angles
    v = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    assert geocross(v).item() == pytest.approx(math.pi**2 / 4, abs=1e-4)
    # official normalisation d/(4k²)·Σ: d = 3, k = 2
    assert GeoCross(normalize=True)(v).item() == pytest.approx(3 / 16 * math.pi**2 / 4, abs=1e-4)
    # three vectors at 0°, 60°, 180°: θ² = (π/3)² + π² + (2π/3)²
    u = torch.tensor([[[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-2.0, 0.0]]])
    assert geocross(u).item() == pytest.approx((1 / 9 + 1 + 4 / 9) * math.pi**2, abs=1e-3)
    # against an independent acos reference on random vectors of different norms
    w = torch.randn(2, 5, 8, dtype=torch.float64) * torch.rand(2, 5, 1, dtype=torch.float64).add(0.5)
    n = w / w.norm(dim=-1, keepdim=True)
    ref = torch.acos((n @ n.transpose(1, 2)).clamp(-1, 1))
    assert torch.allclose(pairwise_angles(w), ref, atol=1e-4)


def test_downscale_loss_units_and_pulse_loss_terms():
    hr = torch.zeros(2, 3, 16, 16)
    lr = torch.zeros(2, 3, 4, 4)
    lr[1] = 0.2  # [-1,1] difference 0.2 -> [0,1] difference 0.1 -> squared 0.01
    assert torch.allclose(DownscaleLoss()(hr, lr), torch.tensor([0.0, 0.01]))
    loss = PULSELoss(downscale_weight=100, geocross_weight=0.05, floor=2e-3)
    total, logs = loss(hr, lr, torch.randn(2, 1, 8).expand(-1, 3, -1))
    assert set(logs) == {"loss/downscale", "loss/geocross", "loss/total"}
    # per image: 100·max(L, ε) + 0.05·~0, summed over the batch
    assert total.item() == pytest.approx(100 * 2e-3 + 100 * 0.01, rel=1e-4)
    assert torch.allclose(logs["loss/downscale"], torch.tensor([0.0, 0.01]))


# ----------------------------------------------------------------------------------------------
# Spheres, schedule, noise layout


def test_latents_and_noise_stay_on_their_spheres():
    lat = torch.randn(3, 4, 32, requires_grad=True)
    noise = torch.randn(3, 1, 8, 8, requires_grad=True)
    opt = SphericalOptimizer([lat, noise], [(-1,), (1, 2, 3)], torch.optim.Adam, lr=0.4)
    target = torch.randn(3, 4, 32)
    for _ in range(5):
        opt.zero_grad()
        ((lat - target).square().sum() + noise.sum()).backward()
        opt.step()
        assert torch.allclose(lat.norm(dim=-1), torch.full((3, 4), math.sqrt(32)), atol=1e-4)
        assert torch.allclose(noise.flatten(1).norm(dim=1), torch.full((3,), 8.0), atol=1e-4)
    assert torch.allclose(project_to_sphere(torch.ones(2, 9), (-1,)).norm(dim=-1), torch.full((2,), 3.0))


def test_lr_schedule_is_the_official_linear1cycledrop():
    f = [lr_factor("linear1cycledrop", s, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[45] == pytest.approx(1.0) and f[90] == pytest.approx(0.1)
    assert f[99] == pytest.approx(0.1 + 0.9 * (1e-3 - 0.1))
    assert max(f) == pytest.approx(1.0) and lr_factor("fixed", 7, 100) == 1.0
    with pytest.raises(ValueError):
        lr_factor("cosine", 0, 10)


def test_noise_layout_maps_stylegan1_defaults(G):
    # 64 px: 9 maps (1 at 4², then 2 per resolution), StyleGAN2 has no noise on the const
    assert noise_resolutions(64) == [4, 8, 8, 16, 16, 32, 32, 64, 64]
    assert len(noise_resolutions(1024)) == 17
    roles = NoiseConfig().roles(G.num_noise)
    assert roles == ["trainable"] * 5 + ["fixed"] * 3 + ["zero"]  # first 5 trainable, last ("17") zeroed
    assert NoiseConfig("zero").roles(3) == ["zero"] * 3
    assert NoiseConfig("fixed", bad_layers=()).roles(3) == ["fixed"] * 3
    with pytest.raises(ValueError, match="out of range"):
        NoiseConfig(bad_layers=(9,)).roles(9)
    with pytest.raises(ValueError, match="exceeds"):
        NoiseConfig(num_trainable=10).roles(9)


# ----------------------------------------------------------------------------------------------
# Gaussian fit and its cache


def test_gaussian_fit_inverts_the_mappings_last_activation(G, fit):
    z = torch.randn(256, G.z_dim)
    with torch.no_grad():
        w = G.mapping(z)
        lat = fit.to_latent(w)
        assert torch.allclose(fit.to_w(lat), w, atol=1e-5 * w.abs().max().item())
        # the fit standardises the pushed-forward distribution
        assert lat.mean().abs() < 0.05 and (lat.std() - 1).abs() < 0.05
    # w has negative entries (the leaky part), so the inversion is not trivially linear
    assert (w < 0).float().mean() > 0.1


def test_gaussian_fit_cache_goes_to_the_cache_dir_not_cwd(G, tmp_path, monkeypatch):
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("LIT_PROPULSE_CACHE", str(cache))
    monkeypatch.chdir(work)
    assert default_cache_dir() == cache / "pulse"
    with monkeypatch.context() as m:  # without the variable: ~/.cache/lit_propulse/pulse
        m.delenv("LIT_PROPULSE_CACHE")
        m.delenv("XDG_CACHE_HOME", raising=False)
        m.setenv("HOME", str(tmp_path / "home"))
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "lit_propulse" / "pulse"
    a = GaussianFit.load_or_fit(G, num_samples=2000, seed=1)
    files = list((cache / "pulse").glob("gaussian_fit_*.pt"))
    assert len(files) == 1 and list(work.iterdir()) == []
    mtime = files[0].stat().st_mtime_ns
    b = GaussianFit.load_or_fit(G, num_samples=2000, seed=1)  # from the cache
    assert files[0].stat().st_mtime_ns == mtime and torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    # another generator (different mapping weights) gets its own file
    G2 = Generator(64, style_dim=G.w_dim, n_mlp=3, channels=G.synthesis.channels)
    GaussianFit.load_or_fit(G2, num_samples=2000, seed=1)
    assert len(list((cache / "pulse").glob("gaussian_fit_*.pt"))) == 2


def test_gaussian_fit_cache_never_touches_the_umask(G, tmp_path, monkeypatch):
    """The cache file gets its mode from os.chmod on the file itself: the process umask (state every
    thread shares) is neither read nor changed, and with a restrictive umask the file is still 0644.
    It is written through a temporary file renamed into place, which is gone afterwards."""
    real_umask = os.umask
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
    before = real_umask(0o077)  # a file that followed this umask would be 0600
    try:
        GaussianFit.load_or_fit(G, tmp_path, num_samples=200, seed=3)
        during = real_umask(0o077)
    finally:
        real_umask(before)
    assert calls == [] and during == 0o077
    (cached,) = tmp_path.iterdir()  # no temporary file left behind
    assert cached.name.startswith("gaussian_fit_") and cached.suffix == ".pt"
    assert stat.S_IMODE(cached.stat().st_mode) == CACHE_FILE_MODE == 0o644


def test_corrupt_or_foreign_gaussian_fit_cache_is_refitted_and_replaced(G, tmp_path):
    a = GaussianFit.load_or_fit(G, tmp_path, num_samples=200, seed=3)
    (cached,) = tmp_path.iterdir()
    for content, message in ((b"not a torch file", "not a readable torch file"), (None, "not a Gaussian fit of this mapping")):
        if content is None:
            torch.save({"mean": torch.zeros(3)}, cached)  # readable, but not a fit of this generator
        else:
            cached.write_bytes(content)
        with pytest.warns(UserWarning, match=message):
            b = GaussianFit.load_or_fit(G, tmp_path, num_samples=200, seed=3)
        assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # replaced: read back without a warning
            c = GaussianFit.load_or_fit(G, tmp_path, num_samples=200, seed=3)
        assert torch.equal(a.mean, c.mean) and [p.name for p in tmp_path.iterdir()] == [cached.name]


# ----------------------------------------------------------------------------------------------
# The search


def test_eps_is_checked_per_image_in_a_batch(G, fit):
    """Items 0-1 get as LR the downscaled image their own initialisation generates (L_DS = 0 at
    step 0), items 2-3 an unreachable random LR: success must be [T, T, F, F]. The official code
    compared the batch sum of the clamped losses (>= 4ε here) with ε and would report none."""
    cfg = PULSEConfig(steps=2, eps=2e-3)
    pulse = PULSE(G, fit, cfg)
    seeds = [11, 12, 13, 14]
    # the step-0 image depends on the seed only, not on the LR
    start = PULSE(G, fit, PULSEConfig(steps=1))(torch.zeros(4, 3, 8, 8), seeds=seeds).image
    lr = downscale(start, 8)
    lr[2:] = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = pulse(lr, seeds=seeds)
    assert res.success.tolist() == [True, True, False, False]
    assert torch.all(res.loss[:2] < 1e-8) and torch.all(res.loss[2:] > cfg.eps)
    assert res.best_step[:2].tolist() == [0, 0]
    assert res.loss.clamp(min=cfg.eps).sum() > cfg.eps  # the official batch check fails


def test_result_of_an_item_does_not_depend_on_its_batch(G, fit, own_samples):
    lr = downscale(own_samples, 8)
    pulse = PULSE(G, fit, PULSEConfig(steps=4))
    both = pulse.sample(lr[:2], 1, keys=[5, 6])
    alone = pulse.sample(lr[1:2], 1, keys=[6])
    assert torch.allclose(both.loss[1], alone.loss[0], rtol=1e-3, atol=1e-6)
    assert torch.allclose(both.image[1], alone.image[0], atol=1e-3)


def test_downscale_loss_falls_tenfold_and_best_is_kept(G, fit, own_samples):
    """LR from the generator's own samples: with the default 100 steps the per-image best L_DS
    falls by more than an order of magnitude; the best iterate (not the last) is returned, latents
    and trainable noise end on their spheres, and the zeroed "bad" noise map stays zero."""
    lr = downscale(own_samples[:2], 8)
    res = PULSE(G, fit, PULSEConfig())(lr, seeds=[1, 2])
    first = res.loss_history[0]
    assert torch.all(res.loss < first / 10), (first, res.loss)
    assert torch.allclose(res.loss, res.loss_history.min(0).values)
    assert torch.equal(res.best_step, res.loss_history.argmin(0))
    # the returned image is the one that scored res.loss
    assert torch.allclose(DownscaleLoss()(res.image, lr), res.loss, rtol=1e-4, atol=1e-7)
    assert torch.allclose(res.latent.norm(dim=-1), torch.full(res.latent.shape[:2], math.sqrt(G.w_dim)), atol=1e-3)
    for i, n in enumerate(res.noise):
        r = n.shape[-1]
        if i < 5:
            assert torch.allclose(n.flatten(1).norm(dim=1), torch.full((2,), float(r)), atol=1e-3)
    assert torch.count_nonzero(res.noise[-1]) == 0
    assert res.ws.shape == (2, G.num_ws, G.w_dim)


def test_one_to_many_and_tiled_latent(G, fit, own_samples):
    lr = downscale(own_samples[:1], 8)
    pulse = PULSE(G, fit, PULSEConfig(steps=2, tile_latent=True))
    res = pulse.sample(lr, 3)
    assert res.latent.shape == (3, 1, G.w_dim) and len(set(res.seeds)) == 3
    assert not torch.allclose(res.image[0], res.image[1])  # different initialisations
    assert torch.allclose(res.ws[:, 0:1].expand_as(res.ws), res.ws)  # tiled: one w for every layer
    assert not torch.equal(res.noise[0][0], res.noise[0][1])  # resampled noise
    again = pulse.sample(lr, 3)
    assert torch.equal(again.image, res.image)  # seeded


def test_degraded_lr_reports_loss_against_clean_lr(G, fit, own_samples):
    from datamodules.degradations import Degradation, GaussianNoise, degrade_lr

    hr = own_samples[:2]
    clean = downscale(hr, 8)
    noisy = degrade_lr(hr, 8, [Degradation([GaussianNoise(0.4)])], generator=torch.Generator().manual_seed(0))
    res = PULSE(G, fit, PULSEConfig(steps=3))(noisy, clean_lr=clean)
    assert res.loss_clean is not None and res.loss_clean.shape == (2,)
    assert torch.allclose(res.loss_clean, DownscaleLoss()(res.image, clean), rtol=1e-4)


def test_success_metric_and_group_rates(tmp_path):
    m = SuccessRate()
    m.update(torch.tensor([True, False]))
    m.update(torch.tensor([True, True]))
    assert m.compute().item() == pytest.approx(0.75)
    groups = tmp_path / "groups.csv"
    groups.write_text("name,race,gender\na.png,X,f\nb,Y,m\nc.jpg,X,m\n")
    rates = group_success_rates(["a", "a", "b", "c", "d"], [True, False, True, False, True], groups)
    got = {(g.column, g.label): (g.successes, g.n) for g in rates}
    assert got[("race", "X")] == (1, 3) and got[("race", "Y")] == (1, 1)
    assert got[("gender", "f")] == (1, 2) and got[("race", "<unlabelled>")] == (1, 1)
    # names match with or without any image extension, in any case; other suffixes are kept
    assert [image_key(n) for n in ("a.png", "dir/a.WEBP", "a.JPeG", "a", "a.txt")] == ["a", "a", "a", "a", "a.txt"]


# ----------------------------------------------------------------------------------------------
# CLI


def _write_inputs(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_image(img, folder / f"face{i}.png")


def test_cli_writes_what_it_promises(G, own_samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIT_PROPULSE_CACHE", str(tmp_path / "cache"))
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_inputs(inp, own_samples[:2])
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # reported and skipped
    groups = tmp_path / "groups.csv"
    groups.write_text("name,group\nface0.png,A\nface1.png,B\n")
    code = cli_main(
        [
            "pulse",
            "--generator",
            str(FIX),
            "--input",
            str(inp),
            "--output",
            str(out),
            "--lr-size",
            "8",
            "--samples",
            "2",
            "--steps",
            "3",
            "--batch-size",
            "3",
            "--save-steps",
            "2",
            "--fit-samples",
            "2000",
            "--groups",
            str(groups),
            "--degrade",
            "gauss:25",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "broken.png" in captured.err
    summary_line = [ln for ln in captured.out.splitlines() if ln.startswith("PULSE:") and "success" in ln]
    assert summary_line and "searches within eps=0.002" in summary_line[0] and "1 file(s) skipped" in summary_line[0]
    for name in ("face0", "face1"):
        for s in (0, 1):
            hr = load_image(out / f"{name}_{s}.png")
            assert hr.shape == (3, 64, 64)
            assert sorted(p.name for p in (out / "steps" / f"{name}_{s}").iterdir()) == ["0000.png", "0002.png"]
        assert load_image(out / "lr" / f"{name}.png").shape == (3, 8, 8)
        report = json.loads((out / "reports" / f"{name}.json").read_text())
        assert [s["sample"] for s in report["samples"]] == [0, 1]
        assert {"loss", "loss_clean", "success", "best_step", "time_s", "seed"} <= set(report["samples"][0])
        assert report["degraded_vs_clean"] > 0  # gauss:25 moved the LR away from the clean one
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["sample"]) for r in rows] == [("face0", "0"), ("face0", "1"), ("face1", "0"), ("face1", "1")]
    assert set(rows[0]) >= {"name", "sample", "loss", "success", "steps", "time_s", "loss_clean"}
    assert all(r["steps"] == "3" and r["success"] in ("True", "False") for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["searches"] == 4 and len(summary["skipped"]) == 1
    assert {(g["column"], g["label"], g["n"]) for g in summary["groups"]} == {("group", "A", 2), ("group", "B", 2)}
    assert (out / "groups.csv").is_file()


def test_cli_as_lr_and_size_rules(G, own_samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIT_PROPULSE_CACHE", str(tmp_path / "cache"))
    inp = tmp_path / "in"
    save_image(downscale(own_samples[:1], 16)[0], inp / "small16.png")
    save_image(downscale(own_samples[1:2], 4)[0], inp / "tiny4.png")
    base = ["pulse", "--generator", str(FIX), "--input", str(inp), "--steps", "1", "--fit-samples", "2000"]
    assert cli_main(base + ["--output", str(tmp_path / "a"), "--lr-size", "8"]) == 0
    out = capsys.readouterr()
    assert "tiny4.png: 4x4 is smaller than --lr-size 8" in out.err and "made LR with DS" in out.out
    assert load_image(tmp_path / "a" / "lr" / "small16.png").shape == (3, 8, 8)  # 16 px made LR by DS
    assert cli_main(base + ["--output", str(tmp_path / "b"), "--as-lr"]) == 0  # each image is its own LR
    assert load_image(tmp_path / "b" / "lr" / "small16.png").shape == (3, 16, 16)
    assert load_image(tmp_path / "b" / "lr" / "tiny4.png").shape == (3, 4, 4)
    with open(tmp_path / "b" / "results.csv") as fh:
        assert sorted(r["name"] for r in csv.DictReader(fh)) == ["small16", "tiny4"]


@pytest.mark.parametrize("case", ["missing", "empty", "only_bad"])
def test_cli_bad_input_folder_gives_a_clear_message(tmp_path, monkeypatch, capsys, case):
    monkeypatch.setenv("LIT_PROPULSE_CACHE", str(tmp_path / "cache"))
    inp = tmp_path / "in"
    if case != "missing":
        inp.mkdir()
        (inp / "notes.txt").write_text("not an image")
    if case == "only_bad":
        (inp / "a.png").write_bytes(b"")
        (inp / "b.jpg").write_bytes(b"garbage")
    code = cli_main(
        ["pulse", "--generator", str(FIX), "--input", str(inp), "--output", str(tmp_path / "out"), "--lr-size", "8", "--steps", "1", "--fit-samples", "2000"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    expected = {"missing": "does not exist", "empty": "holds no images", "only_bad": "no usable images"}[case]
    assert expected in err and str(inp) in err
    if case == "only_bad":
        assert "a.png: empty file" in err and "b.jpg" in err


def test_cli_checks_the_output_folder_before_loading_the_generator(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    save_image(torch.zeros(3, 16, 16), inp / "a.png")
    out.write_text("a file where the output folder should go")
    code = cli_main(["pulse", "--generator", str(tmp_path / "missing.pt"), "--input", str(inp), "--output", str(out), "--lr-size", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--output" in err and "is not a folder" in err and "missing.pt" not in err  # no model was loaded


def test_cli_help_works(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["pulse", "--help"])
    assert e.value.code == 0 and "--tile-latent" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# LightningModule


def test_pulse_module_test_and_predict(G, fit, own_samples):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lit_propulse.modules.pulse_module import PULSEModule

    hr = own_samples[:3]
    lr = downscale(hr, 8)
    items = [{"hr": hr[i], "lr": lr[i], "index": i, "name": f"x{i}"} for i in range(3)]
    loader = DataLoader(items, batch_size=2, collate_fn=collate_sr)
    module = PULSEModule(G, PULSEConfig(steps=2, eps=1e6), num_samples=2, gaussian_fit=fit)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    (metrics,) = trainer.test(module, loader, verbose=False)
    assert metrics["test/pulse/success_rate"] == pytest.approx(1.0)  # eps = 1e6: everything succeeds
    assert "test/pulse/loss_ds" in metrics
    preds = trainer.predict(module, loader)
    assert [len(p["result"]) for p in preds] == [4, 2] and preds[1]["name"] == ["x2"]
    # seeds come from the dataset index: the same item gives the same result in another batch
    single = module.search(SRBatch(hr=hr[2:], lr=lr[2:], index=torch.tensor([2]), name=["x2"]))
    assert torch.allclose(single.image, preds[1]["result"].image, atol=1e-4)


@pytest.mark.gpu
def test_pulse_runs_on_the_generators_device(G, fit, own_samples):
    import copy

    Gc = copy.deepcopy(G).to("cuda")
    res = PULSE(Gc, copy.deepcopy(fit).to("cuda"), PULSEConfig(steps=3))(downscale(own_samples[:2], 8))
    assert res.image.device.type == "cuda" and res.success.device.type == "cuda"
    cpu = PULSE(G, fit, PULSEConfig(steps=3))(downscale(own_samples[:2], 8))
    assert torch.allclose(res.loss_history[0].cpu(), cpu.loss_history[0], rtol=1e-3)
