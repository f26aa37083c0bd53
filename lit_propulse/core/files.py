"""Registry of everything that reads a pretrained file, so a run can list every missing file before
it builds anything ("paths are config keys; a missing one stops the run before training").

Loaders and classes register which constructor argument is a file, what the file is and where it
comes from; :func:`missing_files` walks a (LightningCLI) config and checks them all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class FileArg:
    arg: str  # the constructor/function argument holding the path
    what: str  # what the file is
    source: str  # where it comes from


REGISTRY: dict[str, list[FileArg]] = {}


def needs_file(arg: str, what: str, source: str) -> Callable[[T], T]:
    """Decorator for a loader function or class: argument ``arg`` is a required file (None = not used)."""

    def deco(obj: T) -> T:
        key = f"{obj.__module__}.{obj.__qualname__}"
        REGISTRY.setdefault(key, []).append(FileArg(arg, what, source))
        return obj

    return deco


def missing_files(config: Any) -> list[str]:
    """One line per missing registered file anywhere in ``config`` (nested dicts/lists with class_path)."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            cls = node.get("class_path")
            args = node.get("init_args") or {}
            if isinstance(cls, str) and cls in REGISTRY and isinstance(args, dict):
                for spec in REGISTRY[cls]:
                    path = args.get(spec.arg)
                    if path and not os.path.isfile(str(path)):
                        found.append(f"{where}.init_args.{spec.arg} = {path}: missing; it is {spec.what}; {spec.source}")
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(config, "")
    return found
