"""Eq. (10) (Pro-PULSE Sec. III-E) row by row: which rows of w+ come from E_W+, from E_W's repeated w
or from the mean latent, in ``encode_ws``, in ``ProPulseUpsampler``, in the E_W+ training module, and
along the progressive schedule of the callback.

The paper: at scale r_i, w+ = C(w+^{r_i}, R_{2q}(w)) with q = #{r' in {4, 8, ..., size} : r' > r_i}:
every resolution above r_i gets 2 rows of E_W's w, the leading num_ws - 2q rows (those of the layers
up to r_i) come from E_W+. Scales run 2 x LR ... size (Fig. 2: "first ... 32x32", then 64, ...,
1024 for 16 -> 1024). Expected rows are derived here from that formula, not from the code.

E_W and E_W+ are made recognisable: the last conv of E_W gets zero weights and bias -7, so w = -7
everywhere; the last conv of the E_W+ branch of the j-th scale gets zero weights and bias
1000 + 100 j, so every row says which scale's branch produced it.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from lit_propulse.callbacks.progressive import ProgressiveScaleCallback
from lit_propulse.inference import ProPulseUpsampler, encode_ws
from lit_propulse.losses.propulse import EncoderLoss
from lit_propulse.modules.propulse import EWModule, EWPlusModule
from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
from lit_propulse.networks.stylegan2 import Generator

try:
    from lit_propulse.networks.gds import DeeplySupervisedGenerator
except ImportError:
    from lit_propulse.networks.stylegan2 import DeeplySupervisedGenerator

W_DIM = 16
EW_VALUE = -7.0
AVG_VALUE = 3.0


pytestmark = pytest.mark.usefixtures("one_thread")


def paper_ewplus_rows(size: int, scale: int) -> int:
    """num_ws - 2q, q = #{r' in {4, ..., size}: r' > scale}; num_ws = 2 rows per resolution
    (18 for the 9 resolutions 4 ... 1024)."""
    resolutions = [2**k for k in range(2, size.bit_length())]
    q = len([r for r in resolutions if r > scale])
    return 2 * len(resolutions) - 2 * q


def branch_value(j: int) -> float:
    return 1000.0 + 100.0 * j


def expected_rows(size: int, scales: list[int], active: int, fill: float) -> list[float]:
    """Row t's value: the branch of the first scale whose E_W+ rows include t, else ``fill``."""
    num_ws = paper_ewplus_rows(size, size)
    rows = []
    for t in range(num_ws):
        owner = next((j for j, s in enumerate(scales) if s <= active and t < paper_ewplus_rows(size, s)), None)
        rows.append(fill if owner is None else branch_value(owner))
    return rows


def row_values(ws: torch.Tensor) -> list[float]:
    """[B, num_ws, w_dim] whose rows are constant -> one value per row (checked constant)."""
    assert ws.ndim == 3 and ws.shape[2] == W_DIM
    assert torch.equal(ws, ws[:, :, :1].expand_as(ws)), "a row of w+ mixes values"
    assert torch.equal(ws, ws[:1].expand_as(ws)), "rows differ across the batch"
    return ws[0, :, 0].tolist()


@torch.no_grad()
def brand(module: nn.Module, value: float) -> None:
    """Zero the weights of the last Conv2d of ``module`` and set its bias to ``value``."""
    last = [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]
    last.weight.zero_()
    last.bias.fill_(value)


def make_gds(size: int, lr_size: int, ch: int) -> DeeplySupervisedGenerator:
    torch.manual_seed(0)
    G = Generator(size, style_dim=W_DIM, n_mlp=1, channels={2**k: ch for k in range(2, size.bit_length())})
    G.latent_avg.fill_(AVG_VALUE)
    G.has_latent_avg.fill_(True)
    return DeeplySupervisedGenerator(G, lr_size=lr_size, head_hidden=(ch, ch)).eval()


def make_encoders(lr_size: int, num_ws: int, scales: list[int], ew_value: float = EW_VALUE) -> tuple[EWEncoder, EWPlusEncoder]:
    small = dict(channels=16, reduction=16, out_channels=W_DIM)
    ew = EWEncoder(lr_size, W_DIM, num_ws, num_groups=1, rcabs_per_group=1, **small)
    brand(ew, ew_value)
    ewp = EWPlusEncoder(lr_size, W_DIM, num_ws, scales, rcabs_per_branch=1, **small)
    assert list(ewp.branches) == [str(s) for s in scales]
    for j, s in enumerate(scales):
        brand(ewp.branches[str(s)], branch_value(j))
    return ew.eval(), ewp.eval()


