"""The paper setting as a user runs it (issue 14): the critic's own file and its preflight, E2E as
Sec. IV-G describes it, one ε for PULSE's search and its success rate, runtime at batch 1 and
throughput, the FLOPs convention, no E_W call at the full scale, the losses' printed normalisation,
PULSE "as published", and the report check the Table II grid relies on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.files import missing_files
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.weights import load_module
from lit_propulse.evaluation import BicubicMethod, EvaluationModule, MetricSuite, PULSEMethod, SRMethod
from lit_propulse.evaluation.methods import count_flops
from lit_propulse.evaluation.module import runtime_summary, time_single_images
from lit_propulse.evaluation.report import missing_metrics
from lit_propulse.inference import ProPulseUpsampler, encode_ws
from lit_propulse.losses.propulse import EncoderLoss, GdsLoss, MultiScaleReconstructionLoss, SidePerceptualLoss, SidePixelLoss
from lit_propulse.losses.pulse import GeoCross, pairwise_angles
from lit_propulse.modules.propulse import EWModule, EWPlusModule, gds_export_path
from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator, load_gds
from lit_propulse.networks.stylegan2 import Discriminator, Generator
from lit_propulse.pulse import PULSE, GaussianFit, PULSEConfig

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parents[1]
FIX = str(ROOT / "tests" / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt")
TOY = ROOT / "experiments" / "toy"
D_PATH = "model.init_args.discriminator.init_args.path"


def _batch(n: int = 2, size: int = 64, lr: int = 8) -> SRBatch:
    g = torch.Generator().manual_seed(n)
    hr = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    from lit_propulse.core.downscale import downscale

    return SRBatch(hr=hr, lr=downscale(hr, lr), index=torch.arange(n), name=[f"i{i}" for i in range(n)])


def _converter_layout(path: Path) -> Path:
    """The fixture generator in the converter's layout without --disc: {"g_ema", "latent_avg"} only."""
    ck = torch.load(FIX, map_location="cpu", weights_only=True)
    torch.save({"g_ema": ck["g_ema"], "latent_avg": ck["latent_avg"]}, path)
    return path


# -- 2. the critic's own file, checked before anything is built ----------------------------------


def _d_config(path: str) -> dict:
    return {"model": {"init_args": {"discriminator": {"class_path": "lit_propulse.networks.checkpoints.load_discriminator", "init_args": {"path": path}}}}}


def test_preflight_reports_a_critic_file_without_d_and_where_to_get_one(tmp_path):
    conv = _converter_layout(tmp_path / "stylegan2-ffhq-config-f.pt")
    (line,) = missing_files(_d_config(str(conv)))
    assert line.startswith(f"{D_PATH} = {conv}: exists but holds no discriminator under key 'd'")
    assert "['g_ema', 'latent_avg']" in line and "--disc" in line and "trainer checkpoint" in line
    assert missing_files(_d_config(FIX)) == []  # a trainer-layout file with "d"
    (line,) = missing_files(_d_config(str(tmp_path / "none.pt")))
    assert ": missing;" in line and "--disc" in line
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (line,) = missing_files(_d_config(str(tmp_path / "junk.pt")))
    assert "not a readable torch file" in line


