"""``--samples`` and ``--dial`` for the commands that upsample (``upsample``), docs/beyond.md:

* ``--samples N``: N answers per input that keep what the LR determines and resample the rest
  (:func:`lit_propulse.samples.sample_answers`: the noise maps above the LR size, the w+ rows above
  4x it), each written with its L_DS, plus the per-pixel spread map over them; with ``--refine`` each
  answer is refined to ε as well.
* ``--dial ALPHA`` / ``--dial-scales N``: answer at one position of the fidelity / realism dial
  between E_W and E_W+ (:class:`lit_propulse.dial.DialedUpsampler`); ``--refine`` and ``--samples``
  then start from the dialled w+.

Written per input ``<name>`` (``--samples``): ``<name>/sample_<k>.png`` (k = 0 .. N-1),
``<name>/spread.png`` (:func:`lit_propulse.samples.spread_image`: black = every answer agrees, white =
this input's largest spread) and ``<name>/samples.png`` (LR | the N answers | spread map); report.json
gets, per output, each answer's file and L_DS and the spread's mean and max.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from lit_propulse.core.errors import UserFacingError

if TYPE_CHECKING:
    from lit_propulse.commands.common import Item
    from lit_propulse.samples import SampleConfig, Samples

__all__ = ["add_samples_arguments", "dial_settings", "dialed_upsampler", "draw_samples", "sample_config", "samples_settings", "write_samples"]


def add_samples_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of many answers and of the dial, in their own group."""
    g = p.add_argument_group("many answers and the fidelity / realism dial (docs/beyond.md)")
    g.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="also write N answers per input that differ only where the LR leaves the face free, each with its L_DS in report.json, "
        "and spread.png, where they differ (0 = off)",
    )
    g.add_argument(
        "--samples-strength",
        type=float,
        default=1.0,
        help="how far the resampled w+ rows move toward a random style: 1 = replaced, 0 = kept (only the noise maps differ)",
    )
    g.add_argument(
        "--samples-rows-above",
        type=int,
        default=None,
        metavar="R",
        help="resample the w+ rows of the layers above resolution R (default: 4x the LR size; with --refine the LR size makes answers that differ more)",
    )
    g.add_argument("--samples-seed", type=int, default=0, help="seed; an input's answers depend only on it and the input's name")
    d = g.add_mutually_exclusive_group()
    d.add_argument(
        "--dial",
        type=float,
        default=None,
        metavar="ALPHA",
        help="answer at the blend dial w+ = (1 - ALPHA)·E_W + ALPHA·E_W+ (0 = E_W, 1 = E_W+); needs an E_W+ and its E_W",
    )
    d.add_argument(
        "--dial-scales",
        type=int,
        default=None,
        metavar="N",
        help="answer at the scale dial: the first N of E_W+'s progressive scales over E_W's code (0 = E_W, all of them = E_W+)",
    )


def dialed_upsampler(up: nn.Module, args: argparse.Namespace) -> nn.Module:
    """``up`` answering at ``--dial`` / ``--dial-scales`` (:class:`~lit_propulse.dial.DialedUpsampler`);
    ``up`` itself without. The ``--samples`` flags are checked here too, before any input is read."""
    sample_config(args)
    if args.dial is None and args.dial_scales is None:
        return up
    from lit_propulse.dial import DialedUpsampler

    flag = "--dial" if args.dial is not None else "--dial-scales"
    try:
        return DialedUpsampler(up, alpha=args.dial, position=args.dial_scales)
    except ValueError as e:
        raise UserFacingError(f"{flag}: {e}") from None


def dial_settings(up: nn.Module) -> str | None:
    """The dial's entry of report.json; None without ``--dial`` / ``--dial-scales``."""
    from lit_propulse.dial import DialedUpsampler
    from lit_propulse.refine import RefinedUpsampler

    if isinstance(up, RefinedUpsampler):
        up = up.upsampler
    return up.describe() if isinstance(up, DialedUpsampler) else None


def sample_config(args: argparse.Namespace) -> SampleConfig | None:
    """The :class:`~lit_propulse.samples.SampleConfig` of ``--samples`` (None when 0); its flags checked."""
    if args.samples < 0:
        raise UserFacingError(f"--samples must be >= 0 (0 = off), got {args.samples}")
    if not args.samples:
        return None
    from lit_propulse.samples import SampleConfig

    try:
        return SampleConfig(num_samples=args.samples, rows_above=args.samples_rows_above, strength=args.samples_strength, seed=args.samples_seed)
    except ValueError as e:
        raise UserFacingError(f"--samples: {e}") from None


def draw_samples(up: nn.Module, lr: Tensor, args: argparse.Namespace, names: list[str]) -> Samples | None:
    """``--samples`` answers for the LRs [B, 3, l, l] of one batch (None without ``--samples``); the
    seed of each input is ``--samples-seed`` and its name. Under ``--refine`` every answer is refined
    with the same settings, starting from the (dialled) encoder's w+."""
    config = sample_config(args)
    if config is None:
        return None
    from lit_propulse.refine import RefinedUpsampler
    from lit_propulse.samples import sample_answers

    refine, fit = None, None
    if isinstance(up, RefinedUpsampler):
        refine, fit, up = up.config, up.fit(), up.upsampler
    keys = [zlib.crc32(n.encode()) for n in names]
    try:
        return sample_answers(up, lr, config, keys, refine, fit)
    except ValueError as e:
        raise UserFacingError(f"--samples: {e}") from None


def write_samples(out_dir: Path, item: Item, samples: Samples, j: int, size: int) -> dict[str, Any]:
    """Write input ``j`` of ``samples`` into ``<out_dir>/<item.name>/`` (module docstring); returns its report entry."""
    from lit_propulse.core.images import rows_grid, save_image
    from lit_propulse.samples import spread_image

    d = out_dir / item.name
    images = samples.images[j].clamp(-1, 1).float().cpu()  # [N, 3, H, W]
    spread = samples.spread[j : j + 1].float().cpu()  # [1, 1, H, W]
    answers = []
    for k, img in enumerate(images):
        save_image(img, d / f"sample_{k}.png")
        answers.append({"file": f"{item.name}/sample_{k}.png", "l_ds": float(samples.l_ds[j, k])})
    grey = spread_image(spread)  # [1, 3, H, W]
    save_image(grey, d / "spread.png")
    panel = [item.lr[None].float().cpu()] + [img[None] for img in images] + [grey]
    save_image(rows_grid(panel, size), d / "samples.png")
    return {
        "answers": answers,
        "spread": {"file": f"{item.name}/spread.png", "mean": float(spread.mean()), "max": float(spread.max())},
        "panel": f"{item.name}/samples.png",
    }


def samples_settings(args: argparse.Namespace, up: nn.Module) -> dict[str, Any] | None:
    """The answers' entry of report.json; None without ``--samples``."""
    config = sample_config(args)
    if config is None:
        return None
    lr_size = up.lr_size
    rows = config.rows_above or min(4 * lr_size, up.size)
    from lit_propulse.refine import RefinedUpsampler

    refine = up.config if isinstance(up, RefinedUpsampler) else None
    return {
        "num_samples": config.num_samples,
        "resampled": f"noise maps above {lr_size}x{lr_size}, w+ rows of the layers above {rows}x{rows} "
        f"(moved by {config.strength:g} toward a random style, truncation {config.truncation:g})",
        "seed": config.seed,
        "refined": None if refine is None else refine.describe(),
        "panel_columns": "LR | sample_0 .. sample_N-1 | spread (black = every answer agrees, white = this input's largest spread)",
    }