SCALES_64 = [16, 32, 64]  # LR 8 -> 64: 2 x LR ... size
SCALES_1024 = [32, 64, 128, 256, 512, 1024]  # the paper's LR 16 -> 1024


@pytest.fixture(scope="module")
def g64():
    gds = make_gds(64, 8, ch=4)
    ew, ewp = make_encoders(8, gds.num_ws, SCALES_64)
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    return gds, ew, ewp, lr


def test_paper_row_counts():
    assert {s: paper_ewplus_rows(1024, s) for s in SCALES_1024} == {32: 8, 64: 10, 128: 12, 256: 14, 512: 16, 1024: 18}
    assert {s: paper_ewplus_rows(64, s) for s in SCALES_64} == {16: 6, 32: 8, 64: 10}
    assert paper_ewplus_rows(1024, 1024) == 18 and paper_ewplus_rows(64, 64) == 10  # num_ws


@pytest.mark.parametrize("scale", SCALES_64)
@pytest.mark.parametrize("guidance", ["ew", "latent_avg"])
def test_encode_ws_rows(g64, scale, guidance):
    gds, ew, ewp, lr = g64
    with torch.no_grad():
        ws = encode_ws(gds.generator, ewp, lr, scale, ew if guidance == "ew" else None, guidance)
    assert ws.shape == (2, gds.num_ws, W_DIM)
    fill = EW_VALUE if guidance == "ew" else AVG_VALUE
    assert row_values(ws) == expected_rows(64, SCALES_64, scale, fill)


def test_encode_ws_ew_only_repeats_w(g64):
    """Eq. (4): R_q(E_W(I_LR)), the same w in every row."""
    gds, ew, _, lr = g64
    with torch.no_grad():
        assert row_values(encode_ws(gds.generator, ew, lr)) == [EW_VALUE] * gds.num_ws


@pytest.mark.parametrize("scale", SCALES_64)
def test_upsampler_rows_and_which_outputs_they_drive(g64, scale):
    """The upsampler composes the same rows; and the side outputs up to r_i depend on the E_W+ rows
    only (E_W changed -> identical), while every output above r_i sees E_W's w."""
    gds, ew, ewp, lr = g64
    out = ProPulseUpsampler(gds, ewp, ew, scale=scale)(lr)
    assert row_values(out.ws) == expected_rows(64, SCALES_64, scale, EW_VALUE)
    ew_other, _ = make_encoders(8, gds.num_ws, SCALES_64, ew_value=5.0)
    other = ProPulseUpsampler(gds, ewp, ew_other, scale=scale)(lr)
    for r in gds.resolutions:
        assert torch.equal(out.side_images[r], other.side_images[r]) == (r <= scale), r
    assert torch.equal(out.image, other.image) == (scale == 64)
    for base in (None, ew):  # "latent_avg" means the mean latent even when an E_W is at hand
        avg = ProPulseUpsampler(gds, ewp, base, scale=scale, guidance="latent_avg")
        assert row_values(avg.encode(lr)) == expected_rows(64, SCALES_64, scale, AVG_VALUE)


def test_upsampler_default_scale_is_the_output_size(g64):
    gds, ew, ewp, lr = g64
    up = ProPulseUpsampler(gds, ewp, ew)
    assert up.scale == 64
    assert row_values(up.encode(lr)) == [branch_value(0)] * 6 + [branch_value(1)] * 2 + [branch_value(2)] * 2


# ----------------------------------------------------------------------------------------------
# The training module and the progressive callback


def drive(callback: ProgressiveScaleCallback, module: nn.Module, max_steps: int = 100):
    """Run the callback's hooks as a Trainer would, yielding the module at each training batch."""
    trainer = types.SimpleNamespace(should_stop=False)
    callback.on_fit_start(trainer, module)
    for i in range(max_steps):
        callback.on_train_batch_start(trainer, module, None, i)
        yield module
        callback.on_train_batch_end(trainer, module, None, None, i)
        if trainer.should_stop:
            return
    raise AssertionError("the schedule did not stop")


