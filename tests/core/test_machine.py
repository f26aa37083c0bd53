"""The machine description benchmarks print beside their figures (lit_propulse/core/machine.py)."""

from __future__ import annotations

import builtins

from lit_propulse.core import machine


def test_cpu_name_and_load_average_read_proc_and_fall_back(monkeypatch):
    name, load = machine.cpu_name(), machine.load_average()
    assert name and name != "model name"
    assert load == "n/a" or len(load.split()) == 3 and all(float(v) >= 0 for v in load.split())
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    assert machine.cpu_name() == "unknown CPU" and machine.load_average() == "n/a"