def test_cli_stops_before_building_when_the_critic_file_has_no_d(tmp_path, capsys):
    """An encoder stage given the converter's {g_ema, latent_avg} file as its critic stops in the
    preflight with one error listing it (no traceback, nothing built, no run directory)."""
    from lit_propulse.cli import main

    gds = DeeplySupervisedGenerator(Generator.from_checkpoint(FIX), lr_size=8, head_hidden=(8, 8))
    gds.save(tmp_path / "gds.pt")
    conv = _converter_layout(tmp_path / "g_only.pt")
    run = tmp_path / "run"
    code = main(
        [
            "fit",
            "--config",
            str(TOY / "ew.yaml"),
            "--model.init_args.gds.init_args.path",
            str(tmp_path / "gds.pt"),
            "--model.init_args.encoder.init_args.w_dim",
            "64",
            f"--{D_PATH}",
            str(conv),
            "--trainer.default_root_dir",
            str(run),
            "--trainer.logger.init_args.save_dir",
            str(run),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert "g_only.pt: exists but holds no discriminator" in err and "--disc" in err
    assert not (run / "checkpoints").exists()


# -- 4(a). E2E: no G_ds stage; the branches train under Eq. (1) with E_W, then with E_W+ ------------


class _TinyVGG(nn.Module):
    """A frozen stand-in for VGG-16 conv4_2 (8 channels at 1/2 resolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.requires_grad_(False)

    def forward(self, x):
        return self.conv(x)


def _fit(module: pl.LightningModule, steps: int, root: Path) -> None:
    from datamodules.toy_faces import ToyFacesDataModule

    dm = ToyFacesDataModule(hr_size=64, lr_size=8, num_train=8, num_test=4, batch_size=2, val_subset=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=dm)


def _heads(gds) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in gds.heads.state_dict().items()}


def test_e2e_trains_the_branches_with_e_w_then_with_e_w_plus(tmp_path):
    torch.manual_seed(0)
    G = Generator.from_checkpoint(FIX)
    # stage 1 of E2E: fresh branches on the plain StyleGAN2 (no G_ds stage), trained with E_W under Eq. (1) + Eq. (5)
    gds = DeeplySupervisedGenerator(G, lr_size=8, head_hidden=(8, 8))
    fresh = _heads(gds)
    ew = EWModule(
        EWEncoder(8, G.w_dim, G.num_ws, channels=8, num_groups=1, rcabs_per_group=1, out_channels=16, reduction=4),
        gds,
        EncoderLoss(1.0, 0.0, 0.01),
        discriminator=Discriminator.from_checkpoint(FIX),
        train_side_heads=True,
        gds_loss=GdsLoss(lambda_pp=1.0, vgg=_TinyVGG()),
    )
    _fit(ew, 2, tmp_path)
    after_ew = _heads(gds)
    assert any(not torch.equal(fresh[k], after_ew[k]) for k in fresh), "the branches did not train with E_W"
    ckpt = {"state_dict": ew.state_dict()}
    ew.on_save_checkpoint(ckpt)
    assert not any(k.startswith(("gds_loss.pp.", "gds.generator.")) for k in ckpt["state_dict"]), "frozen VGG/StyleGAN2 leaked into checkpoints"
    assert any(k.startswith("gds.heads.") for k in ckpt["state_dict"])
    ew.export(str(tmp_path / "e2e_ew.pt"))
    assert gds_export_path(tmp_path / "e2e_ew.pt") == str(tmp_path / "e2e_ew_gds.pt")
    co_trained = load_gds(str(tmp_path / "e2e_ew_gds.pt"))
    assert all(torch.equal(co_trained.heads.state_dict()[k], v) for k, v in after_ew.items())

    # stage 2 of E2E: the same branches keep training with E_W+, guided by the E2E E_W (not one trained on a frozen G_ds)
    e2e_ew = load_module(tmp_path / "e2e_ew.pt", EWEncoder)
    plus = EWPlusModule(
        EWPlusEncoder(8, G.w_dim, G.num_ws, scales=[16, 32, 64], channels=8, rcabs_per_branch=1, out_channels=16, reduction=4),
        co_trained,
        EncoderLoss(1.0, 0.0, 0.01),
        ew_encoder=e2e_ew,
        discriminator=Discriminator.from_checkpoint(FIX),
        train_side_heads=True,
        gds_loss=GdsLoss(lambda_pp=1.0, vgg=_TinyVGG()),
    )
    plus.set_active_scale(16)
    _fit(plus, 2, tmp_path)
    assert any(not torch.equal(after_ew[k], v) for k, v in _heads(co_trained).items()), "the branches did not keep training with E_W+"
    plus.export(str(tmp_path / "e2e.pt"))
    assert (tmp_path / "e2e_gds.pt").is_file()
    up = ProPulseUpsampler.from_files(tmp_path / "e2e_gds.pt", tmp_path / "e2e.pt", ew=tmp_path / "e2e_ew.pt")
    assert up(_batch(1).lr).image.shape == (1, 3, 64, 64)


def test_a_stage_with_frozen_branches_writes_no_gds(tmp_path):
    G = Generator.from_checkpoint(FIX)
    m = EWModule(
        EWEncoder(8, G.w_dim, G.num_ws, channels=8, num_groups=1, rcabs_per_group=1, out_channels=16, reduction=4),
        DeeplySupervisedGenerator(G, lr_size=8, head_hidden=(8, 8)),
        EncoderLoss(1.0, 0.0, 0.0),
    )
    m.export(str(tmp_path / "ew.pt"))
    assert (tmp_path / "ew.pt").is_file() and not (tmp_path / "ew_gds.pt").exists()


# -- 4(b). one ε -----------------------------------------------------------------------------------


def test_the_evaluation_gives_pulse_the_metric_suites_eps(tmp_path):
    pulse = PULSEMethod("PULSE", FIX, cache_dir=str(tmp_path))
    assert pulse.config.eps == 2e-3  # the official code's default, outside an evaluation
    EvaluationModule([pulse], MetricSuite(eps=1e-3, fid="none", niqe=False))
    assert pulse.config.eps == 1e-3 and pulse.pulse.config.eps == 1e-3 and pulse.pulse.loss.floor == 1e-3
    assert "ε = 0.001" in pulse.settings()
    same = PULSEMethod("PULSE", FIX, eps=1e-3, cache_dir=str(tmp_path))
    EvaluationModule([same], MetricSuite(eps=1e-3, fid="none", niqe=False))
    with pytest.raises(ValueError, match="one ε serves both"):
        EvaluationModule([PULSEMethod("PULSE", FIX, eps=2e-3, cache_dir=str(tmp_path))], MetricSuite(eps=1e-3, fid="none", niqe=False))
    with pytest.raises(ValueError, match="one ε serves both"):
        EvaluationModule([PULSEMethod("PULSE", FIX, config=PULSEConfig(eps=5e-3), cache_dir=str(tmp_path))], MetricSuite(eps=1e-3, fid="none", niqe=False))


# -- 4(c), 4(d). runtime at batch 1 and throughput; FLOPs = 2 x MACs ----------------------------------


def test_time_single_images_warms_up_once_and_times_each_image_alone():
    seen: list[int] = []
    times = time_single_images(lambda one: seen.append(len(one)), _batch(3), 5, warm_up=True, device=torch.device("cpu"))
    assert len(times) == 3 and seen == [1, 1, 1, 1]  # one warm-up + 3 timed, every call at batch 1
    seen.clear()
    time_single_images(lambda one: seen.append(len(one)), _batch(3), 2, warm_up=False, device=torch.device("cpu"))
    assert seen == [1, 1]


def test_runtime_summary_mean_median_and_throughput():
    r = runtime_summary([1.0, 2.0, 6.0], [(4, 2.0), (4, 2.0), (2, 1.0)])
    assert r["batch1_mean_s"] == 3.0 and r["batch1_median_s"] == 2.0 and r["batch1_images"] == 3
    assert r["throughput_img_s"] == pytest.approx(10 / 5) and r["batch_size"] == 4 and r["batches"] == 3
    empty = runtime_summary([])
    assert math.isnan(empty["batch1_mean_s"]) and math.isnan(empty["throughput_img_s"])


def test_flop_counter_counts_two_flops_per_mac():
    lin = nn.Linear(10, 20, bias=False)
    assert count_flops(lambda one: lin(one.lr.flatten(1)[:, :10]), _batch(3)) == 2 * 10 * 20  # one image, 200 MACs


class _Shift(SRMethod):
    def upsample(self, batch: SRBatch) -> ImageOutput:
        return ImageOutput(batch.hr * 0.5)


def test_the_report_gives_batch1_runtime_throughput_and_both_flop_columns(tmp_path):
    from datamodules.toy_faces import ToyFacesDataModule

    dm = ToyFacesDataModule(hr_size=32, lr_size=8, num_train=4, num_test=5, batch_size=2, hflip=False)
    model = EvaluationModule(
        [BicubicMethod(), _Shift("shift")], MetricSuite(eps=1e-3, fid="none", niqe=False), output_dir=str(tmp_path), grid_images=2, runtime_images=3
    )
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False).test(model, datamodule=dm, verbose=False)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["eps"] == 1e-3
    for r in rep["results"].values():
        rt = r["runtime"]
        assert rt["batch1_images"] == 3 and rt["batch1_mean_s"] > 0 and rt["batch1_median_s"] > 0
        assert rt["batch_size"] == 2 and rt["batches"] == 3 and rt["throughput_img_s"] > 0
        assert r["macs_per_image"] == r["flops_per_image"] / 2
    md = (tmp_path / "report.md").read_text()
    header, rule = next((ln, md.splitlines()[i + 1]) for i, ln in enumerate(md.splitlines()) if ln.startswith("| method |"))
    assert header.count("|") == rule.count("|") and "| shift |" in md
    assert "runtime / image, batch 1 (mean / median)" in md and "throughput, batch 2" in md
    assert "FLOPs / image (2×MACs)" in md and "MACs / image" in md and "FLOPs = 2 x MACs" in md and "ε = 0.001" in md


# -- 4(e). no E_W call when E_W+ covers every row -------------------------------------------------------


class _Spy(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, lr):
        self.calls += 1
        return self.inner(lr)


def test_e_w_is_not_called_at_the_full_scale():
    torch.manual_seed(0)
    G = Generator.from_checkpoint(FIX)
    gds = DeeplySupervisedGenerator(G, lr_size=8, head_hidden=(8, 8))
    plus = EWPlusEncoder(8, G.w_dim, G.num_ws, scales=[16, 32, 64], channels=8, rcabs_per_branch=1, out_channels=16, reduction=4)
    spy = _Spy(EWEncoder(8, G.w_dim, G.num_ws, channels=8, num_groups=1, rcabs_per_group=1, out_channels=16, reduction=4))
    lr = _batch(2).lr
    full = ProPulseUpsampler(gds, plus, spy, scale=64)
    out = full(lr)
    assert spy.calls == 0 and out.ws.shape == (2, G.num_ws, G.w_dim)
    assert torch.equal(out.ws, plus.forward_scales(lr, 64))
    ProPulseUpsampler(gds, plus, spy, scale=32)(lr)
    assert spy.calls == 1  # below the full scale E_W fills the remaining rows
    assert ProPulseUpsampler(gds, plus, None, scale=64)(lr).image.shape == (2, 3, 64, 64)  # no E_W needed at all
    with pytest.raises(ValueError, match="needs ew_encoder"):
        ProPulseUpsampler(gds, plus, None, scale=32)
    encode_ws(G, plus, lr, 64, spy, "ew")
    assert spy.calls == 1


# -- 4(f). the losses' normalisation as printed -------------------------------------------------------


def _out() -> tuple[ImageOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    img = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    sides = {16: torch.rand(2, 3, 16, 16, generator=g), 32: torch.rand(2, 3, 32, 32, generator=g)}
    return ImageOutput(img, sides), torch.rand(2, 3, 8, 8, generator=g)


def test_paper_normalisation_of_eq_2_3_6():
    out, lr = _out()
    assert SidePixelLoss("paper")(out) == pytest.approx(3 * float(SidePixelLoss("mean")(out)), rel=1e-5)  # S_r = r², 3 channels summed
    vgg = _TinyVGG()
    assert SidePerceptualLoss(vgg, "paper")(out) == pytest.approx(8 * float(SidePerceptualLoss(vgg, "mean")(out)), rel=1e-5)  # 8 feature channels summed
    paper, mean = MultiScaleReconstructionLoss(True, "paper"), MultiScaleReconstructionLoss(True, "mean")
    assert paper(out, lr) == pytest.approx(3 * 8 * 8 * float(mean(out, lr)), rel=1e-5)  # no 1/S_r: the plain sum over the LR grid
    for r, v in paper.per_scale(out, lr).items():
        assert v == pytest.approx(float(mean.per_scale(out, lr)[r]) * 192, rel=1e-5)
    total, logs = EncoderLoss(1.0, 0.0, 0.0, norm="paper")(out, lr, out.image)
    assert float(total) == pytest.approx(float(paper(out, lr)), rel=1e-6)
    total, logs = GdsLoss(1.0, vgg, norm="paper")(out)
    assert float(logs["loss/gds/pix"]) == pytest.approx(3 * float(SidePixelLoss("mean")(out)), rel=1e-5)
    with pytest.raises(ValueError, match="norm"):
        GdsLoss(0.0, norm="sum")


# -- 4(g). PULSE as published beside our corrected defaults ------------------------------------------


def test_published_preset_settings():
    pub, ours = PULSEConfig.preset("published"), PULSEConfig.preset("corrected")
    assert (pub.keep, pub.loss.geocross_unit_vectors, pub.gaussian_fit_samples) == ("last", False, 1_000_000)
    assert (ours.keep, ours.loss.geocross_unit_vectors, ours.gaussian_fit_samples) == ("best", True, 100_000)
    assert PULSEConfig.preset("published", eps=1e-3).eps == 1e-3
    with pytest.raises(ValueError, match="preset"):
        PULSEConfig.preset("official")
    with pytest.raises(ValueError, match="keep"):
        PULSEConfig(keep="first")


def test_geocross_on_raw_rows_is_the_official_formula():
    v = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]])  # same direction, different norms; and 90°
    unit = pairwise_angles(v)
    raw = pairwise_angles(v, unit_vectors=False)
    assert unit[0, 0, 1] == pytest.approx(0.0, abs=1e-4) and unit[0, 0, 2] == pytest.approx(math.pi / 2, abs=1e-5)
    assert raw[0, 0, 1] == pytest.approx(2 * math.atan2(2.0, 4.0), abs=1e-5)  # 2·atan2(|a-b|, |a+b|) on the raw rows
    X, Y = v.view(-1, 1, 3, 2), v.view(-1, 3, 1, 2)  # the official loss.py, with k = 3, d = 2
    D = 2 * torch.atan2(((X - Y).pow(2).sum(-1) + 1e-9).sqrt(), ((X + Y).pow(2).sum(-1) + 1e-9).sqrt())
    official = (D.pow(2) * 2).mean((1, 2)) / 8.0
    assert float(GeoCross(normalize=True, unit_vectors=False)(v)) == pytest.approx(float(official), rel=1e-5)


def test_published_search_returns_the_last_iterate_and_ours_the_best():
    G = Generator.from_checkpoint(FIX)
    fit = GaussianFit.fit(G, num_samples=2000)
    lr = _batch(2).lr
    pub = PULSE(G, fit, PULSEConfig.preset("published", steps=4, gaussian_fit_samples=2000))
    assert pub.loss.geocross.unit_vectors is False
    res = pub(lr)
    assert res.best_step.tolist() == [3, 3] and torch.allclose(res.loss, res.loss_history[-1])
    assert torch.equal(res.success, res.loss <= pub.config.eps)
    ours = PULSE(G, fit, PULSEConfig.preset("corrected", steps=4))(lr)
    assert torch.allclose(ours.loss, ours.loss_history.min(0).values)


def test_pulse_method_names_its_preset(tmp_path):
    pub = PULSEMethod("PULSE (published)", FIX, preset="published", steps=2, cache_dir=str(tmp_path))
    assert pub.preset == "published" and "last iterate" in pub.settings() and "raw W rows" in pub.settings() and "1,000,000" in pub.settings()
    assert "best iterate" in PULSEMethod("PULSE", FIX, cache_dir=str(tmp_path)).settings()
    with pytest.raises(ValueError, match="either"):
        PULSEMethod("PULSE", FIX, preset="published", config=PULSEConfig())


# -- 4(h). what the Table II grid checks in a report -----------------------------------------------------


def test_missing_metrics_names_the_skipped_fid_and_niqe():
    rep = {"results": {"Pro-PULSE": {"fid": 12.0, "niqe": None}}, "skipped": {"niqe": "switched off (metrics.niqe: false)"}}
    assert missing_metrics(rep) == {"niqe": "switched off (metrics.niqe: false)"}
    assert missing_metrics({"results": {"E_W": {"fid": 3.0, "niqe": 4.0}}}) == {}
    assert "fid" in missing_metrics({"results": {"E_W": {"niqe": 4.0}}, "skipped": {}})
