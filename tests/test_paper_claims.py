"""benchmarks/paper_claims.py: the papers' claims checked seed by seed on a seeds.json, with verdicts
computed by hand on made-up reports (summarised by the real lit_propulse.evaluation.seeds)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from lit_propulse.evaluation.seeds import summarise_reports, write_seed_summary

ROOT = Path(__file__).resolve().parents[1]


def _claims():
    spec = importlib.util.spec_from_file_location("_bench_paper_claims", ROOT / "benchmarks" / "paper_claims.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _report(fid: dict[str, float], runtime: dict[str, float] | None = None) -> dict:
    results = {m: {"fid": v, "niqe": 3.0, "runtime": {"batch1_mean_s": (runtime or {}).get(m, 0.01)}} for m, v in fid.items()}
    return {"title": "toy", "num_images": 10, "labels": {"fid": "toy-FID"}, "results": results}


def test_verdicts_by_hand(tmp_path, capsys):
    claims = _claims()
    reports = {
        0: _report({"Pro-PULSE": 50.0, "PULSE": 60.0, "E_W+ direct": 40.0, "without L_adv": 100.0}, {"Pro-PULSE": 0.01, "PULSE": 2.0}),
        1: _report({"Pro-PULSE": 52.0, "PULSE": 51.0, "E_W+ direct": 45.0, "without L_adv": 104.0}, {"Pro-PULSE": 0.01, "PULSE": 2.0}),
        2: _report({"Pro-PULSE": 48.0, "PULSE": 61.0, "E_W+ direct": 50.0, "without L_adv": 96.0}, {"Pro-PULSE": 0.01, "PULSE": 2.0}),
    }
    summary = summarise_reports(reports)
    rows = {(r["claim"], r["metric"]): r for r in claims.check_all(summary)}
    pulse = rows[("Pro-PULSE beats PULSE on FID and NIQE", "fid")]
    # per seed: 60-50 = 10, 51-52 = -1, 61-48 = 13 -> mean 22/3, on 2 of 3 seeds
    assert pulse["advantage_mean"] == pytest.approx(22 / 3) and pulse["agree"] == 2 and pulse["verdict"] == "holds on average"
    assert rows[("Pro-PULSE beats PULSE on FID and NIQE", "niqe")]["verdict"] == "does not hold"  # equal NIQE: no advantage
    direct = rows[("progressive E_W+ beats E_W+ direct", "fid")]  # -10, -7, +2
    assert direct["advantage_mean"] == pytest.approx(-5.0) and direct["verdict"] == "does not hold"
    adv = rows[("removing the adversarial term hurts (dramatically)", "fid")]  # +50, +52, +48 on 100, 104, 96
    assert adv["verdict"] == "holds" and adv["advantage_std"] == pytest.approx(2.0) and adv["relative"] == pytest.approx(0.5)
    assert rows[("Pro-PULSE is faster than PULSE", "runtime_s")]["verdict"] == "holds"
    assert rows[("Pro-PULSE beats pSp on FID and NIQE", "fid")]["verdict"] == "not measured"  # no pSp row
    # the command reads the pipeline's seeds.json
    paths = write_seed_summary(str(tmp_path), {"eval": summary}, "toy")
    out = tmp_path / "claims.md"
    assert claims.main([paths["json"], "--out", str(out)]) == 0
    text = out.read_text()
    assert "| Pro-PULSE is faster than PULSE (Sec. IV-D, Table I) | runtime / image (s) | Pro-PULSE | PULSE |" in text and "200× faster" in text
    assert "| 3/3 | **holds** |" in text and "not measured: no fid for pSp" in text and "toy-FID" in text
    assert claims.main([paths["json"], "--stage", "nope"]) == 2 and "no stage 'nope'" in capsys.readouterr().err
    assert json.loads(Path(paths["json"]).read_text())["eval"]["seeds"] == [0, 1, 2]
