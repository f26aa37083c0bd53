"""JSON reports that are valid JSON: ``NaN``/``Infinity`` are not JSON (a strict reader refuses the
file), so non-finite floats are written as ``null`` and named in the report's ``non_finite`` list."""

from __future__ import annotations

import json
import math
import os
from typing import Any


def finite_json(obj: Any, where: str = "", found: list[str] | None = None) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, numbers, numpy/torch scalars) with every non-finite
    float replaced by None; the paths of the replaced values are appended to ``found``."""
    if isinstance(obj, dict):
        return {k: finite_json(v, f"{where}.{k}" if where else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found.append(where)
        return None
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj``: non-finite floats become null and, for a dict, their paths are
    listed under ``"non_finite"``."""
    found: list[str] = []
    clean = finite_json(obj, found=found)
    if found and isinstance(clean, dict):
        clean["non_finite"] = found
    return json.dumps(clean, indent=indent, allow_nan=False, default=float)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write :func:`dumps` of ``obj`` to ``path`` (atomically: a temporary file, then a rename)."""
    path = str(path)
    text = dumps(obj, indent)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
