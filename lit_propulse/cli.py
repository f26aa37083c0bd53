"""Command line: ``python -m lit_propulse {fit,validate,test,predict} --config X.yaml`` (LightningCLI)
plus the project's own commands (added by later stages: ``pulse``, ``pipeline``, ``upsample``...).

LightningCLI runs in jsonargparse's ``omegaconf+`` mode: interpolations such as ``${data.init_args.lr_size}``
are resolved after *all* config files and command-line overrides are merged, so an override
propagates into every place that refers to it (plain ``omegaconf`` mode resolves each file on its
own and silently keeps the old value). Interpolations are relative to the key they are in
(``${...default_root_dir}`` from ``trainer.logger.init_args.save_dir``): the subcommand's keys sit under
``fit.`` / ``test.`` when they are resolved.

Composed configs (``base:``): a config file may name the file(s) it extends::

    base: [../base/fit.yaml, ../base/toy.yaml]   # or one path; relative to this file's directory
    trainer:
      max_steps: 400
      callbacks+:                                 # appended to the bases' callbacks (jsonargparse list append)
        - class_path: lit_propulse.callbacks.export.StageExport
          init_args: {path: ew.pt}

Before parsing, :func:`expand_bases` turns ``--config ew.yaml`` into ``--config ../base/fit.yaml
--config ../base/toy.yaml --config ew.yaml`` (bases of bases first, each file once), so a later file
overrides an earlier one exactly as several ``--config`` on the command line do: mappings merge key by
key, a list given again (``callbacks:``) replaces the earlier list, ``callbacks+:`` appends to it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

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
        parser.add_argument(
            f"--{BASE_KEY}",
            type=str | list[str] | None,
            default=None,
            help="config files only: the file(s) this config extends, relative to it (resolved before parsing; see lit_propulse.cli)",
        )
        parser.add_argument(
            f"--{VARIANT_KEY}",
            type=str | None,
            default=None,
            help="config files only: the stage a variant file modifies (experiments/ablations/*.yaml: read by `grid`, ignored here)",
        )
        ints_before_floats(parser)

    def before_instantiate_classes(self) -> None:
        """Stop before building anything when any registered pretrained file is missing or unusable (a
        registered contents check fails, e.g. a critic file without "d"): list them all."""
        from lit_propulse.core.errors import MissingFilesError
        from lit_propulse.core.files import missing_files

        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        if cfg.get(BASE_KEY) is not None:
            cfg[BASE_KEY] = None  # already composed: the saved config.yaml is complete on its own
        missing = missing_files(cfg.as_dict() if hasattr(cfg, "as_dict") else cfg)
        if missing:
            raise MissingFilesError("the configuration needs files that are missing or unusable:\n  - " + "\n  - ".join(missing))

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` (missing, corrupt, another stage's) before Lightning reads its
        hyperparameters into the config, which would fail with a traceback."""
        from lit_propulse.runs import check_ckpt_path

        sub = self.config.get("subcommand")
        if sub:
            model = self.config[sub].get("model")
            cls = model.get("class_path") if hasattr(model, "get") else None
            check_ckpt_path(self.config[sub].get("ckpt_path"), str(cls or ""), None)
        before = _model_init_args(self.config[sub]) if sub else {}
        super()._parse_ckpt_path()
        if sub:
            after = _model_init_args(self.config[sub])
            overridden = {k: (v, after[k]) for k, v in before.items() if after.get(k, v) != v}
            if overridden:
                warnings.warn(
                    f"--ckpt_path {self.config[sub].get('ckpt_path')}: Lightning restores the model's hyperparameters from the checkpoint, so these "
                    "values from the config/command line are NOT used: "
                    + ", ".join(f"{k} {v!r} -> {a!r}" for k, (v, a) in sorted(overridden.items()))
                    + ". To resume with other values, train from an export with init_from instead, or edit the checkpoint's hyper_parameters.",
                    UserWarning,
                    stacklevel=2,
                )

    def _run_subcommand(self, subcommand: str) -> None:
        """Run ``fit``/``validate``/``test``/``predict`` holding the run directory's lock, with the
        checkpoint stamped and ``--ckpt_path`` checked before Lightning reads it."""
        from lit_propulse.callbacks.finite import FiniteGuard
        from lit_propulse.loggers import run_dir
        from lit_propulse.runs import ModuleStamp, check_ckpt_path, check_data_sizes, class_path, run_lock

        check_ckpt_path(self.config[subcommand].get("ckpt_path"), class_path(self.model), self.model)
        check_data_sizes(self.model, self.datamodule)
        if not any(isinstance(c, ModuleStamp) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(ModuleStamp())
        if subcommand == "fit" and not any(isinstance(c, FiniteGuard) for c in self.trainer.callbacks):
            self.trainer.callbacks.insert(0, FiniteGuard())  # before checkpointing and the stage export
        with run_lock(run_dir(self.trainer)):
            super()._run_subcommand(subcommand)

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        if args is None:  # in place: Lightning's DDP launcher restarts the script with sys.argv
            sys.argv[1:] = expand_bases(sys.argv[1:])
        elif isinstance(args, list):
            args = expand_bases(args)
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


#: the config-file key naming the file(s) a config extends
BASE_KEY = "base"
#: the config-file key naming the stage a variant (ablation) file modifies, read by ``grid``
VARIANT_KEY = "variant_of"
_CONFIG_FLAGS = ("--config", "-c")


def _model_init_args(cfg) -> dict:
    """The model's plain ``init_args`` values (numbers, strings, booleans, None) in a parsed subcommand config."""
    model = cfg.get("model")
    args = model.get("init_args") if hasattr(model, "get") else None
    if args is None:
        return {}
    args = args.as_dict() if hasattr(args, "as_dict") else dict(args)
    return {k: v for k, v in args.items() if v is None or isinstance(v, (bool, int, float, str))}


def _read_mapping(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}  # the parser reports it, naming the file
    return data if isinstance(data, dict) else {}


def bases_of(path: str) -> list[str]:
    """The files ``path`` names under ``base:`` (a path or a list of paths, relative to ``path``'s
    directory), as paths usable from the current directory; a missing one is a :class:`UserFacingError`."""
    raw = _read_mapping(path).get(BASE_KEY)
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(b, str) and b for b in raw):
        raise UserFacingError(f"{path}: '{BASE_KEY}:' must be a file path or a list of them, got {raw!r}")
    out = []
    for b in raw:
        full = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(b)))
        if not os.path.isfile(full):
            raise UserFacingError(f"{path}: its {BASE_KEY} {b!r} is not a file ({full}); paths in '{BASE_KEY}:' are relative to the file naming them")
        out.append(full)
    return out


