"""Evaluation metrics against analytic values and independent references, the metric suite (one
prefixed MetricCollection per method; absent weights skipped with a reason, unusable ones and failing
metrics raising), the side-by-side EvaluationModule (CLI, report), and a 2-process DDP run counting
each image once."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.weights import save_module
from lit_propulse.evaluation import (
    BicubicMethod,
    EvaluationModule,
    MetricSuite,
    ProPulseMethod,
    SRMethod,
    StageEvaluation,
)
from lit_propulse.metrics.quality import (
    DownscaleConsistency,
    FIDFeatures,
    psnr_ssim_metrics,
    to_unit,
)
from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Generator
from tests.helpers import quick_pulse

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parents[1]
FIX = str(ROOT / "tests" / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt")
TOY_CLASSIFIER = str(ROOT / "lit_propulse" / "data" / "toy_attributes_64.pt")


def _batch(n: int = 6, size: int = 64, lr: int = 8, seed: int = 0) -> SRBatch:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return SRBatch(hr=hr, lr=downscale(hr, lr), index=torch.arange(n), name=[f"{i}.png" for i in range(n)])


# -- metrics --------------------------------------------------------------------------------------


def test_consistency_is_zero_for_an_exact_downscale_pair_and_analytic_for_an_offset():
    b = _batch()
    m = DownscaleConsistency(eps=2e-3)
    m.update(b.hr, b.lr)
    r = m.compute()
    assert float(r["l_ds"]) < 1e-12 and float(r["success_rate"]) == 1.0 and int(r["count"]) == 6
    m = DownscaleConsistency(eps=2e-3)
    m.update(b.hr, b.lr + 0.1)  # in [-1, 1]: 0.05 in [0, 1] units -> L_DS = 0.0025 > eps
    r = m.compute()
    assert float(r["l_ds"]) == pytest.approx(0.0025, rel=1e-5) and float(r["success_rate"]) == 0.0


def test_psnr_and_ssim_known_values():
    metrics = psnr_ssim_metrics()
    sr = torch.zeros(4, 3, 32, 32)  # 0.5 in [0, 1]
    gt = torch.full((4, 3, 32, 32), 0.2)  # 0.6 in [0, 1]: difference 0.1 -> PSNR = 20 dB
    metrics["psnr"].update(to_unit(sr), to_unit(gt))
    assert float(metrics["psnr"].compute()) == pytest.approx(20.0, abs=1e-4)
    x = _batch(4, 32).hr
    metrics["ssim"].update(to_unit(x), to_unit(x))
    assert float(metrics["ssim"].compute()) == pytest.approx(1.0, abs=1e-6)


class _TinyFeatures(torch.nn.Module):
    num_features = 6

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def features(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3)) * 10


def test_fid_of_a_set_against_itself_is_zero_and_of_a_shifted_set_positive():
    from torchmetrics.image.fid import FrechetInceptionDistance

    x = _batch(64, 16, 4).hr
    fid = FrechetInceptionDistance(feature=FIDFeatures(_TinyFeatures(), "tiny"))
    fid.update(x, real=True)
    fid.update(x, real=False)
    assert abs(float(fid.compute())) < 1e-3
    fid.reset()
    fid.update(x, real=True)
    fid.update((x + 0.5).clamp(-1, 1), real=False)
    assert float(fid.compute()) > 1.0


def test_inception_fid_from_a_weights_file(tmp_path, monkeypatch):
    """The Inception path: torch-fidelity's network read from a weights file (random weights here:
    the real file cannot be downloaded on this machine) gives FID(set, set) ~ 0."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with monkeypatch.context() as m:  # build the network with its default init, loading nothing
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        m.setattr(fe.torch, "load", lambda *a, **k: {})
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    suite = MetricSuite(fid="inception", inception_weights=str(tmp_path / "inception.pth"), niqe=False)
    assert "fid" not in suite.skipped
    suite.add_method("a")
    x = _batch(8, 64, 8).hr
    suite.update("a", ImageOutput(x), SRBatch(hr=x, lr=downscale(x, 8), index=torch.arange(8)))
    assert abs(suite.compute("a")["fid"]) < 1e-2


