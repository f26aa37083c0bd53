"""Pro-PULSE Table II ablations by effect (Sec. IV-G): every variant delta in ``experiments/ablations/``
is composed with its toy stage YAML by the project's CLI (``ProPulseCLI(args=..., run=False)``, no
training) and the configured module is checked for what the variant changes — a term of Eq. (5) with
weight 0 is neither logged nor reaches the outputs' gradients, the side outputs get no gradient without
G_ds (N = 1 in Eq. (6)), the mean latent replaces E_W's w in Eq. (10), every w+ row comes from the
encoder from the first step (the "direct" rows), G_ds's branches train with the encoder (E2E, continuing
the branches its own E_W stage exported).

One real ``training_step`` runs per variant on a batch of 2 (its logging, optimizers and backward
replaced by recorders), with gradients kept on G_ds's outputs and the critic's logits. A variant file
without a check here fails :func:`test_every_variant_has_a_check`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lit_propulse.callbacks.progressive import ProgressiveScaleCallback
from lit_propulse.cli import ProPulseCLI
from lit_propulse.commands.grid import variant_base
from lit_propulse.core.batch import SRBatch
from lit_propulse.core.weights import save_module
from lit_propulse.networks.encoders import EWEncoder
from lit_propulse.networks.gds import DeeplySupervisedGenerator
from lit_propulse.networks.stylegan2 import Generator, num_ws_up_to

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt"
TOY = ROOT / "experiments" / "toy"
ABLATIONS = sorted((ROOT / "experiments" / "ablations").glob("*.yaml"))
LR_SIZE, SIZE = 8, 64
#: every branch weight of the exported G_ds (the E2E stage continues from it; the other variants keep it frozen)
HEAD_SENTINEL = 0.0123


class TinyIdentityNet(nn.Module):
    """A stand-in face embedder ([B, 3, H, W] -> [B, 4]) so the "only L_id" variant builds on toy faces
    (the toy YAMLs have no identity network; the CLI refuses lambda_id > 0 without one)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 8, stride=8)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).mean(dim=(2, 3))  # [B, 4]


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    """LightningCLI warns when ``args`` and ``sys.argv`` (pytest's) are both given."""
    monkeypatch.setattr("sys.argv", ["lit_propulse"])


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """gds/gds.pt (the fixture generator, w_dim 64, branches filled with HEAD_SENTINEL) and ew/ew.pt
    (an E_W shaped like experiments/toy/ew.yaml's, so E_W+'s init_from_ew accepts it)."""
    out = tmp_path_factory.mktemp("ablation_exports")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G = Generator.from_checkpoint(str(FIX))
        gds = DeeplySupervisedGenerator(G, LR_SIZE, head_hidden=(8, 8))
        with torch.no_grad():
            for p in gds.heads.parameters():
                p.fill_(HEAD_SENTINEL)
        (out / "gds").mkdir()
        gds.save(out / "gds" / "gds.pt")
        ew = EWEncoder(LR_SIZE, G.w_dim, G.num_ws, channels=32, num_groups=1, rcabs_per_group=2, out_channels=256)
        save_module(ew, out / "ew" / "ew.pt")
    return out


def overrides(stage: str, delta: str, out: Path, run_dir: Path, identity: bool = True) -> list[str]:
    """Put the toy stage on the fixture generator and ``out``'s exports; networks a delta removes
    (``X: null``) get no override (as tests/test_propulse_stages.py does); a delta with lambda_id > 0
    gets :class:`TinyIdentityNet` when ``identity``."""
    args = [
        "--model.init_args.gds.init_args.path",
        str(out / "gds" / "gds.pt"),
        "--model.init_args.encoder.init_args.w_dim",
        "64",
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger",
        "false",
    ]
    if "discriminator: null" not in delta:
        args += ["--model.init_args.discriminator.init_args.path", str(FIX)]
    if stage in ("ewplus", "e2e") and "ew_encoder: null" not in delta:
        args += ["--model.init_args.ew_encoder.init_args.path", str(out / "ew" / "ew.pt")]
    if identity and "lambda_id: 1.0" in delta:
        args += ["--model.init_args.loss.init_args.identity_net", f"{__name__}.TinyIdentityNet"]
    return args