def config_chain(path: str, seen: set[str] | None = None, _stack: tuple[str, ...] = ()) -> list[str]:
    """``path``'s bases, recursively (a base's own bases first, each file once), then ``path``: the
    order in which the files are applied. Files whose real path is in ``seen`` are left out (and
    ``seen`` is updated); a file that is its own base is a :class:`UserFacingError`."""
    seen = set() if seen is None else seen
    real = os.path.realpath(path)
    if real in _stack:
        raise UserFacingError(f"{path}: '{BASE_KEY}:' loops back to itself ({' -> '.join(_stack + (real,))})")
    chain: list[str] = []
    for base in bases_of(path) if os.path.isfile(path) else []:
        if os.path.realpath(base) not in seen:
            chain += config_chain(base, seen, _stack + (real,))
    seen.add(real)
    return chain + [path]


def expand_bases(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config FILE`` (``-c``, ``--config=FILE``) preceded by ``--config`` for each
    of FILE's bases (:func:`config_chain`). A base that an earlier ``--config`` already applied is not
    applied again; the files given on the command line are kept as given. Idempotent."""
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == f"--{BASE_KEY}" or arg.startswith(f"--{BASE_KEY}="):
            raise UserFacingError(
                f"--{BASE_KEY} is a key of config files (the files a config extends); on the command line give the files in order: --config A.yaml --config B.yaml"
            )
        flag, sep, value = arg.partition("=")
        if flag in _CONFIG_FLAGS:
            if not sep:
                if i + 1 >= len(argv):
                    out.append(arg)
                    break
                i, value = i + 1, argv[i + 1]
            if os.path.isfile(value):
                for base in config_chain(value, seen)[:-1]:
                    out += ["--config", base]
                seen.add(os.path.realpath(value))
            out += [flag, value] if not sep else [arg]
        else:
            out.append(arg)
        i += 1
    return out


def composed_view(path: str) -> dict:
    """What ``path`` and its bases say, merged roughly as the parser does (mappings key by key, a list
    or value replaced, ``key+:`` appended to the list), for *reading* keys (a stage's export name, a
    pipeline link's target); ``fit``/``test`` parse the files themselves."""
    view: dict = {}
    for f in config_chain(path):
        _merge(view, {k: v for k, v in _read_mapping(f).items() if k != BASE_KEY})
    return view


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(key, str) and key.endswith("+"):
            key = key[:-1]
            into[key] = list(into.get(key) or []) + (list(value) if isinstance(value, list) else [value])
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


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
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); a fit resumes with --ckpt_path last, pulse lists what it finished in results.csv", file=sys.stderr)
        return 130