def test_lpips_network_matches_the_lpips_package(tmp_path):
    """Our LPIPS (torchmetrics' layers + a torchvision backbone file) equals the reference lpips package
    with the same backbone weights."""
    lpips = pytest.importorskip("lpips")
    import torchvision

    from lit_propulse.networks.feature_nets import LPIPSNetwork

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    torch.save(alex.state_dict(), tmp_path / "alexnet.pth")
    ours = LPIPSNetwork(str(tmp_path / "alexnet.pth"), net="alex")
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    feats = alex.features
    for sl in [ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5]:
        for name, mod in sl.named_children():
            mod.load_state_dict(feats[int(name)].state_dict())
    x, y = _batch(3, 64).hr, _batch(3, 64, seed=1).hr
    with torch.no_grad():
        a = ours(x, y)
        b = ref(x, y).flatten()
    assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_missing_weights_are_skipped_with_a_reason(tmp_path):
    suite = MetricSuite(
        fid="inception",
        inception_weights=str(tmp_path / "nope.pth"),
        lpips_weights=str(tmp_path / "alex.pth"),
        attribute_classifier=str(tmp_path / "attr.pt"),
        niqe=False,
    )
    assert set(suite.skipped) >= {"fid", "lpips", "attr_diff", "identity", "niqe"}
    assert "nope.pth" in suite.skipped["fid"] and "alex" in suite.skipped["lpips"]
    suite.add_method("m")
    b = _batch(4)
    suite.update("m", ImageOutput(b.hr), b)
    r = suite.compute("m")
    assert "fid" not in r and "lpips" not in r and (math.isinf(r["psnr"]) or r["psnr"] > 50)


@pytest.mark.parametrize("arg", ["attribute_classifier", "identity_weights", "lpips_weights", "inception_weights", "niqe_params"])
def test_a_weights_file_that_exists_but_is_garbage_raises_instead_of_being_skipped(tmp_path, arg):
    """A mistyped path that names the wrong (existing) file stops the run in one line naming it; it is
    not turned into a skipped metric (a table of dashes)."""
    bad = tmp_path / "typo_weights.pth"
    bad.write_bytes(b"this is not a weights file\n" * 16)
    kwargs = {"fid": "inception" if arg == "inception_weights" else "none", "niqe": arg == "niqe_params", arg: str(bad)}
    with pytest.raises(UserFacingError, match="typo_weights.pth"):
        MetricSuite(**kwargs)
    with pytest.raises(UserFacingError, match="directory"):  # an existing path that is no file at all
        MetricSuite(fid="none", niqe=False, attribute_classifier=str(tmp_path))


def test_no_grid_images_is_refused_when_the_module_is_built():
    with pytest.raises(ValueError, match="grid_images must be at least 1"):
        EvaluationModule([BicubicMethod()], MetricSuite(fid="none", niqe=False), grid_images=0)


