"""Full-size rehearsal of the paper setting on random weights (no download, no GPU needed).

Writes random-weight files in the exact layouts people download, and a fake CelebA-HQ in the real
list-file formats, then runs every paper YAML for a few steps at full size (FFHQ config-f 1024,
LR 16) and prints, per stage: seconds per step, peak memory (max RSS of the stage's own process),
and what the stage wrote. It shows that the paper configs start, train, export and chain on the
files users actually have, before anyone spends GPU days.

Files written under ``<root>/pretrained`` (random values, real keys, shapes and containers):

| file | layout |
|---|---|
| ``stylegan2-ffhq-config-f.pt`` | rosinality's ``convert_weight.py`` output as pSp/e4e distribute it: ``{"g_ema", "latent_avg"}``, no ``"d"`` |
| ``stylegan2-ffhq-config-f-disc.pt`` | the critic's own file: the port trainer's ``{"g", "d", "g_ema", "g_optim", "d_optim", "args"}`` (``args`` an ``argparse.Namespace``) |
| ``model_ir_se50.pth`` | TreB1eN's IR-SE50 ``Backbone`` state dict (pSp's "IR-SE50 Model") |
| ``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth`` | torchvision's full-model state dicts (classifier included) |
| ``weights-inception-2015-12-05-6726825d.pth`` | torch-fidelity's ``FeatureExtractorInceptionV3`` state dict |
| ``20180402-114759-vggface2.pt`` | facenet-pytorch's ``InceptionResnetV1`` VGGFace2 state dict (``logits`` over 8631 identities included) |

and ``<root>/data/CelebA-HQ``: ``CelebA-HQ-img/<idx>.jpg`` (1024² JPEG), ``CelebA-HQ-to-CelebA-mapping.txt``
(``idx orig_idx orig_file``), CelebA's ``list_eval_partition.txt`` (``<file> <0|1|2>``) and
``CelebAMask-HQ-attribute-anno.txt`` (count line, 40 names, ``<idx>.jpg`` and 40 values of -1/1).

    python benchmarks/rehearsal.py                      # every stage, 2 steps each, batch 1 (CPU: hours, the grid most of it)
    python benchmarks/rehearsal.py --reduced            # CI: one E_W step with the critic at 1024 (a few minutes)
    python benchmarks/rehearsal.py --flops              # training FLOPs per step and per stage (meta device, seconds)

``--reduced``: the converter-layout generator (no "d") + the separate critic file, a G_ds built on
the former (fresh branches, no G_ds training), one E_W step at 1024 with L_adv (critic) and L_id.

Each stage runs ``python -m lit_propulse fit`` (``test`` for eval) in its own process on copies of its
paper YAMLs (:data:`STAGES`) whose ``pretrained/``, ``runs/`` and ``data/`` paths are re-rooted under
``--root``, with overrides for a few steps, no validation, CSV logging and the batch size; PULSE in
eval runs 2 steps. The file names are the YAMLs' own: a YAML that names a file the rehearsal does not
write (or a critic file without "d") stops in the preflight, which the rehearsal reports.

The stages, in the default order (``--stages`` picks some): ``gds``, ``ew``, ``ewplus`` (``--steps``
per scale, six scales), ``e2e_ew`` and ``e2e`` (E2E's two stages), ``attributes`` (the attribute
classifier of the evaluation), ``psp`` (the pSp baseline), ``eval`` (``test`` with every method),
``pulse`` (``python -m lit_propulse pulse`` with the 1024 generator on two fake CelebA-HQ test images
brought to 16², ``--steps`` search steps) and ``grid`` (``python -m lit_propulse grid`` over
``experiments/ablations/*.yaml`` with ``--base-dir experiments``: ``--steps`` per E_W+ scale, each
variant scored on 2 test images; G_ds, E_W and E2E's stage 1 run first if their exports are missing).

    python benchmarks/rehearsal.py --stages attributes,psp,pulse   # some stages
    python benchmarks/rehearsal.py --stages grid --steps 1         # the ablation grid (hours on a CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

G_FILE = "stylegan2-ffhq-config-f.pt"
D_FILE = "stylegan2-ffhq-config-f-disc.pt"
ARCFACE = "model_ir_se50.pth"
VGG16 = "vgg16-397923af.pth"
ALEXNET = "alexnet-owt-7be5be79.pth"
INCEPTION = "weights-inception-2015-12-05-6726825d.pth"
FACENET = "20180402-114759-vggface2.pt"
SIZE, LR_SIZE = 1024, 16


# ----------------------------------------------------------------------------------------------
# Files in the layouts people download.


def _save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    print(f"  wrote {path} ({path.stat().st_size / 2**20:.0f} MiB)")


def write_stylegan2(pre: Path) -> None:
    """The converter's {g_ema, latent_avg} (no d) and the critic's own file in the port trainer's layout."""
    from lit_propulse.networks.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    G, G_train, D = Generator(SIZE), Generator(SIZE), Discriminator(SIZE)
    latent_avg = torch.randn(512) * 0.1
    if not (pre / G_FILE).exists():
        _save({"g_ema": G.port_state_dict(), "latent_avg": latent_avg}, pre / G_FILE)
    if not (pre / D_FILE).exists():
        args = argparse.Namespace(size=SIZE, channel_multiplier=2, latent=512, n_mlp=8, r1=10, path_regularize=2, mixing=0.9, batch=16)
        _save(
            {
                "g": G_train.port_state_dict(),
                "d": {k: v for k, v in D.state_dict().items()},
                "g_ema": G.port_state_dict(),
                "g_optim": torch.optim.Adam(G_train.parameters()).state_dict(),
                "d_optim": torch.optim.Adam(D.parameters()).state_dict(),
                "args": args,
            },
            pre / D_FILE,
        )


