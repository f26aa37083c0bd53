"""Reports of several seeds summarised as mean ± std (lit_propulse/evaluation/seeds.py), checked against
values computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from lit_propulse.evaluation.seeds import summarise_reports, write_seed_summary


def report(num_images: int = 10, **methods: dict) -> dict:
    return {"title": "toy", "num_images": num_images, "labels": {"fid": "toy-FID"}, "results": methods}


def test_mean_and_sample_std_by_hand_and_partial_metrics_counted(tmp_path):
    path = tmp_path / "r2.json"
    path.write_text(json.dumps(report(PULSE={"fid": 14.0, "psnr": 20.0, "runtime": {"batch1_mean_s": 3.0}})))
    summary = summarise_reports(
        {
            0: report(PULSE={"fid": 10.0, "psnr": 18.0, "runtime": {"batch1_mean_s": 1.0}}, bicubic={"fid": 50.0}),
            1: report(PULSE={"fid": 12.0, "psnr": float("nan"), "runtime": {"batch1_mean_s": 2.0}}, bicubic={"fid": 50.0}),
            2: str(path),  # a report.json path
        }
    )
    fid = summary["methods"]["PULSE"]["fid"]
    assert fid["mean"] == pytest.approx(12.0) and fid["std"] == pytest.approx(2.0) and fid["n"] == 3  # sqrt(((-2)² + 0 + 2²) / 2)
    assert fid["values"] == {0: 10.0, 1: 12.0, 2: 14.0}
    psnr = summary["methods"]["PULSE"]["psnr"]  # NaN dropped: two seeds
    assert psnr["n"] == 2 and psnr["mean"] == pytest.approx(19.0) and psnr["std"] == pytest.approx(math.sqrt(2.0))
    assert summary["methods"]["PULSE"]["runtime_s"]["mean"] == pytest.approx(2.0)
    bic = summary["methods"]["bicubic"]["fid"]
    assert bic["n"] == 2 and bic["std"] == 0.0
    assert summary["seeds"] == [0, 1, 2] and summary["labels"]["fid"] == "toy-FID"

    paths = write_seed_summary(str(tmp_path / "out"), {"eval": summary}, "Toy")
    md = open(paths["md"]).read()
    assert "| method | toy-FID ↓ | PSNR ↑ | runtime / image (s) ↓ |" in md  # only the metrics some method has
    assert "| PULSE | 12 ± 2 | 19 ± 1.4 (n = 2) | 2 ± 1 |" in md
    assert "| bicubic | 50 ± 0 (n = 2) | — | — |" in md  # in two of the three reports
    assert json.load(open(paths["json"]))["eval"]["methods"]["PULSE"]["fid"]["mean"] == pytest.approx(12.0)


def test_one_seed_has_no_std_and_different_test_sets_are_refused():
    one = summarise_reports({3: report(E_W={"fid": 7.0})})
    assert one["methods"]["E_W"]["fid"]["std"] is None
    with pytest.raises(ValueError, match="different test sets"):
        summarise_reports({0: report(10, E_W={"fid": 1.0}), 1: report(20, E_W={"fid": 1.0})})
    with pytest.raises(ValueError, match="no reports"):
        summarise_reports({})