def test_an_absent_weights_file_is_skipped_with_its_reason_in_the_report(tmp_path):
    import pytorch_lightning as pl

    from datamodules.toy_faces import ToyFacesDataModule

    suite = MetricSuite(fid="none", niqe=False, identity_weights=str(tmp_path / "absent_arcface.pth"))
    assert suite.skipped["identity"].startswith(f"{tmp_path / 'absent_arcface.pth'}: file not found")
    model = EvaluationModule([BicubicMethod()], suite, output_dir=str(tmp_path / "rep"), grid_images=2)
    dm = ToyFacesDataModule(hr_size=32, lr_size=8, num_train=4, num_test=4, batch_size=4, hflip=False)
    pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False).test(model, datamodule=dm, verbose=False)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "identity" not in rep["results"]["bicubic"] and rep["results"]["bicubic"]["count"] == 4
    assert rep["skipped"]["identity"] == suite.skipped["identity"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"- **identity**: {suite.skipped['identity']}" in md


def test_each_method_has_its_own_collection_prefixed_with_its_name():
    from torchmetrics import MetricCollection

    suite = MetricSuite(fid="none", niqe=False)
    a, b = suite.add_method("bicubic"), suite.add_method("Pro-PULSE")
    assert isinstance(a, MetricCollection) and (a.prefix, b.prefix) == ("bicubic/", "Pro-PULSE/")
    x = _batch(4)
    suite.update("bicubic", ImageOutput(x.hr), x)
    suite.update("Pro-PULSE", ImageOutput((x.hr + 0.1).clamp(-1, 1)), x)
    assert set(a.compute()) == {"bicubic/l_ds", "bicubic/success_rate", "bicubic/count", "bicubic/psnr", "bicubic/ssim"}
    assert set(b.compute()) == {k.replace("bicubic/", "Pro-PULSE/") for k in a.compute()}
    assert suite.compute("bicubic")["l_ds"] < 1e-12 < suite.compute("Pro-PULSE")["l_ds"]  # separate states
    val = suite.add_method("val", keys=["psnr"])  # a validation subset
    suite.update("val", ImageOutput(x.hr), x)
    assert set(val.compute()) == {"val/psnr"}
    with pytest.raises(ValueError, match="unknown metric keys"):
        suite.add_method("other", keys=["psnr", "fidd"])
    with pytest.raises(ValueError, match="val_metrics"):
        StageEvaluation(val_metrics=["psnr", "fidd"])


def test_a_metric_failing_during_update_or_compute_raises():
    suite = MetricSuite(fid="none", niqe=True)  # the published pristine model: 96-px blocks
    b = _batch(2, 32, 8)
    with pytest.raises(ValueError):
        suite.update("m", ImageOutput(b.hr), b)  # 32-px images are too small for it
    assert "niqe" not in suite.skipped
    suite = MetricSuite(fid="attributes", attribute_classifier=TOY_CLASSIFIER, niqe=False)
    one = _batch(1)
    suite.update("m", ImageOutput(one.hr), one)
    with pytest.raises(RuntimeError):  # FID needs at least two images per set
        suite.compute("m")
    assert "fid" not in suite.skipped


# -- the module -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, str]:
    """Tiny G_ds / E_W / E_W+ exports on the fixture generator (untrained encoders: only the wiring matters)."""
    out = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    G = Generator.from_checkpoint(FIX)
    gds = DeeplySupervisedGenerator(G, lr_size=8, head_hidden=(16, 8))
    gds.save(out / "gds.pt")
    save_module(EWEncoder(8, G.w_dim, G.num_ws, channels=8, num_groups=1, rcabs_per_group=1, out_channels=32, reduction=4), out / "ew.pt")
    save_module(
        EWPlusEncoder(8, G.w_dim, G.num_ws, scales=[16, 32, 64], channels=8, rcabs_per_branch=1, out_channels=32, reduction=4),
        out / "ewplus.pt",
        extra={"active_scale": 32},
    )
    return {k: str(out / f"{k}.pt") for k in ("gds", "ew", "ewplus")}


def test_propulse_method_uses_the_saved_scale_and_side_outputs(exports):
    m = ProPulseMethod("Pro-PULSE", exports["gds"], exports["ewplus"], ew=exports["ew"])
    assert m.upsampler.scale == 32
    out = m.upsample(_batch(2))
    assert out.image.shape == (2, 3, 64, 64) and sorted(out.side_images) == [16, 32]
    assert m.flops_per_image(_batch(2)) > 1e6


def test_cli_test_writes_the_side_by_side_report(exports, tmp_path):
    from lit_propulse.cli import main

    cfg = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False, "default_root_dir": str(tmp_path)},
        "model": {
            "class_path": "lit_propulse.evaluation.module.EvaluationModule",
            "init_args": {
                "output_dir": str(tmp_path / "report"),
                "grid_images": 3,
                "methods": [
                    {"class_path": "lit_propulse.evaluation.methods.BicubicMethod", "init_args": {"name": "bicubic"}},
                    quick_pulse(tmp_path / "cache"),
                    {
                        "class_path": "lit_propulse.evaluation.methods.ProPulseMethod",
                        "init_args": {"name": "E_W", "gds": exports["gds"], "encoder": exports["ew"], "show_sides": False},
                    },
                    {
                        "class_path": "lit_propulse.evaluation.methods.ProPulseMethod",
                        "init_args": {"name": "Pro-PULSE", "gds": exports["gds"], "encoder": exports["ewplus"], "ew": exports["ew"]},
                    },
                ],
                "metrics": {"class_path": "lit_propulse.evaluation.suite.MetricSuite", "init_args": {"fid": "none", "niqe": False}},
            },
        },
        "data": {
            "class_path": "datamodules.toy_faces.ToyFacesDataModule",
            "init_args": {"hr_size": 64, "lr_size": 8, "num_train": 4, "num_test": 7, "batch_size": 3, "hflip": False},
        },
    }
    import yaml

    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["test", "--config", str(tmp_path / "eval.yaml")]) == 0
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rep["num_images"] == 7 and list(rep["results"]) == ["bicubic", "PULSE", "E_W", "Pro-PULSE"]
    for r in rep["results"].values():
        assert r["count"] == 7 and r["runtime"]["batches"] == 3 and r["runtime"]["median_s"] > 0
    # PULSE FLOPs = steps x 3 x one step's forward; bicubic counts no matmul/conv FLOPs
    assert rep["results"]["PULSE"]["flops_per_image"] > rep["results"]["Pro-PULSE"]["flops_per_image"] > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| Pro-PULSE |" in md and "Skipped metrics" in md and "**fid**" in md
    assert (tmp_path / "report" / "grid.png").is_file() and (tmp_path / "report" / "strip.png").is_file()


