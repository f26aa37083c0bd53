"""Command line: ``python -m lit_propulse {fit,validate,test,predict} --config X.yaml`` (LightningCLI)
plus the project's own commands (added by later stages: ``pulse``, ``pipeline``, ``upsample``...).

LightningCLI runs in jsonargparse's ``omegaconf+`` mode: interpolations such as ``${data.init_args.lr_size}``
are resolved after *all* config files and command-line overrides are merged, so an override
propagates into every place that refers to it (plain ``omegaconf`` mode resolves each file on its
own and silently keeps the old value).
"""
from __future__ import annotations

import sys
from typing import Callable

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

from lit_propulse.core.errors import UserFacingError

#: extra top-level commands: name -> (one-line help, entry point taking argv)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int | None]]] = {}


def register_command(name: str, help: str) -> Callable:
    """Decorator registering ``fn(argv) -> exit code`` as ``python -m lit_propulse <name>``."""

    def deco(fn: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
        COMMANDS[name] = (help, fn)
        return fn

    return deco


class ProPulseCLI(LightningCLI):
    """LightningCLI over any LightningModule / LightningDataModule (``class_path`` in the YAML)."""

    def add_arguments_to_parser(self, parser) -> None:
        """``progressive:`` configures E_W+'s scale schedule (a Callback attached to every run; it only
        acts on modules with progressive scales), so sweeps and ablations override it by name."""
        from lit_propulse.callbacks.progressive import ProgressiveScaleCallback

        parser.add_lightning_class_args(ProgressiveScaleCallback, "progressive")
        ints_before_floats(parser)

    def before_instantiate_classes(self) -> None:
        """Stop before building anything when any registered pretrained file is missing: list them all."""
        from lit_propulse.core.errors import MissingFilesError
        from lit_propulse.core.files import missing_files

        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        missing = missing_files(cfg.as_dict() if hasattr(cfg, "as_dict") else cfg)
        if missing:
            raise MissingFilesError("the configuration needs files that are not there:\n  - " + "\n  - ".join(missing))

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` (missing, corrupt, another stage's) before Lightning reads its
        hyperparameters into the config, which would fail with a traceback."""
        from lit_propulse.runs import check_ckpt_path

        sub = self.config.get("subcommand")
        if sub:
            model = self.config[sub].get("model")
            cls = model.get("class_path") if hasattr(model, "get") else None
            check_ckpt_path(self.config[sub].get("ckpt_path"), str(cls or ""), None)
        super()._parse_ckpt_path()

    def _run_subcommand(self, subcommand: str) -> None:
        """Run ``fit``/``validate``/``test``/``predict`` holding the run directory's lock, with the
        checkpoint stamped and ``--ckpt_path`` checked before Lightning reads it."""
        from lit_propulse.callbacks.finite import FiniteGuard
        from lit_propulse.loggers import run_dir
        from lit_propulse.runs import ModuleStamp, check_ckpt_path, class_path, run_lock

        check_ckpt_path(self.config[subcommand].get("ckpt_path"), class_path(self.model), self.model)
        if not any(isinstance(c, ModuleStamp) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(ModuleStamp())
        if subcommand == "fit" and not any(isinstance(c, FiniteGuard) for c in self.trainer.callbacks):
            self.trainer.callbacks.insert(0, FiniteGuard())  # before checkpointing and the stage export
        with run_lock(run_dir(self.trainer)):
            super()._run_subcommand(subcommand)

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=pl.LightningModule,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf+"},
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )


def ints_before_floats(parser) -> None:
    """Make integer Trainer arguments stay integers: jsonargparse resolves Lightning's
    ``limit_*_batches: Optional[Union[int, float]]`` to ``Union[float, int, None]`` and so parses ``1``
    as ``1.0``, which Lightning reads as "100 %" (``--trainer.limit_test_batches=1`` ran the whole test
    set). Putting ``int`` first keeps ``1`` an int and ``0.5`` / ``1.0`` floats, as written."""
    from typing import Union, get_args, get_origin

    for action in parser._actions:
        hint = getattr(action, "_typehint", None)
        if get_origin(hint) is Union:
            args = get_args(hint)
            if int in args and float in args and args.index(float) < args.index(int):
                action._typehint = Union[(int,) + tuple(t for t in args if t is not int)]


def _load_commands() -> None:
    """Import the modules that register extra commands (kept lazy: they pull in heavier deps)."""
    import importlib

    for mod in ("lit_propulse.commands",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    _load_commands()
    try:
        if argv and argv[0] in COMMANDS:
            return int(COMMANDS[argv[0]][1](argv[1:]) or 0)
        if (not argv or argv[0] in ("-h", "--help")) and COMMANDS:
            print("lit_propulse commands beyond LightningCLI's (each has its own --help):")
            for name, (text, _) in sorted(COMMANDS.items()):
                print(f"  {name:<10} {text}")
            print()
        ProPulseCLI(args=None if from_sys else argv)
        return 0
    except UserFacingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
