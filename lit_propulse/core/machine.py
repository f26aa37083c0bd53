"""The machine a figure was measured on: speed figures are stated with the CPU's name and the load
average when they were taken (a loaded machine makes every time an upper bound)."""

from __future__ import annotations

import platform

__all__ = ["cpu_name", "load_average"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages as one string ("0.12 0.30 0.45"), or "n/a"."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"