# -- DDP ------------------------------------------------------------------------------------------


class _IdentityPlusOne(SRMethod):
    """HR shifted by a per-image constant: L_DS known per image, so a duplicated image changes the mean."""

    def upsample(self, batch: SRBatch) -> ImageOutput:
        shift = (batch.index.float() * 0.02)[:, None, None, None]
        return ImageOutput(batch.hr + shift)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_eval_worker(rank: int, world: int, port: int, out: str) -> None:
    import pytorch_lightning as pl

    from datamodules.toy_faces import ToyFacesDataModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    dm = ToyFacesDataModule(hr_size=32, lr_size=8, num_train=4, num_test=7, batch_size=2, hflip=False)
    model = EvaluationModule([BicubicMethod(), _IdentityPlusOne("shifted")], MetricSuite(fid="none", niqe=False), output_dir=out, grid_images=2)
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy="ddp", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_count_each_test_image_once(tmp_path):
    mp.spawn(_ddp_eval_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["world_size"] == 2 and rep["num_images"] == 7
    # single-process reference on the same 7 images
    from datamodules.toy_faces import ToyFacesDataModule

    dm = ToyFacesDataModule(hr_size=32, lr_size=8, num_train=4, num_test=7, batch_size=7, hflip=False)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    ref = DownscaleConsistency()
    ref.update(_IdentityPlusOne("s").upsample(batch).image, batch.lr)
    assert rep["results"]["shifted"]["l_ds"] == pytest.approx(float(ref.compute()["l_ds"]), rel=1e-5)
    assert rep["results"]["shifted"]["count"] == 7


def test_paper_eval_yaml_lists_missing_method_files_and_leaves_metric_files_to_skipping(tmp_path, capsys, monkeypatch):
    """experiments/eval.yaml parses; without the files, `test` stops before building anything and
    names every missing *method* file; missing metric weights are not errors (they are skipped)."""
    from lit_propulse.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = str(ROOT / "experiments" / "eval.yaml")
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", cfg, "--print_config"])
    assert info.value.code == 0
    capsys.readouterr()
    assert main(["test", "--config", cfg]) == 2
    err = capsys.readouterr().err
    for f in ("pretrained/stylegan2-ffhq-config-f.pt", "runs/gds/gds.pt", "runs/ew/ew.pt", "runs/ewplus/ewplus.pt"):
        assert f in err
    for f in ("inception", "model_ir_se50", "alexnet", "attributes.pt"):
        assert f not in err


def test_identity_similarity_is_one_for_the_same_images_and_the_cosine_otherwise():
    from lit_propulse.metrics.quality import IdentitySimilarity

    class _Embed(torch.nn.Module):  # a fixed linear "identity net" on the mean colour
        def forward(self, x):
            return x.mean((2, 3))  # [B, 3]

    b = _batch(5)
    m = IdentitySimilarity(_Embed())
    m.update(b.hr, b.hr)
    assert float(m.compute()) == pytest.approx(1.0, abs=1e-6)
    m = IdentitySimilarity(_Embed())
    m.update(b.hr, -b.hr)  # opposite embeddings: cosine -1
    assert float(m.compute()) == pytest.approx(-1.0, abs=1e-6)


def test_suite_with_the_shipped_toy_networks_scores_gt_as_perfect():
    """The toy metric suite (shipped attribute classifier + toy NIQE model): SR = GT gives attribute
    difference 0 (also per side resolution against DS(GT)) and a toy-FID of ~0; names are labelled."""
    from datamodules.toy_faces import ToyFacesDataset

    ds = ToyFacesDataset("test", hr_size=64, lr_size=8, num_train=20000, num_test=24)
    hr = torch.stack([ds[i]["hr"] for i in range(24)])
    batch = SRBatch(hr=hr, lr=downscale(hr, 8), index=torch.arange(24))
    suite = MetricSuite(fid="attributes", attribute_classifier=TOY_CLASSIFIER, niqe_params=str(ROOT / "lit_propulse/data/niqe_toy_pristine.npz"))
    assert not {"fid", "attr_diff", "niqe"} & set(suite.skipped)
    suite.add_method("gt")
    suite.update("gt", ImageOutput(hr, {16: downscale(hr, 16), 32: downscale(hr, 32)}), batch)
    r = suite.compute("gt")
    assert r["attr_diff"] == 0.0 and all(v == 0.0 for v in r["attr_diff_side"].values())
    assert abs(r["fid"]) < 1e-2 and math.isfinite(r["niqe"]) and len(r["attr_diff_per_attribute"]) == 18
    assert "attribute-classifier" in suite.labels["fid"]