def write_feature_nets(pre: Path, which: set[str]) -> None:
    import torchvision

    from lit_propulse.networks.feature_nets import ArcFaceIdentity

    if ARCFACE in which and not (pre / ARCFACE).exists():
        _save(ArcFaceIdentity(None, random_init=True).state_dict(), pre / ARCFACE)
    if VGG16 in which and not (pre / VGG16).exists():
        _save(torchvision.models.vgg16().state_dict(), pre / VGG16)
    if ALEXNET in which and not (pre / ALEXNET).exists():
        _save(torchvision.models.alexnet().state_dict(), pre / ALEXNET)
    if INCEPTION in which and not (pre / INCEPTION).exists():
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        stub = pre / ".empty.pth"
        torch.save({}, stub)
        load = FeatureExtractorInceptionV3.load_state_dict
        FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None  # build without weights
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(stub))
        finally:
            FeatureExtractorInceptionV3.load_state_dict = load
            stub.unlink()
        _save(net.state_dict(), pre / INCEPTION)
    if FACENET in which and not (pre / FACENET).exists():
        from facenet_pytorch import InceptionResnetV1

        net = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631)
        _save(net.state_dict(), pre / FACENET)


CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair Blurry "
    "Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
    "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()


def write_celeba_hq(root: Path, num: int = 12) -> None:
    """A fake CelebA-HQ in the mapping layout: 1024² JPEGs and the three list files in their real formats.
    CelebA partitions: idx % 4 == 3 -> test (2), == 2 -> val (1, also test in the standard split), else train."""
    from PIL import Image

    img_dir = root / "CelebA-HQ-img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    orig = [int(x) for x in rng.choice(np.arange(1, 202600), size=num, replace=False)]
    for i in range(num):
        if not (img_dir / f"{i}.jpg").exists():
            small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((SIZE, SIZE), Image.BICUBIC).save(img_dir / f"{i}.jpg", quality=95)
    with open(root / "CelebA-HQ-to-CelebA-mapping.txt", "w") as f:
        f.write("idx         orig_idx    orig_file\n")
        for i, o in enumerate(orig):
            f.write(f"{i:<12d}{o - 1:<12d}{o:06d}.jpg\n")
    with open(root / "list_eval_partition.txt", "w") as f:
        for i, o in enumerate(sorted(orig)):
            f.write(f"{o:06d}.jpg {[0, 0, 1, 2][i % 4]}\n")
    with open(root / "CelebAMask-HQ-attribute-anno.txt", "w") as f:
        f.write(f"{num}\n" + " ".join(CELEBA_ATTRS) + "\n")
        for i in range(num):
            f.write(f"{i}.jpg " + " ".join(str(int(v)) for v in rng.choice([-1, 1], size=len(CELEBA_ATTRS))) + "\n")
    print(f"  wrote {root} ({num} images, mapping, partition, attributes)")


