"""The paper setting as a user runs it (issue 14): the critic's own file and its preflight, E2E as
Sec. IV-G describes it, one ε for PULSE's search and its success rate, runtime at batch 1 and
throughput, the FLOPs convention, no E_W call at the full scale, the losses' printed normalisation,
PULSE "as published", and the report check the Table II grid relies on."""

from __future__ import annotations

import csv
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
    assert code == 2 and err.startswith("error: the configuration needs files that are missing or unusable:") and "Traceback" not in err
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


class HeadsRecorder(pl.Callback):
    """Writes G_ds's branch weights at the start and the end of training to ``<run dir>/heads_{start,end}.pt``
    (and, for E_W+, the frozen E_W it was given to ``<run dir>/ew_encoder.pt``)."""

    def on_train_start(self, trainer, pl_module) -> None:
        root = Path(trainer.default_root_dir)
        torch.save(_heads(pl_module.gds), root / "heads_start.pt")
        if getattr(pl_module, "ew_encoder", None) is not None:
            torch.save(pl_module.ew_encoder.state_dict(), root / "ew_encoder.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(_heads(pl_module.gds), Path(trainer.default_root_dir) / "heads_end.pt")


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_e2e_yamls_chain_and_train_the_branches_with_lambda_pp(tmp_path, monkeypatch):
    """The two E2E stage YAMLs run as a user runs them (``fit --config experiments/toy/e2e_ew.yaml``, then
    ``fit --config experiments/toy/e2e.yaml``, each with its default paths, from one directory), shrunk to
    the fixture generator and with Eq. (1)'s perceptual term on (lambda_pp = 1, a tiny VGG stand-in): the
    fresh branches train with E_W, the second stage starts from exactly the branches and the E_W the first
    one exported (nothing reset, not the G_ds/E_W stages' files) and keeps training the branches."""
    from lit_propulse.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lit_propulse").symlink_to(ROOT / "lit_propulse")  # the toy YAMLs' lit_propulse/data/... files
    common = [
        "--model.init_args.encoder.init_args.w_dim=64",
        f"--{D_PATH}={FIX}",
        "--model.init_args.gds_loss.init_args.lambda_pp=1.0",
        f"--model.init_args.gds_loss.init_args.vgg={__name__}._TinyVGG",
        f"--trainer.callbacks+={__name__}.HeadsRecorder",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.num_train=16",
        "--data.init_args.num_test=4",
        "--data.init_args.batch_size=4",
        "--data.init_args.val_subset=4",
    ]
    # stage 1: fresh branches on the plain StyleGAN2 (the fixture stands in for the toy generator file)
    e2e_ew = ["fit", "--config", str(TOY / "e2e_ew.yaml"), f"--model.init_args.gds.init_args.path={FIX}", "--trainer.max_steps=2"]
    assert main(e2e_ew + common) == 0
    run1 = tmp_path / "runs" / "toy" / "e2e_ew"
    start1, end1 = torch.load(run1 / "heads_start.pt"), torch.load(run1 / "heads_end.pt")
    assert _changed(start1, end1), "the branches did not train with E_W"
    assert load_gds(str(run1 / "ew_gds.pt")).heads.state_dict().keys() == end1.keys()
    assert all(torch.equal(v, end1[k]) for k, v in load_gds(str(run1 / "ew_gds.pt")).heads.state_dict().items())
    # stage 2: its YAML's defaults are stage 1's exports
    assert main(["fit", "--config", str(TOY / "e2e.yaml"), "--progressive.steps_per_scale=1"] + common) == 0
    run2 = tmp_path / "runs" / "toy" / "e2e"
    start2, end2 = torch.load(run2 / "heads_start.pt"), torch.load(run2 / "heads_end.pt")
    assert all(torch.equal(start2[k], end1[k]) for k in end1), "E2E's E_W+ must continue the branches trained with its E_W"
    assert _changed(start2, end2), "the branches did not keep training with E_W+"
    assert all(torch.equal(v, end2[k]) for k, v in load_gds(str(run2 / "ewplus_gds.pt")).heads.state_dict().items())
    ew_used = torch.load(run2 / "ew_encoder.pt")
    assert all(torch.equal(v, ew_used[k]) for k, v in load_module(run1 / "ew.pt", EWEncoder).state_dict().items())
    for run in (run1, run2):  # Eq. (1) with its perceptual term, logged at every step
        with open(run / "metrics.csv") as f:
            pp = [float(r["train/loss/gds/pp"]) for r in csv.DictReader(f) if r.get("train/loss/gds/pp")]
        assert pp and all(v > 0 for v in pp), run


def test_the_paper_e2e_yamls_chain_with_lambda_pp_1(capsys, monkeypatch):
    """experiments/e2e_ew.yaml starts fresh branches on the pretrained generator file (the one the G_ds
    stage reads) with Eq. (1) as the G_ds stage has it (lambda_pp = 1, the same VGG-16 file);
    experiments/e2e.yaml reads exactly what the first writes (E_W and the co-trained G_ds), resets nothing,
    and keeps Eq. (1). The Table II grid's E2E row is that stage."""
    from lit_propulse.commands.grid import stage_export_name, variant_base
    from tests.helpers import print_config

    monkeypatch.chdir(ROOT)
    gds_stage, first, second = (print_config(capsys, "fit", "--config", f"experiments/{name}.yaml") for name in ("gds", "e2e_ew", "e2e"))
    m1, m2 = first["model"]["init_args"], second["model"]["init_args"]
    assert m1["gds"]["init_args"]["path"] == gds_stage["model"]["init_args"]["gds"]["init_args"]["path"] == "pretrained/stylegan2-ffhq-config-f.pt"
    assert m1["gds"]["init_args"]["require_heads"] is False and m1["gds"]["init_args"]["lr_size"] == 16
    root1 = first["trainer"]["default_root_dir"]
    export1 = f"{root1}/{stage_export_name('experiments/e2e_ew.yaml')}"
    assert m2["ew_encoder"]["init_args"]["path"] == export1 == "runs/e2e_ew/ew.pt"
    assert m2["gds"]["init_args"]["path"] == gds_export_path(export1) == "runs/e2e_ew/ew_gds.pt"
    assert m2["gds"]["init_args"]["require_heads"] is True and not m1["gds"]["init_args"]["reset_heads"] and not m2["gds"]["init_args"]["reset_heads"]
    for m in (m1, m2):
        assert m["train_side_heads"] is True
        assert m["gds_loss"] == gds_stage["model"]["init_args"]["loss"]  # Eq. (1) as the G_ds stage has it
        assert (
            m["gds_loss"]["init_args"]["lambda_pp"] == 1.0 and m["gds_loss"]["init_args"]["vgg"]["init_args"]["weights_path"] == "pretrained/vgg16-397923af.pth"
        )
    assert second["trainer"]["default_root_dir"] != root1
    assert variant_base("experiments/ablations/e2e.yaml") == "e2e.yaml"


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
