"""The refinement as an evaluation method (issue 16, item 2): its FLOPs per image, which the evaluation
counts before the first batch (counting the refinement itself under FlopCounterMode fails in
``autograd.grad``; the method counts encoder + synthesis x (1 + 3 x steps) instead, PULSE's convention)."""

from __future__ import annotations

import pytest
import torch

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.weights import save_module
from lit_propulse.evaluation.methods import ProPulseMethod, count_flops
from lit_propulse.evaluation.refine_method import RefineMethod
from lit_propulse.refine import RefineConfig
from tests.helpers import noisy_generator, stage_networks

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, LR, W_DIM = 32, 8, 16


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("exports")
    gds, ew, ewp = stage_networks(noisy_generator(SIZE, W_DIM), LR)
    gds.save(d / "gds.pt")
    save_module(ew, d / "ew.pt")
    save_module(ewp, d / "ewplus.pt", extra={"active_scale": SIZE})
    return {k: str(d / f"{k}.pt") for k in ("gds", "ew", "ewplus")}


def batch() -> SRBatch:
    hr = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return SRBatch(hr=hr, lr=downscale(hr, LR), index=torch.arange(2))


@pytest.mark.parametrize("eps", [1e-9, 10.0])  # unreachable (every step taken) and met by the encoder (0 steps)
def test_flops_are_the_encoder_and_a_synthesis_per_evaluation_and_backward(exports, eps):
    m = RefineMethod("refined", exports["gds"], exports["ewplus"], ew=exports["ew"], config=RefineConfig(max_steps=3))
    m.bind_eps(eps)
    b = batch()
    flops = m.flops_per_image(b)
    steps = 3 if eps < 1 else 0
    assert int(m.refined.last.steps[0]) == steps
    up, G = m.refined.upsampler, m.refined.gds.generator
    with torch.no_grad():
        encoder = count_flops(lambda one: up.encode(one.lr), b)
        synthesis = count_flops(lambda one: G.synthesis(up.encode(one.lr), noise="const"), b) - encoder
        plain = count_flops(ProPulseMethod("p", exports["gds"], exports["ewplus"], ew=exports["ew"]).upsample, b)  # + the side heads
    assert encoder > 0 and synthesis > 0 and flops == pytest.approx(encoder + (1 + 3 * steps) * synthesis, rel=1e-6)
    assert flops > plain if steps else flops < plain


def _ddp_refine_worker(rank: int, world: int, port: int, exports: dict, out: str) -> None:
    import os

    import pytorch_lightning as pl

    from datamodules.toy_faces import ToyFacesDataModule
    from lit_propulse.evaluation.module import EvaluationModule
    from lit_propulse.evaluation.suite import MetricSuite

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    dm = ToyFacesDataModule(hr_size=SIZE, lr_size=LR, num_train=4, num_test=5, batch_size=2, hflip=False)
    method = RefineMethod("refined", exports["gds"], exports["ewplus"], ew=exports["ew"], config=RefineConfig(max_steps=2))
    model = EvaluationModule([method], MetricSuite(eps=1e-9, fid="none", niqe=False), output_dir=out, grid_images=2, runtime_images=0)
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy="ddp", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    torch.distributed.destroy_process_group()


def test_settings_line_counts_every_process_images_under_ddp(exports, tmp_path):
    """Two processes share 5 test images: the refinement's settings line in the report counts all 5
    (each process records only its own; they are merged before the line is written)."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_refine_worker, args=(2, port, exports, str(tmp_path)), nprocs=2, join=True)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["world_size"] == 2 and rep["num_images"] == 5
    assert "; 0/5 images met ε, steps per image mean 2.00" in rep["results"]["refined"]["settings"]