# ----------------------------------------------------------------------------------------------
# Stages: the paper YAMLs, their paths moved onto the rehearsal's files.

#: stage -> the CLI command and its config files (relative to the repository; ``base:`` files follow;
#: for ``grid``, the variant YAMLs; ``pulse`` reads none)
STAGES: dict[str, tuple[str, list[str]]] = {
    "gds": ("fit", ["experiments/gds.yaml"]),
    "ew": ("fit", ["experiments/ew.yaml"]),
    "ewplus": ("fit", ["experiments/ewplus.yaml"]),
    "e2e_ew": ("fit", ["experiments/e2e_ew.yaml"]),
    "e2e": ("fit", ["experiments/e2e.yaml"]),
    "attributes": ("fit", ["experiments/attributes.yaml"]),
    "psp": ("fit", ["experiments/psp.yaml"]),
    "eval": ("test", ["experiments/eval.yaml"]),
    "pulse": ("pulse", []),
    "grid": ("grid", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "ablations").glob("*.yaml"))),
}

#: every stage, in the order ``python benchmarks/rehearsal.py`` runs them (each after what it reads)
DEFAULT_STAGES = "gds,ew,ewplus,e2e_ew,e2e,attributes,psp,eval,pulse,grid"

#: stages of E_W+'s progressive schedule: ``--steps`` per scale, six scales
PROGRESSIVE = ("ewplus", "e2e")

#: what the grid's variants read: stage -> its export under ``runs/<stage>/`` (E_W+ variants: G_ds and
#: E_W; the E2E row: the E2E stage 1's exports). The rehearsal runs a missing one before the grid.
GRID_NEEDS: dict[str, str] = {"gds": "gds.pt", "ew": "ew.pt", "e2e_ew": "ew.pt"}

#: CelebA-HQ indices of the fake data set that ``pulse`` upsamples (test images: idx % 4 == 3)
PULSE_IMAGES = (3, 7)


