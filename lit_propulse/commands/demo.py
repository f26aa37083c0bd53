"""``python -m lit_propulse demo``: a web page (Gradio) that runs Pro-PULSE (and PULSE) on an uploaded
photo or LR (issue 17).

The page takes one image and shows, for it:

* what it was taken as, by the LR convention of ``upsample``
  (:class:`~lit_propulse.commands.common.LRRule`, docs/photos-editing.md "Which inputs are LRs"):
  the LR as it is (square and smaller than the generator's output), an HR face crop made LR with
  DS ("HR crop" mode), or a photo whose largest face is detected (MTCNN), aligned FFHQ-style and
  made LR with DS (photos, and every input in "photo" mode);
* the aligned crop (photos) or the square HR input, the LR the model saw, every side output of
  G_ds (Sec. III-C) and the final HR of Pro-PULSE (:class:`~lit_propulse.inference.ProPulseUpsampler`,
  Eq. (4)/(10));
* optionally PULSE (:class:`~lit_propulse.pulse.PULSE`, Menon et al. CVPR 2020) on the same
  generator, and several samples: PULSE's one-to-many searches (Sec. 4.4) and Pro-PULSE's many
  answers (:func:`lit_propulse.samples.sample_answers`: what the LR does not determine resampled),
  each with its L_DS, and their spread map (where the answers differ: detail the LR does not fix);
* optionally Pro-PULSE refined until it downscales to the LR within ε
  (:class:`lit_propulse.refine.RefinedUpsampler`, docs/beyond.md): whether it met ε, the steps it
  took, L_DS before and after; with several samples each answer is refined too;
* a zip of every image at its own size plus ``report.json``.

Models: the stage exports of ``upsample`` (``--checkpoint DIR`` or ``--gds/--encoder/--ew``); with
none given, the toy exports packaged in ``lit_propulse/data`` (``toy_gds_64.pt``,
``toy_ewplus_64.pt`` or ``toy_ew_64.pt``, ``toy_ew_64.pt``) when this install ships them. With only
``--generator`` (e.g. the packaged ``toy_stylegan2_64.pt``) the page runs PULSE alone and says
that Pro-PULSE is missing; with nothing usable the command stops with one line naming the remedy.

The page logic (:class:`DemoSession`) does not import Gradio; :func:`build_app` and :func:`main` do
(``pip install 'lit_propulse[demo]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from lit_propulse.cli import register_command
from lit_propulse.commands import common
from lit_propulse.core.errors import UserFacingError

if TYPE_CHECKING:
    import numpy as np

    from lit_propulse.inference import ProPulseUpsampler
    from lit_propulse.networks.stylegan2 import Generator
    from lit_propulse.pulse import GaussianFit
    from lit_propulse.refine import RefineConfig

#: what the uploaded image is taken as: by its size (the LR convention), a photo, or an HR face crop
InputMode = Literal["auto", "photo", "hr"]
MODES: dict[str, str] = {
    "auto": "by its size: smaller than the output = the LR, else a photo",
    "photo": "a photo: detect, align and DS the largest face",
    "hr": "an HR face crop: centre-crop and DS to the LR",
}

DEMO_EXTRA = "pip install 'lit_propulse[demo]' (gradio)"


# ----------------------------------------------------------------------------------------------
# Models.


@dataclass
class DemoModels:
    """What the page runs.

    Args:
        generator: the StyleGAN2 PULSE searches (G_ds's own unless ``--generator`` is given).
        lr_size: the LR side (the encoder's; ``--lr-size`` or size/64, at least 8, without one).
        upsampler: Pro-PULSE; None = PULSE only.
        files: the files loaded, for the report and the page.
        missing: one line per thing the page cannot show and why (shown on the page).
        device: where everything runs.
    """

    generator: Generator
    lr_size: int
    upsampler: ProPulseUpsampler | None = None
    files: dict[str, str | None] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    device: torch.device = torch.device("cpu")

    @property
    def size(self) -> int:
        return self.generator.size


def load_models(args: argparse.Namespace) -> DemoModels:
    """The networks of the parsed arguments (see the module docstring for the defaults)."""
    from lit_propulse.commands.common import load_upsampler, resolve_device, resolve_model_files
    from lit_propulse.networks.stylegan2 import Generator

    device = resolve_device(args.device)
    used, absent = common.default_model_files(args)
    up, files, missing = None, {}, []
    if absent and not args.generator:
        raise UserFacingError(
            "no Pro-PULSE stage exports given, and this install does not package the toy ones (" + ", ".join(absent) + "): "
            "give --checkpoint DIR (a pipeline run such as runs/toy) or --gds/--encoder[/--ew], or run PULSE alone on the packaged "
            f"toy StyleGAN2 with --generator {common.packaged(common.PACKAGED_GENERATOR) or 'lit_propulse/data/' + common.PACKAGED_GENERATOR}"
        )
    if absent:
        missing.append(
            "Pro-PULSE (aligned LR -> side outputs -> HR): no stage exports given (--checkpoint or --gds/--encoder) and "
            "none packaged (" + ", ".join(absent) + "); PULSE only"
        )
    else:
        up, files = load_upsampler(resolve_model_files(args), args.guidance, device)
        if used:
            files["packaged"] = "toy exports from lit_propulse/data"
    if args.generator:
        G = Generator.from_checkpoint(args.generator, map_location=device).eval()
        files["generator"] = args.generator
    else:
        G = up.gds.generator
    G.requires_grad_(False)
    lr_size = up.lr_size if up is not None else (args.lr_size or max(8, G.size // 64))
    if up is not None and args.lr_size is not None and args.lr_size != up.lr_size:
        raise UserFacingError(f"--lr-size {args.lr_size}: the encoder takes {up.lr_size}x{up.lr_size} LRs; drop --lr-size")
    if up is not None and G.size != up.size:
        raise UserFacingError(
            f"--generator {args.generator}: {G.size}x{G.size} output, but G_ds's is {up.size}x{up.size}; PULSE must search the "
            f"generator Pro-PULSE uses, or drop --generator"
        )
    if G.size % lr_size or not 1 <= lr_size < G.size:
        raise UserFacingError(f"--lr-size {lr_size}: must be smaller than the generator's {G.size}x{G.size} output and divide it")
    return DemoModels(G, int(lr_size), up, files, missing, device)


# ----------------------------------------------------------------------------------------------
# One request.


@dataclass
class DemoResult:
    """What the page shows for one image (tensors [3, h, w] in [-1, 1] on the CPU).

    status: Markdown: what the input was taken as, notes, timings.
    aligned: the aligned face crop (photos) or the square HR input; None for an LR as it is.
    lr: the LR the models saw. sides: side resolution -> side output. hr: Pro-PULSE's HR (refined
    with ``refine``). pulse: PULSE's best HR. samples: (image, caption) pairs. spread: the spread map
    over Pro-PULSE's answers (:func:`lit_propulse.samples.spread_image`), None with one sample.
    archive: the zip to download.
    """

    status: str
    aligned: Tensor | None = None
    lr: Tensor | None = None
    sides: dict[int, Tensor] = field(default_factory=dict)
    hr: Tensor | None = None
    pulse: Tensor | None = None
    samples: list[tuple[Tensor, str]] = field(default_factory=list)
    spread: Tensor | None = None
    archive: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)


class DemoSession:
    """The page's work, without Gradio: an uploaded file -> :class:`DemoResult`.

    Args:
        models: the networks (:func:`load_models`).
        out_root: where each request's zip is written (one subfolder per request).
        min_prob: minimum MTCNN face probability for photos.
        cache_dir: PULSE's Gaussian-fit cache (None = its default user cache).
        refine_config: the refinement of the "refine" option (None = :class:`~lit_propulse.refine.RefineConfig`'s
            defaults: W+, ε = 2e-3, at most 100 steps).
    """

    def __init__(
        self, models: DemoModels, out_root: str | os.PathLike, min_prob: float = 0.9, cache_dir: str | None = None, refine_config: RefineConfig | None = None
    ) -> None:
        from lit_propulse.refine import RefineConfig

        self.models = models
        self.out_root = Path(out_root)
        self.min_prob = float(min_prob)
        self.cache_dir = cache_dir
        self.refine_config = refine_config if refine_config is not None else RefineConfig()
        self._detector = None  # MTCNN, loaded at the first photo and kept
        self._fit: GaussianFit | None = None
        self._requests = 0

    def rule(self, mode: InputMode):
        from lit_propulse.commands.common import LRRule

        if mode not in MODES:
            raise UserFacingError(f"input mode must be one of {sorted(MODES)}, got {mode!r}")
        m = self.models
        return LRRule(m.size, m.lr_size, m.lr_size if mode == "hr" else None, detects=True, all_photos=mode == "photo")

    def prepare(self, path: Path, mode: InputMode):
        """(record, the first item or None) of ``path`` by the LR convention (largest face of a photo)."""
        from lit_propulse.commands.common import InputPreparer

        prep = InputPreparer(self.rule(mode), "largest", self.min_prob, 20, self.models.device)
        prep.detector = self._detector
        rec, items = prep(path)
        self._detector = prep.detector
        return rec, (items[0] if items else None)

    @property
    def can_dial(self) -> bool:
        """Whether the models have the dial's two ends: an E_W+ with its E_W (guidance "ew")."""
        from lit_propulse.networks.encoders import EWPlusEncoder

        up = self.models.upsampler
        return up is not None and isinstance(up.encoder, EWPlusEncoder) and up.ew_encoder is not None and up.guidance == "ew"

    def pulse_fit(self) -> GaussianFit:
        from lit_propulse.pulse import GaussianFit

        if self._fit is None:
            self._fit = GaussianFit.load_or_fit(self.models.generator, self.cache_dir, log=print)
        return self._fit

    def run(
        self,
        file: str | os.PathLike | None,
        mode: InputMode = "auto",
        use_pulse: bool = False,
        samples: int = 1,
        steps: int = 100,
        seed: int = 0,
        refine: bool = False,
        dial: float = 1.0,
    ) -> DemoResult:
        """Take ``file`` by ``mode``, upsample it with Pro-PULSE (refined to ε with ``refine``), optionally
        PULSE (``steps`` steps), ``samples`` samples of each (seeded by ``seed``), and write the zip.
        ``dial`` < 1 moves Pro-PULSE's code toward E_W's (the fidelity dial, :class:`~lit_propulse.dial.DialedUpsampler`:
        0 = E_W, 1 = E_W+); refinement and samples start from the dialled code."""
        if file is None:
            return DemoResult("Upload a photo or an LR first.")
        path, m = Path(file), self.models
        samples, steps, seed = max(1, int(samples)), max(1, int(steps)), int(seed)
        t0 = time.perf_counter()
        try:
            rec, item = self.prepare(path, mode)
        except UserFacingError as e:
            return DemoResult(f"**Cannot use this image:** {e}")
        if item is None:
            return DemoResult(f"**Skipped:** {rec.reason}")
        taken = {
            "lr": f"the LR as it is ({m.lr_size}x{m.lr_size})",
            "hr": f"an HR crop, made {m.lr_size}x{m.lr_size} with DS",
            "photo": f"a photo: {rec.faces_found} face(s) found, the largest aligned and made {m.lr_size}x{m.lr_size} with DS",
        }[rec.taken_as]
        res = DemoResult("", aligned=None if item.source is None else item.source.cpu(), lr=item.lr.cpu())
        lines = [f"**Taken as** {taken}." + (f" ({rec.note})" if rec.note else "")]
        lr = item.lr[None].to(m.device)  # [1, 3, l, l]
        refined = spread = None
        with torch.no_grad():
            if m.upsampler is not None:
                try:
                    up = self.dialled(float(dial))
                except ValueError as e:
                    return DemoResult(f"**Cannot use this dial:** {e}")
                out = up(lr)
                res.hr, res.sides = out.image[0].cpu(), {r: s[0].cpu() for r, s in sorted(out.side_images.items())}
                dial_note = "" if up is m.upsampler else f", {up.describe()}"
                lines.append(
                    f"**Pro-PULSE:** {type(m.upsampler.encoder).__name__} + G_ds{dial_note}, side outputs {list(res.sides)}, {time.perf_counter() - t0:.2f} s."
                )
                if refine:
                    refined = self.refine(lr, res, lines, up)
                if samples > 1:
                    spread = self.answers(lr, samples, seed, refine, res, lines, up)
        if use_pulse:
            t1 = time.perf_counter()
            from lit_propulse.pulse import PULSE, PULSEConfig

            pulse = PULSE(m.generator, self.pulse_fit(), PULSEConfig(steps=steps, seed=seed))
            found = pulse.sample(lr, samples)
            order = torch.argsort(found.loss).tolist()
            res.pulse = found.image[order[0]].detach().cpu()
            for k in order:
                ok = "within eps" if bool(found.success[k]) else "not within eps"
                res.samples.append((found.image[k].detach().cpu(), f"PULSE sample {k + 1}: L_DS {float(found.loss[k]):.2e} ({ok})"))
            lines.append(
                f"**PULSE:** {samples} search(es) of {steps} steps, best L_DS {float(found.loss[order[0]]):.2e} "
                f"(eps {found.eps:g}), {time.perf_counter() - t1:.1f} s."
            )
        res.report = {
            "input": path.name,
            "mode": mode,
            "taken_as": rec.taken_as,
            "note": rec.note,
            "face": item.face,
            "lr_size": m.lr_size,
            "size": m.size,
            "pulse": {"steps": steps, "samples": samples} if use_pulse else None,
            "seed": seed,
            "dial": float(dial) if m.upsampler is not None else None,
            "refine": None if refined is None else {"settings": self.refine_config.describe(), **refined},
            "samples": [f"sample_{k}.png: {c}" for k, (_, c) in enumerate(res.samples)],
            "spread": spread,
            "models": m.files,
            "missing": m.missing,
        }
        res.archive = self.write_archive(path.stem, res)
        res.status = "\n\n".join(lines)
        return res

    def dialled(self, dial: float):
        """The upsampler at ``dial`` (1 = Pro-PULSE as trained; below 1, toward E_W: the blend dial)."""
        if not 0.0 <= dial <= 1.0:
            raise ValueError(f"the dial goes from 0 (E_W) to 1 (E_W+), got {dial}")
        if dial == 1.0:
            return self.models.upsampler
        from lit_propulse.dial import DialedUpsampler

        return DialedUpsampler(self.models.upsampler, alpha=dial)

    def refine(self, lr: Tensor, res: DemoResult, lines: list[str], upsampler=None) -> dict:
        """Pro-PULSE's answer to ``lr`` [1, 3, l, l] refined to ε (:class:`~lit_propulse.refine.RefinedUpsampler`):
        ``res.hr`` and ``res.sides`` replaced by the refined ones, a status line added; returns the
        image's record (success, steps, L_DS before and after)."""
        from lit_propulse.refine import RefinedUpsampler

        t0, cfg = time.perf_counter(), self.refine_config
        base = self.models.upsampler if upsampler is None else upsampler
        up = RefinedUpsampler(base, cfg, self.pulse_fit() if cfg.variant == "sphere" else None)
        out = up(lr)
        res.hr, res.sides = out.image[0].cpu(), {r: s[0].cpu() for r, s in sorted(out.side_images.items())}
        rec = up.last.per_image()[0]
        met = f"within ε after {rec['steps']} step(s)" if rec["success"] else f"not within ε after {rec['steps']} steps (the best iterate is shown)"
        lines.append(
            f"**Refined** ({cfg.variant}, the HR and side outputs above): {met}; L_DS {rec['l_ds_encoder']:.2e} -> {rec['l_ds']:.2e} "
            f"(ε {cfg.eps:g}), {time.perf_counter() - t0:.2f} s."
        )
        return rec

    def answers(self, lr: Tensor, samples: int, seed: int, refine: bool, res: DemoResult, lines: list[str], upsampler=None) -> dict:
        """Pro-PULSE's ``samples`` answers to ``lr`` [1, 3, l, l] (:func:`lit_propulse.samples.sample_answers`,
        each refined to ε with ``refine``) appended to ``res.samples`` with their L_DS, their spread map
        in ``res.spread``, a status line added; returns the spread's mean and max."""
        from lit_propulse.samples import SampleConfig, sample_answers, spread_image

        t0, cfg, size = time.perf_counter(), self.refine_config, lr.shape[-1]
        fit = self.pulse_fit() if refine and cfg.variant == "sphere" else None
        base = self.models.upsampler if upsampler is None else upsampler
        s = sample_answers(base, lr, SampleConfig(num_samples=samples, seed=seed), [0], cfg if refine else None, fit)
        for k, loss in enumerate(s.l_ds[0].tolist()):
            res.samples.append((s.images[0, k].clamp(-1, 1).cpu(), f"Pro-PULSE answer {k + 1}: L_DS {loss:.2e}" + (" (within ε)" if loss <= cfg.eps else "")))
        res.spread = spread_image(s.spread)[0].cpu()
        spread = {"mean": float(s.spread.mean()), "max": float(s.spread.max())}
        lines.append(
            f"**Pro-PULSE answers:** {samples}, differing only where the LR leaves the face free (noise above {size}², styles above "
            f"{min(4 * size, self.models.size)}²){', each refined to ε' if refine else ''}; L_DS {float(s.l_ds.min()):.2e} to "
            f"{float(s.l_ds.max()):.2e}; spread mean {spread['mean']:.3f}, max {spread['max']:.3f} (white in the map); {time.perf_counter() - t0:.2f} s."
        )
        return spread

    def write_archive(self, stem: str, res: DemoResult) -> Path:
        """``<out_root>/<n>/<stem>.zip``: every image of ``res`` at its own size, and ``report.json``."""
        from lit_propulse.core.images import save_image

        self._requests += 1
        folder = self.out_root / f"{self._requests:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        images = {
            "lr.png": res.lr,
            "aligned.png": res.aligned,
            "hr.png": res.hr,
            "pulse.png": res.pulse,
            "spread.png": res.spread,
            **{f"side_{r}.png": s for r, s in res.sides.items()},
            **{f"sample_{k}.png": img for k, (img, _) in enumerate(res.samples)},
        }
        path = folder / f"{stem or 'result'}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, img in images.items():
                if img is not None:
                    save_image(img, folder / name)
                    z.write(folder / name, name)
            z.writestr("report.json", json.dumps({**res.report, "files": [n for n, i in images.items() if i is not None]}, indent=2))
        return path