@dataclass
class Step:
    """What one training_step of a configured variant did."""

    module: nn.Module
    progressive: ProgressiveScaleCallback
    logs: dict[str, Tensor] = field(default_factory=dict)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    out: object = None  # the ImageOutput of the encoder's forward (gradients retained)
    fake_logits: Tensor | None = None  # the critic's logits on that output (gradients retained)
    heads_before: list[Tensor] = field(default_factory=list)  # G_ds's branch weights before the step

    def weights(self) -> dict[str, float]:
        return dict(self.module.loss.weights)

    def optimised(self) -> set[int]:
        return {id(p) for p in self.optimizers[0].param_groups[0]["params"]} if self.optimizers else set()

    def side_grads(self) -> dict[int, Tensor | None]:
        return {r: img.grad for r, img in self.out.side_images.items()}


class _Opt:
    """Stands in for Lightning's LightningOptimizer in a trainer-less training_step."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.optimizer = opt

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.optimizer.step()


def configure(delta: Path, exports: Path, run_dir: Path, extra: list[str] = ()) -> tuple[nn.Module, ProgressiveScaleCallback]:
    """The module and progressive schedule the CLI builds from ``<stage>.yaml`` + ``delta``."""
    stage = variant_base(str(delta))
    text = delta.read_text()
    cli = ProPulseCLI(args=["--config", str(TOY / stage), "--config", str(delta), *overrides(stage[:-5], text, exports, run_dir), *extra], run=False)
    prog = next(c for c in cli.trainer.callbacks if isinstance(c, ProgressiveScaleCallback))
    return cli.model, prog


def training_step(module: nn.Module, prog: ProgressiveScaleCallback) -> Step:
    """One real ``training_step`` at the schedule's first scale, on 2 random LR/HR pairs."""
    step = Step(module, prog)
    prog.on_fit_start(None, module)  # the schedule's first scale (the callback ignores E_W modules)
    opts = module.configure_optimizers()
    step.optimizers = list(opts) if isinstance(opts, (list, tuple)) else [opts]
    wrapped = [_Opt(o) for o in step.optimizers]
    module.optimizers = lambda: wrapped if len(wrapped) > 1 else wrapped[0]
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda d, **kw: step.logs.update(d)
    module.log = lambda *a, **kw: None

    def keep_out(_m, _i, out):
        if step.out is None:
            for img in [out.image, *out.side_images.values()]:
                img.retain_grad()
            step.out = out

    def keep_logits(_m, _i, logits):
        if step.fake_logits is None and logits.requires_grad:  # the encoder's adversarial term
            logits.retain_grad()
            step.fake_logits = logits

    module.gds.register_forward_hook(keep_out)
    if module.discriminator is not None:
        module.discriminator.register_forward_hook(keep_logits)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    lr = torch.rand(2, 3, LR_SIZE, LR_SIZE, generator=g) * 2 - 1
    step.heads_before = [p.detach().clone() for p in module.gds.heads.parameters()]
    module.train()
    module.training_step(SRBatch(hr=hr, lr=lr, index=torch.arange(2)), 0)
    return step


def nonzero(t: Tensor | None) -> bool:
    return t is not None and bool(t.abs().sum() > 0)


# -- what each variant changes ----------------------------------------------------------------------
def term_off(step: Step, term: str) -> None:
    """A term of Eq. (5) switched off: weight 0, not computed, not logged."""
    assert step.weights()[term] == 0.0
    assert f"train/loss/{term}" not in step.logs
    if term == "id":
        assert step.module.loss.id is None
    if term == "adv":
        assert step.module.discriminator is None and len(step.optimizers) == 1  # no critic, no L_D
        assert step.fake_logits is None
    if term == "rec":  # nothing but L_rec reads the side outputs
        assert all(g is None or not nonzero(g) for g in step.side_grads().values())


def term_on(step: Step, term: str) -> None:
    """A term of Eq. (5) in use: positive weight, logged, and its gradient reaches the output."""
    assert step.weights()[term] > 0
    assert f"train/loss/{term}" in step.logs
    if term == "rec":
        assert all(nonzero(g) for g in step.side_grads().values()), "L_rec must reach every side output"
        assert {f"train/loss/rec/{r}" for r in (16, 32, 64)} <= set(step.logs)
    if term == "adv":
        assert step.module.discriminator is not None and len(step.optimizers) == 2
        assert nonzero(step.fake_logits.grad), "L_adv must reach the critic's logits"
        assert "train/loss/D/wgan" in step.logs
    if term == "id":
        assert step.module.loss.id is not None
    assert nonzero(step.out.image.grad)