def prepare_tree(root: Path) -> None:
    """``root`` as the working directory of every run: the YAMLs' relative paths (``pretrained/``,
    ``runs/``, ``data/``) land on the rehearsal's files; ``experiments`` and ``lit_propulse`` are links."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("experiments", "lit_propulse"):
        link = root / name
        if not link.exists():
            link.symlink_to(ROOT / name, target_is_directory=True)


def _set_pulse_steps(node, steps: int):
    """The resolved config with ``steps`` on every PULSEMethod (PULSE's 100 steps at 1024 take minutes per image on a CPU)."""
    if isinstance(node, dict):
        if str(node.get("class_path", "")).endswith("PULSEMethod"):
            node.setdefault("init_args", {})["steps"] = steps
        for v in node.values():
            _set_pulse_steps(v, steps)
    elif isinstance(node, list):
        for v in node:
            _set_pulse_steps(v, steps)
    return node


def _variant_of(path: str) -> str:
    import yaml

    return str((yaml.safe_load((ROOT / path).read_text()) or {}).get("variant_of"))


def _fit_overrides(steps: int, max_steps: int, progressive: bool) -> list[str]:
    """``max_steps`` training steps (``progressive``: ``steps`` per E_W+ scale), no validation, every
    step logged and timed."""
    return [
        "--trainer.max_steps",
        str(max_steps),
        *(["--progressive.steps_per_scale", str(steps)] if progressive else []),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks+=benchmarks.rehearsal.StepTimer",
    ]


def grid_argvs(root: Path, steps: int, batch: int) -> list[list[str]]:
    """The ``grid`` stage: every variant of ``experiments/ablations/`` (Table II's rows: the full method
    and its ablations) on the paper stage YAMLs (``--base-dir experiments``) into ``runs/ablations``,
    ``steps`` steps per E_W+ scale, each variant scored on 2 test images. Two grid calls into the same ``--out``, because the grid hands the same
    overrides to every variant: first the single-stage variants (``variant_of: ew``) with ``steps``
    steps, then all of them with six scales' worth (the single-stage ones are finished by then and
    skipped, so the second call's table has every row)."""
    variants = STAGES["grid"][1]
    single = [Path(v).stem for v in variants if _variant_of(v) not in PROGRESSIVE]
    head = ["grid", "--variants", *variants, "--base-dir", "experiments", "--out", "runs/ablations"]
    common = _common_overrides(batch, run=None) + ["--trainer.limit_test_batches", str(max(1, 2 // batch))]
    calls = [head + ["--only", ",".join(single)] + common + _fit_overrides(steps, steps, True)] if single else []
    return calls + [head + common + _fit_overrides(steps, 6 * steps, True)]


def _common_overrides(batch: int, run: str | None) -> list[str]:
    """The CPU, one device, no progress bar, CSV logging, ``batch``, no workers; ``run`` the run
    directory (None: the command sets it, as the grid does per variant)."""
    return [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        *(["--trainer.default_root_dir", run] if run else []),
        "--trainer.logger=lit_propulse.loggers.CSVLogger",
        "--data.init_args.batch_size",
        str(batch),
        "--data.init_args.num_workers",
        "0",
    ]


def pulse_argv(root: Path, steps: int, batch: int) -> list[str]:
    """The ``pulse`` stage: ``python -m lit_propulse pulse`` with the converter's generator at 1024 on
    :data:`PULSE_IMAGES` of the fake CelebA-HQ (copied to ``data/pulse``, brought to 16² by the
    command's ``--lr-size``), ``steps`` search steps, the Gaussian fit cached in the run directory."""
    import shutil

    src, dst = root / "data" / "CelebA-HQ" / "CelebA-HQ-img", root / "data" / "pulse"
    dst.mkdir(parents=True, exist_ok=True)
    for i in PULSE_IMAGES:
        if (src / f"{i}.jpg").is_file() and not (dst / f"{i}.jpg").is_file():
            shutil.copyfile(src / f"{i}.jpg", dst / f"{i}.jpg")
    return [
        "pulse",
        "--generator",
        f"pretrained/{G_FILE}",
        "--input",
        "data/pulse",
        "--lr-size",
        str(LR_SIZE),
        "--output",
        "runs/pulse",
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--device",
        "cpu",
        "--cache-dir",
        "runs/pulse/gaussian_fit",
    ]


def stage_argv(name: str, root: Path, steps: int, batch: int) -> list[str]:
    """CLI arguments of a stage run in ``root``: its paper YAMLs as they are, plus a few steps, no
    validation, CSV logging, the batch size; for ``test`` (eval), the resolved config with 2 PULSE
    steps; for ``pulse``, :func:`pulse_argv`; for ``grid``, its last call (:func:`grid_argvs`)."""
    command, files = STAGES[name]
    if command == "pulse":
        return pulse_argv(root, steps, batch)
    if command == "grid":
        return grid_argvs(root, steps, batch)[-1]
    argv = [command] + [a for f in files for a in ("--config", f)]
    run = f"runs/{name}"
    common = _common_overrides(batch, run)
    if command == "test":
        import yaml

        code = f"from lit_propulse.cli import main; main({argv + ['--print_config']!r})"
        out = subprocess.run([sys.executable, "-c", code], cwd=str(root), capture_output=True, text=True, env=_env())
        if out.returncode != 0:
            raise RuntimeError(f"{name}: --print_config failed: {out.stderr.strip().splitlines()[-1:]}")
        cfg = _set_pulse_steps(yaml.safe_load(out.stdout), 2)
        cfg.pop("base", None)
        path = root / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return ["test", "--config", str(path), *common, "--model.init_args.runtime_images", "1"]
    progressive = name in PROGRESSIVE
    argv += [*common, *_fit_overrides(steps, 6 * steps if progressive else steps, progressive)]
    if name == "gds":
        argv += ["--data.init_args.num_test", "2"]
    else:
        argv += ["--data.init_args.val_subset", "2"]
    return argv


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}


class StepTimer(pl.Callback):
    """Seconds of every training batch, written to ``<run>/rehearsal_steps.json`` at the end of training."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer, pl_module) -> None:
        (Path(trainer.default_root_dir) / "rehearsal_steps.json").write_text(json.dumps({"step_s": self.times}))


def run_stage(argv: list[str], root: Path, run: Path) -> dict:
    """Run one CLI command in its own process in ``root``: its exit code, seconds per step, peak RSS
    (the process's max resident set) and the files it wrote into ``run``."""
    run.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    code = (
        f"import resource, sys, json; from lit_propulse.cli import main; rc = main({argv!r}); "
        "print('REHEARSAL', json.dumps({'rc': rc, 'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))"
    )
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(root), capture_output=True, text=True, env=_env())
    info: dict = {"rc": proc.returncode, "wall_s": round(time.time() - t0, 1)}
    for line in proc.stdout.splitlines():
        if line.startswith("REHEARSAL "):
            info.update(json.loads(line[len("REHEARSAL ") :]))
    if info.get("rc") != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        info["error"] = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "?")[:600]
    steps = run / "rehearsal_steps.json"
    if steps.is_file():
        info["step_s"] = json.loads(steps.read_text())["step_s"]
    info["wrote"] = sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and before.get(p) != p.stat().st_mtime_ns and p.name != "rehearsal_steps.json" and not p.name.startswith(".")
    )
    return info


def pulse_step_s(run: Path) -> list[float]:
    """Seconds per search step of every image ``pulse`` searched (``results.csv``: its batch's time
    over the batch size, over the steps)."""
    import csv

    path = run / "results.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [float(r["time_s"]) / max(1, int(r["steps"])) for r in csv.DictReader(f)]


def run_grid(root: Path, steps: int, batch: int) -> dict:
    """The grid stage's calls (:func:`grid_argvs`) one after the other: exit code (the worst), wall
    seconds (the sum), peak RSS (the largest) and the files written: the tables, every variant's
    export and evaluation report (:func:`report_grid` gives one line per variant)."""
    infos = [run_stage(argv, root, root / "runs" / "ablations") for argv in grid_argvs(root, steps, batch)]
    info: dict = {"rc": max((i.get("rc", 1) for i in infos), key=abs), "wall_s": round(sum(i["wall_s"] for i in infos), 1)}
    if all("maxrss_kib" in i for i in infos):
        info["maxrss_kib"] = max(i["maxrss_kib"] for i in infos)
    errors = [i["error"] for i in infos if i.get("error")]
    if errors:
        info["error"] = errors[-1]
    info["wrote"] = sorted({w for i in infos for w in i["wrote"] if "/" not in w or w.endswith((".pt", "/test/report.json"))})
    return info


def report_grid(out: Path) -> None:
    """One line per variant of ``<out>/table_ii.csv``: its status, seconds per training step, and
    whether its evaluation report is there."""
    import csv

    if not (out / "table_ii.csv").is_file():
        print(f"    no {out / 'table_ii.csv'}")
        return
    with open(out / "table_ii.csv") as f:
        for row in csv.DictReader(f):
            v = out / row["variant"]
            t = json.loads((v / "rehearsal_steps.json").read_text())["step_s"] if (v / "rehearsal_steps.json").is_file() else []
            per_step = f"{sum(t) / len(t):.1f} s/step over {len(t)} steps" if t else "—"
            rep = "test/report.json" if (v / "test" / "report.json").is_file() else "no report"
            print(f"    {row['variant']} ({row['base']}): {row['status']}; {per_step}; {rep}" + (f"; missing {row['missing']}" if row.get("missing") else ""))


def report(name: str, info: dict) -> None:
    t = info.get("step_s") or []
    warm = t[1:] or t
    per_step = f"{sum(warm) / len(warm):.1f} s/step (first {t[0]:.1f} s)" if t else "—"
    if name == "pulse" and t:
        per_step = f"{sum(t) / len(t):.1f} s/step per image ({len(t)} images)"
    rss = f"{info['maxrss_kib'] / 2**20:.1f} GiB" if "maxrss_kib" in info else "—"
    status = "ok" if info.get("rc") == 0 else f"FAILED: {info.get('error', '')}"
    print(f"[{name}] {status}; {per_step}; peak RSS {rss}; wall {info['wall_s']} s")
    for w in info["wrote"]:
        if not w.startswith(("checkpoints/", "images/")) or w.endswith(("last.ckpt", "val_latest.png")):
            print(f"    wrote {w}")


# ----------------------------------------------------------------------------------------------
# FLOPs per training step at full size (meta device: no memory, no time).


def training_flops(batch: int = 4) -> list[dict]:
    """FLOPs (2 x MACs, torch FlopCounterMode) of one training step of every stage at the paper's size
    and ``batch``, counted on the meta device: the forward, the backward and the critic's step."""
    from torch.utils.flop_counter import FlopCounterMode

    from lit_propulse.inference import encode_ws
    from lit_propulse.losses.gan import WGANDiscriminatorLoss
    from lit_propulse.losses.propulse import EncoderLoss, GdsLoss
    from lit_propulse.networks.encoders import EWEncoder, EWPlusEncoder
    from lit_propulse.networks.feature_nets import ArcFaceIdentity, VGGPerceptual
    from lit_propulse.networks.gds import DeeplySupervisedGenerator
    from lit_propulse.networks.stylegan2 import Discriminator, Generator

    rows = []
    meta = torch.device("meta")  # built on the CPU (some constructors read values), then moved: no memory, no compute
    G = Generator(SIZE)
    gds = DeeplySupervisedGenerator(G, LR_SIZE).to(meta)
    D = Discriminator(SIZE).to(meta)
    vgg = VGGPerceptual(None, random_init=True).to(meta)
    arc = ArcFaceIdentity(None, random_init=True).to(meta)
    ew = EWEncoder(LR_SIZE, 512, G.num_ws).to(meta)
    ewp = EWPlusEncoder(LR_SIZE, 512, G.num_ws, scales=[32, 64, 128, 256, 512, 1024]).to(meta)
    lr = torch.randn(batch, 3, LR_SIZE, LR_SIZE, device=meta)
    hr = torch.randn(batch, 3, SIZE, SIZE, device=meta)

    def count(fn) -> float:
        with FlopCounterMode(display=False) as c:
            fn()
        return float(c.get_total_flops())

    def gds_step(heads_train: bool = True):
        ws = G.to_ws(G.mapping(torch.randn(batch, 512, device="meta")))
        out = gds(ws.detach(), noise="const")
        total, _ = GdsLoss(1.0, vgg)(out)
        total.backward()

    def enc_step(encoder, scale=None, e2e=False):
        ws = encode_ws(G, encoder, lr, scale, ew if scale is not None else None, "ew")
        out = gds(ws, noise="const")
        total, _ = EncoderLoss(1.0, 1.0, 0.01, identity_net=arc)(out, lr, hr, D(out.image))
        if e2e:
            total = total + GdsLoss(1.0, vgg)(out)[0]
        total.backward()
        d_loss = WGANDiscriminatorLoss()(D(hr), D(out.image.detach()))
        d_loss.backward()

    gds.heads.requires_grad_(True)
    rows.append({"stage": "G_ds", "steps": 50_000, "flops_per_step": count(gds_step)})
    gds.heads.requires_grad_(False)
    rows.append({"stage": "E_W", "steps": 50_000, "flops_per_step": count(lambda: enc_step(ew))})
    for s in (32, 64, 128, 256, 512, 1024):
        rows.append({"stage": f"E_W+ scale {s}", "steps": 10_000, "flops_per_step": count(lambda s=s: enc_step(ewp, s))})
    gds.heads.requires_grad_(True)
    rows.append({"stage": "E2E E_W (branches train, Eq. (1) with VGG)", "steps": 50_000, "flops_per_step": count(lambda: enc_step(ew, e2e=True))})
    rows.append({"stage": "E2E E_W+ scale 1024 (each scale about the same)", "steps": 60_000, "flops_per_step": count(lambda: enc_step(ewp, 1024, e2e=True))})
    for r in rows:
        r["total"] = r["flops_per_step"] * r["steps"]
    return rows


def print_flops(batch: int) -> None:
    rows = training_flops(batch)
    print(f"Training FLOPs at 1024, LR 16, batch {batch} (FLOPs = 2 x MACs, torch FlopCounterMode; forward + backward + critic step):")
    print("| stage | TFLOPs / step | steps | PFLOPs in all |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['flops_per_step'] / 1e12:.2f} | {r['steps']:,} | {r['total'] / 1e15:.0f} |")


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="/tmp/lit_propulse_rehearsal", help="where the files, data and runs go")
    ap.add_argument("--steps", type=int, default=2, help="training steps per stage (per scale for E_W+)")
    ap.add_argument("--batch-size", type=int, default=1, help="batch size (the paper YAMLs use 4; 1 keeps CPU memory and time down)")
    ap.add_argument("--stages", default=DEFAULT_STAGES, help=f"comma-separated stages to run, in order (of {', '.join(STAGES)})")
    ap.add_argument("--reduced", action="store_true", help="CI mode: one E_W step at 1024 with the critic from its own file")
    ap.add_argument("--flops", action="store_true", help="only print the training FLOPs per stage (meta device)")
    ap.add_argument(
        "--encoder-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra CLI argument for the encoder stages (ew, ewplus, e2e_ew, e2e), e.g. "
        f"--encoder-arg=--model.init_args.discriminator.init_args.path=pretrained/{D_FILE} while a YAML still names a critic file without 'd'",
    )
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"--stages: unknown {', '.join(unknown)} (choose from {', '.join(STAGES)})")
    if args.flops:
        print_flops(4)
        return 0
    root = Path(args.root).resolve()
    pre = root / "pretrained"
    print(f"rehearsal in {root}")
    prepare_tree(root)
    write_stylegan2(pre)
    if args.reduced:
        write_feature_nets(pre, {ARCFACE})
        write_celeba_hq(root / "data" / "CelebA-HQ", num=4)
        from lit_propulse.networks.gds import DeeplySupervisedGenerator
        from lit_propulse.networks.stylegan2 import Generator

        gds = root / "runs" / "gds" / "gds.pt"
        if not gds.exists():
            gds.parent.mkdir(parents=True, exist_ok=True)
            DeeplySupervisedGenerator(Generator.from_checkpoint(pre / G_FILE), LR_SIZE).save(gds)  # fresh branches on the converter's G
        argv_ = stage_argv("ew", root, 1, 1) + ["--model.init_args.discriminator.init_args.path", f"pretrained/{D_FILE}", "--data.init_args.val_subset", "1"]
        info = run_stage(argv_, root, root / "runs" / "ew")
        report("ew (reduced)", info)
        return 0 if info.get("rc") == 0 else 1
    write_feature_nets(pre, {ARCFACE, VGG16, ALEXNET, INCEPTION, FACENET})
    write_celeba_hq(root / "data" / "CelebA-HQ")
    failed = False

    def run_one(name: str) -> None:
        nonlocal failed
        files = STAGES[name][1]
        if not all((ROOT / f).is_file() for f in files):
            print(f"[{name}] skipped: {', '.join(f for f in files if not (ROOT / f).is_file())} does not exist")
            return
        if name == "grid":
            for need, export in GRID_NEEDS.items():
                if not (root / "runs" / need / export).is_file():
                    print(f"[grid] runs/{need}/{export} (read by the variants) is missing: running {need} first")
                    run_one(need)
            info = run_grid(root, args.steps, args.batch_size)
        else:
            extra = args.encoder_arg if name in ("ew", "ewplus", "e2e_ew", "e2e") else []
            info = run_stage(stage_argv(name, root, args.steps, args.batch_size) + extra, root, root / "runs" / name)
            if name == "pulse":
                info["step_s"] = pulse_step_s(root / "runs" / name)
        report(name, info)
        if name == "grid":
            report_grid(root / "runs" / "ablations")
        failed |= info.get("rc") != 0

    for name in stages:
        run_one(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
