"""``--refine`` for the commands that upsample (``upsample``): the trained encoder's answer refined per
image until it downscales to its LR within ε (:mod:`lit_propulse.refine`, docs/beyond.md)."""

from __future__ import annotations

import argparse

from torch import nn

from lit_propulse.core.errors import UserFacingError

__all__ = ["add_refine_arguments", "refine_settings", "refined_upsampler"]


def add_refine_arguments(p: argparse.ArgumentParser) -> None:
    """The refinement's flags, in their own group."""
    g = p.add_argument_group("refinement (consistent with the input at encoder speed, docs/beyond.md)")
    g.add_argument(
        "--refine",
        action="store_true",
        help="refine every answer per image until ||DS(HR) - LR||² <= --refine-eps (PULSE's criterion), "
        "starting from the encoder's w+; report.json gives each image's steps and L_DS totals",
    )
    g.add_argument(
        "--refine-variant",
        default="wplus",
        choices=["wplus", "sphere"],
        help="wplus: Adam in W+ with a prior toward the encoder's w+; sphere: PULSE's spherical search around it",
    )
    g.add_argument("--refine-eps", type=float, default=2e-3, help="ε on L_DS (mean squared error on [0, 1] images; PULSE's code: 2e-3)")
    g.add_argument("--refine-steps", type=int, default=100, help="most steps per image (an image stops as soon as it meets ε)")
    g.add_argument("--refine-lr", type=float, default=None, help="step size (default: the variant's, lit_propulse.refine.RefineConfig)")


def refined_upsampler(up: nn.Module, args: argparse.Namespace) -> nn.Module:
    """``up`` wrapped in a :class:`~lit_propulse.refine.RefinedUpsampler` with ``--refine``; ``up`` itself without."""
    if not args.refine:
        return up
    from lit_propulse.refine import RefineConfig, RefinedUpsampler

    kwargs = {"variant": args.refine_variant, "eps": args.refine_eps, "max_steps": args.refine_steps}
    if args.refine_lr is not None:
        kwargs["learning_rate"] = args.refine_lr
    try:
        config = RefineConfig.for_variant(**kwargs)
    except ValueError as e:
        raise UserFacingError(f"--refine: {e}") from None
    return RefinedUpsampler(up, config)


def refine_settings(up: nn.Module) -> dict | None:
    """The refinement's entry of report.json (settings and per-image totals); None without ``--refine``."""
    describe = getattr(getattr(up, "config", None), "describe", None)
    if describe is None or not hasattr(up, "summary"):
        return None
    return {"settings": describe(), **up.summary()}