def pro_pulse_wiring(step: Step) -> None:
    """What the full method has and only the named variants change: progressive E_W+ from the first
    scale with E_W guidance, pre-trained frozen G_ds branches, L_rec on every side output."""
    m = step.module
    assert type(m).__name__ == "EWPlusModule" and m.hparams.guidance == "ew" and m.ew_encoder is not None
    assert not step.progressive.direct and step.progressive.scales == [16, 32, 64] and int(m.active_scale) == 16
    heads_frozen(step)
    assert m.loss.rec.use_side_outputs


def heads_frozen(step: Step) -> None:
    heads = list(step.module.gds.heads.parameters())
    assert all(not p.requires_grad and p.grad is None for p in heads)
    assert all(torch.all(p == HEAD_SENTINEL) for p in heads), "G_ds's trained branches must be loaded as exported"
    assert not ({id(p) for p in heads} & step.optimised())
    assert step.module.gds_loss is None and not any(k.startswith("train/loss/gds/") for k in step.logs)


def check_full(step: Step) -> None:
    pro_pulse_wiring(step)
    term_on(step, "rec"), term_on(step, "adv"), term_off(step, "id")


def check_without_rec(step: Step) -> None:
    term_off(step, "rec"), term_on(step, "adv")


def check_without_id(step: Step) -> None:
    # the toy stage already has lambda_id = 0 (no identity network for toy faces): same as "full" there
    term_off(step, "id"), term_on(step, "rec"), term_on(step, "adv")


def check_without_adv(step: Step) -> None:
    term_off(step, "adv"), term_on(step, "rec")


def check_only_rec(step: Step) -> None:
    term_on(step, "rec"), term_off(step, "id"), term_off(step, "adv")
    assert set(step.logs) == {"train/loss/rec", "train/loss/total"} | {f"train/loss/rec/{r}" for r in (16, 32, 64)}


def check_only_adv(step: Step) -> None:
    term_on(step, "adv"), term_off(step, "rec"), term_off(step, "id")
    penalty = {"train/loss/D/gp"} if step.module.gp is not None else set()  # the toy YAMLs' lazy WGAN-GP (first critic step)
    assert set(step.logs) == {"train/loss/adv", "train/loss/total", "train/loss/D/wgan"} | penalty


def check_only_id(step: Step) -> None:
    term_on(step, "id"), term_off(step, "rec"), term_off(step, "adv")
    assert set(step.logs) == {"train/loss/id", "train/loss/total"}


def check_without_gds(step: Step) -> None:
    """L_rec on the final output only (N = 1): the side outputs get no gradient, the final image does."""
    assert not step.module.loss.rec.use_side_outputs
    assert all(g is None for g in step.side_grads().values())
    assert nonzero(step.out.image.grad)
    assert {k for k in step.logs if k.startswith("train/loss/rec/")} == {"train/loss/rec/64"}
    term_on(step, "adv"), heads_frozen(step)


def check_without_ew_guidance(step: Step) -> None:
    """Eq. (10) with R_2q(w_avg): the rows E_W+ does not produce yet are the generator's mean latent."""
    m = step.module
    assert m.hparams.guidance == "latent_avg" and m.ew_encoder is None and int(m.active_scale) == 16
    lr = torch.rand(2, 3, LR_SIZE, LR_SIZE) * 2 - 1
    with torch.no_grad():
        ws = m.compose_ws(lr)  # [B, num_ws, w_dim]
    own = num_ws_up_to(16)
    assert 0 < own < ws.shape[1]
    avg = m.gds.generator.latent_avg.reshape(1, 1, -1).expand(2, ws.shape[1] - own, -1)
    torch.testing.assert_close(ws[:, own:], avg)
    assert not torch.allclose(ws[:, :own], avg[:, :1].expand(-1, own, -1))
    term_on(step, "rec"), term_on(step, "adv")