def make_module(gds, ew, ewp, guidance: str = "ew") -> EWPlusModule:
    module = EWPlusModule(ewp, gds, EncoderLoss(1.0, 0.0, 0.0), ew_encoder=ew if guidance == "ew" else None, guidance=guidance)
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    return module


@pytest.mark.parametrize("guidance", ["ew", "latent_avg"])
def test_paper_schedule_16_to_1024_rows_per_step(guidance):
    """LR 16 -> 1024 (tiny channels; only w+ is composed, nothing rendered): the callback runs
    32, 64, ..., 1024, each for steps_per_scale batches, and at every step the module, the
    upsampler built for the active scale and the paper's formula agree row by row."""
    gds = make_gds(1024, 16, ch=1)
    ew, ewp = make_encoders(16, 18, SCALES_1024)
    module = make_module(gds, ew, ewp, guidance)
    assert module.scales == SCALES_1024
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    fill = EW_VALUE if guidance == "ew" else AVG_VALUE
    seen = []
    with torch.no_grad():
        for m in drive(ProgressiveScaleCallback(steps_per_scale=2), module):
            scale = int(m.active_scale)
            seen.append(scale)
            rows = row_values(m.compose_ws(lr))
            assert rows == expected_rows(1024, SCALES_1024, scale, fill), scale
            up = ProPulseUpsampler(gds, ewp, ew if guidance == "ew" else None, scale=scale, guidance=guidance)
            assert row_values(up.encode(lr)) == rows
    assert seen == [s for s in SCALES_1024 for _ in range(2)]


def test_schedule_64_module_export_and_upsampler_agree(g64, tmp_path):
    """LR 8 -> 64: 16, 32, 64; the E_W+ export written mid-schedule carries the active scale and the
    upsampler built from the files composes the module's rows."""
    gds, ew, ewp, lr = g64
    module = make_module(gds, ew, ewp)
    assert module.scales == SCALES_64
    gds.save(tmp_path / "gds.pt")
    from lit_propulse.core.weights import save_module

    save_module(ew, str(tmp_path / "ew.pt"))
    seen = []
    for m in drive(ProgressiveScaleCallback(steps_per_scale=3), module):
        seen.append(int(m.active_scale))
        if len(seen) == 4:  # first step at 32
            m.export(str(tmp_path / "ewplus.pt"))
            with torch.no_grad():
                rows = row_values(m.compose_ws(lr))
    assert seen == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert rows == expected_rows(64, SCALES_64, 32, EW_VALUE)
    up = ProPulseUpsampler.from_files(tmp_path / "gds.pt", tmp_path / "ewplus.pt", ew=tmp_path / "ew.pt")
    assert up.scale == 32
    with torch.no_grad():
        assert row_values(up.encode(lr)) == rows


def test_ew_module_composes_eq4(g64):
    gds, ew, _, lr = g64
    module = EWModule(ew, gds, EncoderLoss(1.0, 0.0, 0.0))
    with torch.no_grad():
        assert row_values(module.compose_ws(lr)) == [EW_VALUE] * gds.num_ws


# ----------------------------------------------------------------------------------------------
# encode_ws's arguments (gaps found by benchmarks/mutation_run.sh)


def test_encode_ws_guidance_defaults_to_ew_and_bad_arguments_are_named(g64):
    """Eq. (10) with E_W's guidance unless told otherwise; an E_W+ without the scale reached, without
    the E_W it needs below the output size, or with an unknown guidance is refused by a message."""
    import re

    gds, ew, ewp, lr = g64
    with torch.no_grad():
        assert row_values(encode_ws(gds.generator, ewp, lr, 32, ew)) == expected_rows(64, SCALES_64, 32, EW_VALUE)
    with pytest.raises(ValueError, match="^" + re.escape("an E_W+ encoder needs the progressive scale reached (scale=...)") + "$"):
        encode_ws(gds.generator, ewp, lr, None, ew)
    with pytest.raises(ValueError, match="^" + re.escape("guidance='ew' needs the trained E_W (ew_encoder=...)") + "$"):
        encode_ws(gds.generator, ewp, lr, 32)
    with pytest.raises(ValueError, match="^" + re.escape("guidance must be 'ew' or 'latent_avg', got 'mean'") + "$"):
        encode_ws(gds.generator, ewp, lr, 32, ew, guidance="mean")
