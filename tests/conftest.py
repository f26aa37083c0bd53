"""Shared test setup: CPU-only, quiet loggers, GPU tests behind the ``gpu`` marker, and the fixtures
several test files use (``one_thread``, ``stages``, ``stage_exports``).

Markers: ``gpu`` (skipped without CUDA), ``slow`` (long end-to-end runs; ``pytest -m "not slow"`` is the
fast subset)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("PL_DISABLE_FORK", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (their small convolutions gain nothing from two, and
    results stay bitwise-stable across machines); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def stages(tmp_path_factory) -> Path:
    """G_ds, E_W and E_W+ trained once per session (a few steps each, on the port fixture generator)
    through the CLI on the toy YAMLs; test files reuse the run directories."""
    from tests.test_propulse_stages import train_stages

    return train_stages(tmp_path_factory.mktemp("stages"))


@pytest.fixture(scope="session")
def stage_exports(tmp_path_factory) -> Path:
    """A run directory like the pipeline's: gds/gds.pt, ew/ew.pt, ewplus/ewplus.pt (random tiny nets,
    see ``tests/helpers.py``; E_W+ saved at active scale 32)."""
    from lit_propulse.core.weights import save_module
    from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
    from lit_propulse.networks.gds import DeeplySupervisedGenerator
    from lit_propulse.networks.stylegan2 import Generator
    from tests.helpers import ENC, LR, TINY_G, W_DIM

    root = tmp_path_factory.mktemp("run")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G = Generator(**TINY_G)
        gds = DeeplySupervisedGenerator(G, LR, head_hidden=(8, 8))
        (root / "gds").mkdir()
        gds.save(root / "gds" / "gds.pt")
        save_module(EWEncoder(LR, W_DIM, G.num_ws, num_groups=1, rcabs_per_group=1, **ENC), root / "ew" / "ew.pt")
        ewp = EWPlusEncoder(LR, W_DIM, G.num_ws, scales=[16, 32, 64], rcabs_per_branch=1, **ENC)
        save_module(ewp, root / "ewplus" / "ewplus.pt", extra={"active_scale": 32})
    return root
