"""Registry of everything that reads a pretrained file, so a run can list every missing or unusable
file before it builds anything ("paths are config keys; a missing one stops the run before training").

Loaders and classes register which constructor argument is a file, what the file is, where it
comes from and, optionally, a cheap check of its contents (e.g. "holds a discriminator 'd'");
:func:`missing_files` walks a (LightningCLI) config and checks them all. The CLI's
``before_instantiate_classes`` prints the lines it returns and stops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: ``check(path, init_args) -> None`` when the existing file is usable, else one line saying what is wrong
FileCheck = Callable[[str, dict], str | None]


@dataclass(frozen=True)
class FileArg:
    arg: str  # the constructor/function argument holding the path
    what: str  # what the file is
    source: str  # where it comes from
    check: FileCheck | None = None  # contents check of an existing file; None = existence only


REGISTRY: dict[str, list[FileArg]] = {}


def needs_file(arg: str, what: str, source: str, check: FileCheck | None = None) -> Callable[[T], T]:
    """Decorator for a loader function or class: argument ``arg`` is a required file (None = not used).

    ``check(path, init_args)``: run on a file that exists, before anything is built; returns None when
    the file is usable, else one line saying what is wrong (it must be cheap and must not raise).
    """

    def deco(obj: T) -> T:
        key = f"{obj.__module__}.{obj.__qualname__}"
        REGISTRY.setdefault(key, []).append(FileArg(arg, what, source, check))
        return obj

    return deco


def missing_files(config: Any) -> list[str]:
    """One line per missing (or, where the loader registered a check, unusable) registered file
    anywhere in ``config`` (nested dicts/lists with class_path), each with what it is and its source."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            cls = node.get("class_path")
            args = node.get("init_args") or {}
            if isinstance(cls, str) and cls in REGISTRY and isinstance(args, dict):
                for spec in REGISTRY[cls]:
                    path = args.get(spec.arg)
                    if not path:
                        continue
                    key = f"{where}.init_args.{spec.arg}" if where else f"init_args.{spec.arg}"
                    if not os.path.isfile(str(path)):
                        found.append(f"{key} = {path}: missing; it is {spec.what}; {spec.source}")
                    elif spec.check is not None:
                        problem = spec.check(str(path), args)
                        if problem:
                            found.append(f"{key} = {path}: {problem}; it should be {spec.what}; {spec.source}")
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(config, "")
    return found
