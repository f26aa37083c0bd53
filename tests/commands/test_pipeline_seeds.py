"""``pipeline --seeds`` (lit_propulse/commands/pipeline.py): the whole pipeline once per seed, each
stage under ``--seed_everything``, summarised as mean ± std; stage configs given as a list (a stage YAML
and its deltas) and links to another file of an earlier stage; the toy Table II pipeline gives every row
the same total encoder steps (issue #15)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lit_propulse.cli import composed_view, main
from lit_propulse.commands.pipeline import link_target, read_pipeline
from lit_propulse.core.errors import UserFacingError
from tests.helpers import quick_pulse

ROOT = Path(__file__).resolve().parents[2]


def test_seeds_run_every_stage_per_seed_and_vary_pulse(tmp_path, one_thread, capsys):
    """An evaluation-only pipeline (bicubic and a 3-step PULSE on the fixture generator, 3 faces) with
    seeds 0 and 1: each seed's run has its own report; PULSE's initialisations follow the run's seed
    (different L_DS, "seed 1" in its settings), bicubic does not depend on it (std 0)."""
    ev = {
        "base": str(ROOT / "experiments" / "toy" / "eval.yaml"),
        "trainer": {"enable_progress_bar": False},
        "model": {
            "init_args": {
                "grid_images": 2,
                "methods": [
                    {"class_path": "lit_propulse.evaluation.methods.BicubicMethod", "init_args": {"name": "bicubic"}},
                    quick_pulse(tmp_path / "cache"),
                ],
                "metrics": {"init_args": {"attribute_classifier": None, "niqe": False, "fid": "none"}},
            }
        },
        "data": {"init_args": {"num_train": 4, "num_test": 3, "batch_size": 3}},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    spec = {"out_dir": str(tmp_path / "out"), "stages": [{"name": "eval", "command": "test", "config": str(tmp_path / "eval.yaml"), "export": "report.json"}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml"), "--seeds", "0,1"]) == 0
    reports = [json.loads((tmp_path / "out" / f"seed{s}" / "eval" / "report.json").read_text())["results"] for s in (0, 1)]
    assert reports[0]["PULSE"]["l_ds"] != reports[1]["PULSE"]["l_ds"]
    assert reports[0]["bicubic"]["l_ds"] == reports[1]["bicubic"]["l_ds"]
    assert reports[0]["PULSE"]["settings"].endswith("seed 0") and reports[1]["PULSE"]["settings"].endswith("seed 1")
    summary = json.loads((tmp_path / "out" / "seeds.json").read_text())["eval"]
    assert summary["seeds"] == [0, 1] and summary["methods"]["bicubic"]["l_ds"]["std"] == 0.0
    assert summary["methods"]["PULSE"]["l_ds"]["std"] > 0
    md = (tmp_path / "out" / "seeds.md").read_text()
    assert "| PULSE |" in md and "Seeds 0, 1; 3 test images per seed" in md
    assert "seeds 0,1 done" in capsys.readouterr().out
    walls = [re.search(r"\| eval \|.*\| (\d+ s) \| - \|", (tmp_path / "out" / f"seed{s}" / "report.md").read_text()).group(1) for s in (0, 1)]
    # a second call finds every seed's evaluation finished and only summarises again; each seed's
    # report keeps the wall time of the run that made it
    assert main(["pipeline", "--config", str(tmp_path / "p.yaml"), "--seeds", "0,1"]) == 0
    assert capsys.readouterr().out.count("exists, skipped") == 2
    for s, wall in zip((0, 1), walls):
        assert f"| skipped (exists; ran in {wall}) |" in (tmp_path / "out" / f"seed{s}" / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"), [(["--seeds", "0,0"], "distinct"), (["--seeds", "a"], "integers"), (["--seeds", "1", "--seed_everything=3"], "one or the other")]
)
def test_bad_seeds_are_refused_before_anything_runs(tmp_path, argv, message):
    spec = {"out_dir": str(tmp_path / "out"), "stages": [{"name": "a", "config": "x.yaml", "export": "a.pt"}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UserFacingError, match=message):
        from lit_propulse.commands.pipeline import run

        run(["--config", str(tmp_path / "p.yaml"), *argv])
    assert not (tmp_path / "out").exists()


def test_config_lists_and_links_to_another_file_of_a_stage(tmp_path):
    spec = {
        "out_dir": "o",
        "stages": [
            {"name": "e2e_ew", "config": "ew.yaml", "export": "ew.pt"},
            {"name": "e2e", "config": ["ewplus.yaml", "delta.yaml"], "export": "ewplus.pt", "links": {"a.b": "e2e_ew/ew_gds.pt", "a.c": "e2e_ew"}},
        ],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    _, stages = read_pipeline(str(tmp_path / "p.yaml"))
    assert stages[1].configs == ["ewplus.yaml", "delta.yaml"] and stages[1].config_text == "ewplus.yaml + delta.yaml"
    exports = {"e2e_ew": "o/e2e_ew/ew.pt"}
    assert link_target("e2e_ew/ew_gds.pt", "o", exports) == "o/e2e_ew/ew_gds.pt" and link_target("e2e_ew", "o", exports) == "o/e2e_ew/ew.pt"
    for bad_link, message in (("e2e/x.pt", "do not come before it"), ("e2e_ew/", "do not come before it")):
        spec["stages"][1]["links"] = {"a.b": bad_link}
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(UserFacingError, match=message):
            read_pipeline(str(tmp_path / "p.yaml"))
    spec["stages"][1].update(config=[], links={})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UserFacingError, match="config must be a YAML path or a list"):
        read_pipeline(str(tmp_path / "p.yaml"))


def _encoder_steps(stage) -> int:
    """Encoder steps a fit stage of the toy Table II pipeline trains: its composed configs and overrides."""
    view: dict = {}
    for cfg in stage.configs:
        part = composed_view(str(ROOT / cfg))
        for key in ("trainer", "progressive"):
            view.setdefault(key, {}).update(part.get(key) or {})
    for o in stage.overrides:
        m = re.fullmatch(r"--(trainer\.max_steps|progressive\.steps_per_scale)=(\d+)", o)
        assert m, f"unexpected override {o}"
        section, key = m.group(1).split(".")
        view[section][key] = int(m.group(2))
    if view.get("progressive", {}).get("steps_per_scale"):
        return 3 * int(view["progressive"]["steps_per_scale"])  # scales 16, 32, 64 (direct: as many steps)
    return int(view["trainer"]["max_steps"])


def test_toy_table_ii_gives_every_row_the_same_total_encoder_steps():
    """Every evaluated encoder row's export chain (its stage, the E_W it links, the stages those link)
    trains 300 encoder steps in all: no variant gets more training or a warm start of its own."""
    _, stages = read_pipeline(str(ROOT / "experiments" / "toy" / "table_ii.yaml"))
    by_name = {s.name: s for s in stages}

    def chain(name: str) -> set[str]:
        deps = {name}
        for v in by_name[name].links.values():
            dep = v.split("/")[0]
            if dep != "gds":  # G_ds: the generator's side heads, shared by every row, no encoder steps
                deps |= chain(dep)
        return deps

    ev = by_name["eval"]
    rows: dict[str, set[str]] = {}
    for key, value in ev.links.items():
        method = re.search(r"methods\[([^\]]+)\]", key).group(1)
        if value.split("/")[0] != "gds":
            rows.setdefault(method, set()).update(chain(value.split("/")[0]))
    assert set(rows) == {
        "pSp",
        "Pro-PULSE",
        "Pro-PULSE refined",
        "E_W direct",
        "E_W+ direct",
        "E2E",
        "without E_W",
        "without G_ds",
        "without L_rec",
        "without L_adv",
    }
    totals = {m: sum(_encoder_steps(by_name[s]) for s in deps) for m, deps in rows.items()}
    assert set(totals.values()) == {300}, totals
    # the rows without E_W start from the mean face, as E_W itself does
    for name in ("ewplus_direct", "without_ew_guidance"):
        init = {}
        for cfg in by_name[name].configs:
            init.update((composed_view(str(ROOT / cfg)).get("model") or {}).get("init_args") or {})
        assert init["start_from_latent_avg"] is True and init["init_from_ew"] is False and init["ew_encoder"] is None, name
    assert composed_view(str(ROOT / "experiments" / "toy" / "ew.yaml"))["model"]["init_args"]["start_from_latent_avg"] is True


@pytest.mark.slow  # every stage resolved through LightningCLI: seconds each
@pytest.mark.parametrize("pipeline", ["pipeline.yaml", "table_ii.yaml", "long.yaml"])
def test_every_toy_pipeline_stage_resolves_with_its_overrides(pipeline, capsys, monkeypatch, tmp_path):
    """Each stage of the toy pipelines, with its config list and overrides (and links set to the
    export paths the pipeline would give), parses: a misspelt override key fails here, not hours in."""
    from lit_propulse.commands.pipeline import write_links
    from tests.helpers import print_config

    monkeypatch.chdir(ROOT)
    out_dir, stages = read_pipeline(str(ROOT / "experiments" / "toy" / pipeline))
    exports = {s.name: f"{out_dir}/{s.name}/{s.export}" for s in stages}
    for stage in stages:
        if stage.optional or stage.command == "test":
            continue  # optional: never run by the pipeline; test stages load their linked files when built
        args = [a for c in stage.configs for a in ("--config", c)]
        if stage.links:
            links = {k: link_target(v, out_dir, exports) for k, v in stage.links.items()}
            args += ["--config", write_links(stage.configs[0], links, str(tmp_path / f"{stage.name}.yaml"))]
        cfg = print_config(capsys, stage.command, *args, *stage.overrides)
        for o in stage.overrides:
            key, value = o.removeprefix("--").split("=", 1)
            if key == "trainer.callbacks+":  # an appended callback: the class, then its init_args below
                assert cfg["trainer"]["callbacks"][-1]["class_path"] == value, (stage.name, o)
                continue
            node = cfg
            for part in key.split("."):
                # `trainer.callbacks.<arg>` sets an init arg of the callback appended last
                node = node[-1]["init_args"] if isinstance(node, list) else node
                node = node[part]
            assert str(node) == value or float(node) == float(value), (stage.name, o, node)
