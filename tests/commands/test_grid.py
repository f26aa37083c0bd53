"""``python -m lit_propulse grid`` on finished variants (export + ``.done`` marker and ``test/report.json``
already there, so nothing trains): rows without Table II's FID or NIQE are flagged with the reason, and
``--require fid,niqe`` turns such a row into a one-line error with a non-zero exit code."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lit_propulse.cli import main
from lit_propulse.runs import mark_done

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "experiments" / "toy"
ABLATIONS = ROOT / "experiments" / "ablations"
NIQE_OFF = "switched off (metrics.niqe: false)"


def finished(out: Path, variant: str, result: dict, skipped: dict | None = None) -> None:
    """``<out>/<variant>`` as a grid leaves a trained and evaluated variant of the E_W+ stage."""
    run = out / variant
    (run / "test").mkdir(parents=True)
    (run / "ewplus.pt").write_bytes(b"export")
    mark_done(run / "ewplus.pt")
    report = {"results": {"Pro-PULSE": result}, "skipped": skipped or {}, "labels": {"fid": "FID"}}
    (run / "test" / "report.json").write_text(json.dumps(report))


@pytest.fixture
def grid_out(tmp_path) -> Path:
    """full: every metric; without_adv: NIQE switched off; without_id: FID absent from its report."""
    out = tmp_path / "g"
    finished(out, "full", {"psnr": 20.0, "fid": 30.0, "niqe": 5.0})
    finished(out, "without_adv", {"psnr": 19.0, "fid": 31.0, "niqe": None}, {"niqe": NIQE_OFF})
    finished(out, "without_id", {"psnr": 18.0, "niqe": 6.0})
    return out


def grid(out: Path, *extra: str) -> int:
    variants = [str(ABLATIONS / f"{v}.yaml") for v in ("full", "without_adv", "without_id")]
    return main(["grid", "--variants", *variants, "--base-dir", str(TOY), "--out", str(out), *extra])


def test_rows_without_fid_or_niqe_are_flagged_with_the_reason(grid_out, capsys):
    assert grid(grid_out) == 0  # flagged, not failed: every variant trained and evaluated
    out = capsys.readouterr().out
    assert "trained already" in out and "fit --config" not in out
    assert f"without_adv: no niqe ({NIQE_OFF})" in out
    with open(grid_out / "table_ii.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert rows["full"]["missing"] == ""
    assert rows["without_adv"]["missing"] == f"niqe ({NIQE_OFF})"
    assert rows["without_id"]["missing"].startswith("fid (not in the report")
    table = (grid_out / "table_ii.md").read_text()
    md = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "variant" not in line}
    assert md["full"].rstrip().endswith("| ok |  |")
    assert f"niqe ({NIQE_OFF})" in md["without_adv"] and "fid (not in the report" in md["without_id"]
    assert "**Rows with missing metrics:** without_adv, without_id" in table


def test_require_fails_in_one_line_naming_the_variant_metric_and_reason(grid_out, capsys):
    assert grid(grid_out, "--require", "fid,niqe") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: grid --require fid,niqe: variant without_adv has no niqe")
    assert NIQE_OFF in err and "Traceback" not in err
    # the rows so far are written, the first without a required metric last
    table = (grid_out / "table_ii.md").read_text()
    assert "| full |" in table and "| without_adv |" in table and "| without_id |" not in table
    # a requirement every row meets passes; one only without_id misses fails on it
    assert grid(grid_out, "--require", "psnr") == 0
    assert grid(grid_out, "--require", "fid") == 2
    assert "variant without_id has no fid (not in the report" in capsys.readouterr().err


def test_require_refuses_an_unknown_metric_before_anything_runs(tmp_path, capsys):
    assert grid(tmp_path / "g", "--require", "fid,fd") == 2
    err = capsys.readouterr().err
    assert "--require 'fid,fd': unknown metric(s) ['fd']" in err and "niqe" in err
    assert not (tmp_path / "g").exists()