def check_ewplus_direct(step: Step) -> None:
    """Every w+ row from E_W+ from the first step, for the whole schedule's number of steps; E_W is not called."""
    m, prog = step.module, step.progressive
    assert prog.direct and prog.scales == [64] and int(m.active_scale) == 64
    assert prog.total_steps == 3 * prog.steps_per_scale
    calls = []
    hook = m.ew_encoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        ws = m.compose_ws(torch.rand(2, 3, LR_SIZE, LR_SIZE) * 2 - 1)
    hook.remove()
    assert ws.shape[1] == m.gds.num_ws and not calls
    term_on(step, "rec"), term_on(step, "adv"), heads_frozen(step)


def check_ew_direct(step: Step) -> None:
    """The base encoder alone (Eq. (4)): one w for every layer from the first step; no schedule."""
    m = step.module
    assert type(m).__name__ == "EWModule" and not step.progressive.applies_to(m)
    with torch.no_grad():
        ws = m.compose_ws(torch.rand(2, 3, LR_SIZE, LR_SIZE) * 2 - 1)  # [B, num_ws, w_dim]
    assert ws.shape[1] == m.gds.num_ws
    torch.testing.assert_close(ws, ws[:, :1].expand_as(ws))
    assert {id(p) for p in m.encoder.parameters()} == step.optimised()
    term_on(step, "rec"), term_on(step, "adv"), heads_frozen(step)


def check_e2e(step: Step) -> None:
    """E2E's E_W+ half: G_ds's branches, as E2E's E_W stage exported them (not reset), keep training with
    the encoder under Eq. (1) added to Eq. (5), guided by E_W, progressive as Pro-PULSE."""
    m = step.module
    heads = list(m.gds.heads.parameters())
    assert type(m).__name__ == "EWPlusModule" and m.hparams.guidance == "ew" and m.ew_encoder is not None
    assert not step.progressive.direct and int(m.active_scale) == 16
    assert heads and all(p.requires_grad for p in heads)
    assert {id(p) for p in heads} <= step.optimised()
    assert m.gds_loss is not None and "train/loss/gds/pix" in step.logs
    assert all(nonzero(p.grad) for p in heads if p.dim() > 1), "every branch conv must get a gradient"
    # the exported branches (not fresh ones), which the encoder's Adam step then moves
    assert all(torch.all(p == HEAD_SENTINEL) for p in step.heads_before), "E2E must continue the branches its E_W stage trained"
    assert all(not torch.equal(p, q) for p, q in zip(heads, step.heads_before) if p.dim() > 1)
    assert all(not p.requires_grad for p in m.gds.generator.parameters())
    term_on(step, "rec"), term_on(step, "adv")


CHECKS: dict[str, Callable[[Step], None]] = {
    "full": check_full,
    "without_rec": check_without_rec,
    "without_id": check_without_id,
    "without_adv": check_without_adv,
    "only_rec": check_only_rec,
    "only_adv": check_only_adv,
    "only_id": check_only_id,
    "without_gds": check_without_gds,
    "without_ew_guidance": check_without_ew_guidance,
    "ewplus_direct": check_ewplus_direct,
    "ew_direct": check_ew_direct,
    "e2e": check_e2e,
}


def test_every_variant_has_a_check():
    assert set(CHECKS) == {p.stem for p in ABLATIONS}, "a new experiments/ablations/*.yaml needs a check in tests/test_ablations.py"


@pytest.mark.parametrize("delta", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_ablation_effect(exports, tmp_path, delta):
    if delta.stem not in CHECKS:
        pytest.fail(f"{delta.name}: no check of its effect in tests/test_ablations.py CHECKS")
    module, prog = configure(delta, exports, tmp_path)
    CHECKS[delta.stem](training_step(module, prog))


def test_only_id_is_refused_without_an_identity_network(exports, tmp_path):
    """On the toy stage as written (no identity network), "only L_id" fails before training, clearly."""
    delta = ROOT / "experiments" / "ablations" / "only_id.yaml"
    stage = variant_base(str(delta))
    args = overrides(stage[:-5], delta.read_text(), exports, tmp_path, identity=False)
    with pytest.raises(ValueError, match="identity network"):
        ProPulseCLI(args=["--config", str(TOY / stage), "--config", str(delta), *args], run=False)


def test_a_variant_that_changes_nothing_fails_its_check(exports, tmp_path):
    """The checks see the deltas: the full method's config fails "w/o L_adv"'s check."""
    module, prog = configure(ROOT / "experiments" / "ablations" / "full.yaml", exports, tmp_path)
    with pytest.raises(AssertionError):
        check_without_adv(training_step(module, prog))