def display_size(size: int, least: int = 256) -> int:
    """The side images are shown at: ``size`` times the smallest whole factor reaching ``least``."""
    return size * max(1, -(-least // size))


def to_display(img: Tensor | None, size: int | None = None) -> np.ndarray | None:
    """[3, h, w] in [-1, 1] -> uint8 [H, W, 3], enlarged pixel by pixel to ``size`` (None = as it is)."""
    from lit_propulse.core.images import resize_nearest, to_uint8

    if img is None:
        return None
    if size is not None and img.shape[-1] != size:
        img = resize_nearest(img[None], size)[0]
    return to_uint8(img).permute(1, 2, 0).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# The page.


def header(models: DemoModels) -> str:
    m = models
    lines = [
        "# lit_propulse: Pro-PULSE face upsampling",
        f"Generator {m.size}x{m.size}, LR {m.lr_size}x{m.lr_size}, on {m.device}. "
        "Upload a photo (faces are detected and aligned) or an LR; pick what the image is if its size does not say it.",
    ]
    if m.upsampler is not None:
        lines.append(
            f"**Pro-PULSE:** {type(m.upsampler.encoder).__name__} + G_ds with side outputs {list(m.upsampler.gds.resolutions)}"
            + (" (the packaged toy exports)" if "packaged" in m.files else "")
            + "."
        )
    lines += [f"**Missing:** {line}" for line in m.missing]
    return "\n\n".join(lines)


def build_app(session: DemoSession):
    """The Gradio page over ``session`` (``gr.Blocks``; call ``.launch()``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    m = session.models
    size = display_size(m.size)
    shown = f", shown at {size}x{size}" if size != m.size else ""

    def on_run(file, mode, use_pulse, refine, samples, steps, seed, dial):
        res = session.run(file, mode, bool(use_pulse), int(samples), int(steps), int(seed or 0), bool(refine), float(dial))
        sides = [(to_display(s, size), f"side {r}x{r}") for r, s in res.sides.items()]
        gallery = [(to_display(img, size), caption) for img, caption in res.samples]
        return (
            res.status,
            to_display(res.aligned, size),
            to_display(res.lr, size),
            sides or None,
            to_display(res.hr, size),
            to_display(res.pulse, size),
            gallery or None,
            to_display(res.spread, size),
            None if res.archive is None else str(res.archive),
        )

    with gr.Blocks(title="lit_propulse demo", analytics_enabled=False) as app:
        gr.Markdown(header(m), elem_id="header")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Photo or LR", elem_id="input-image")
                mode = gr.Radio([(text, key) for key, text in MODES.items()], value="auto", label="The image is", elem_id="input-mode")
                use_pulse = gr.Checkbox(
                    value=m.upsampler is None, label="Also run PULSE (a search per sample; slower)", elem_id="use-pulse", interactive=m.upsampler is not None
                )
                refine = gr.Checkbox(
                    value=False,
                    label=f"Refine Pro-PULSE until it downscales to the LR (L_DS <= {session.refine_config.eps:g}; a few generator steps)",
                    elem_id="refine",
                    visible=m.upsampler is not None,
                )
                dial = gr.Slider(
                    0.0,
                    1.0,
                    value=1.0,
                    step=0.05,
                    label="Fidelity dial: 1 = Pro-PULSE (E_W+), 0 = E_W's single code; between, a blend (docs/beyond.md)",
                    elem_id="dial",
                    visible=session.can_dial,
                )
                samples = gr.Slider(1, 8, value=1, step=1, label="Samples (PULSE searches; Pro-PULSE answers with their spread map)", elem_id="samples")
                steps = gr.Slider(10, 500, value=100, step=10, label="PULSE steps", elem_id="steps")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                run = gr.Button("Upsample", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                with gr.Row():
                    aligned = gr.Image(label=f"Aligned crop / HR input ({m.size}x{m.size}{shown})", format="png", interactive=False, elem_id="aligned")
                    lr = gr.Image(label=f"LR ({m.lr_size}x{m.lr_size}, shown at {size}x{size})", format="png", interactive=False, elem_id="lr")
                    hr = gr.Image(
                        label=f"HR, Pro-PULSE ({m.size}x{m.size}{shown})", format="png", interactive=False, elem_id="hr", visible=m.upsampler is not None
                    )
                    pulse = gr.Image(label=f"HR, PULSE ({m.size}x{m.size}{shown})", format="png", interactive=False, elem_id="pulse")
                sides = gr.Gallery(
                    label=f"Side outputs (each shown at {size}x{size})",
                    columns=4,
                    height="auto",
                    format="png",
                    elem_id="sides",
                    visible=m.upsampler is not None,
                )
                gallery = gr.Gallery(label=f"Samples (shown at {size}x{size})", columns=4, height="auto", format="png", elem_id="gallery")
                spread = gr.Image(
                    label="Spread over Pro-PULSE's answers (black = they agree, white = they differ most: detail the LR does not fix)",
                    format="png",
                    interactive=False,
                    elem_id="spread",
                    visible=m.upsampler is not None,
                )
                download = gr.File(label="Download: every image at its own size + report.json", elem_id="download")
        run.click(on_run, [image, mode, use_pulse, refine, samples, steps, seed, dial], [status, aligned, lr, sides, hr, pulse, gallery, spread, download])
    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lit_propulse demo",
        description="A web page running Pro-PULSE (and PULSE) on an uploaded photo or LR: aligned crop, LR, side outputs, HR, "
        "samples, download. Defaults to the packaged toy exports when this install ships them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model (stage exports, as for upsample)")
    g.add_argument("--checkpoint", default=None, metavar="DIR", help="a pipeline / stage run directory holding gds.pt, ew.pt, ewplus.pt")
    g.add_argument("--gds", default=None, help="G_ds export (gds.pt); default: lit_propulse/data/toy_gds_64.pt when packaged")
    g.add_argument("--encoder", default=None, help="ewplus.pt (E_W+) or ew.pt (E_W); default: the packaged toy_ewplus_64.pt / toy_ew_64.pt")
    g.add_argument("--ew", default=None, help="E_W export (ew.pt) filling the w+ rows E_W+ does not produce")
    g.add_argument("--guidance", default="ew", choices=["ew", "latent_avg"], help="what fills the w+ rows past E_W+'s scale")
    g.add_argument(
        "--generator", default=None, help="StyleGAN2 checkpoint (.pt, or an NVIDIA .pkl) for PULSE; default: G_ds's. Alone, the page runs PULSE only"
    )
    g.add_argument("--lr-size", type=int, default=None, help="LR side without an encoder (PULSE only); default: size/64, at least 8")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=7860, help="port to listen on")
    s.add_argument("--min-prob", type=float, default=0.9, help="minimum MTCNN face probability for photos")
    s.add_argument("--cache-dir", default=None, help="PULSE's Gaussian-fit cache (default: its user cache)")
    return p


@register_command("demo", "Web page (Gradio): upload a photo or LR -> aligned LR, side outputs, HR, PULSE, samples, download")
def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if not 0 < args.port < 65536:
        raise UserFacingError(f"--port must be in 1..65535, got {args.port}")
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        raise UserFacingError(f"the demo needs Gradio: {DEMO_EXTRA}") from None
    models = load_models(args)
    for line in models.missing:
        print(f"demo: missing: {line}")
    out_root = Path(tempfile.mkdtemp(prefix="lit_propulse_demo_"))
    app = build_app(DemoSession(models, out_root, args.min_prob, args.cache_dir))
    print(f"demo: serving on http://{args.host}:{args.port} (results under {out_root}; Ctrl-C stops)", flush=True)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=False,
        show_error=True,
        ssr_mode=False,
        allowed_paths=[str(out_root)],
        footer_links=[],
        theme=_theme(),
    )
    return 0


def _theme():
    """Gradio's default theme with system fonts (no web-font downloads: the page works offline)."""
    import gradio as gr

    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"])
