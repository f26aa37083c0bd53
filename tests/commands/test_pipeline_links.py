"""The pipeline's links (lit_propulse/commands/pipeline.py): an optional stage's missing export drops the
list item that links to it (the toy evaluation's pSp row, issue 16), and links to an optional stage
must point into a named list item. (The whole toy pipeline runs in tests/test_propulse_stages.py.)"""

from __future__ import annotations

import pytest
import yaml

from lit_propulse.commands.pipeline import link_delta, read_pipeline
from lit_propulse.core.errors import UserFacingError

METHODS = """
model:
  init_args:
    methods:
      - {class_path: A, init_args: {name: E_W, encoder: old.pt}}
      - {class_path: B, init_args: {name: pSp, encoder: psp.pt, generator: g.pt}}
      - {class_path: C, init_args: {name: bicubic}}
"""


def test_dropped_links_remove_their_list_item_and_keep_the_others(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(METHODS)
    links = {"model.init_args.methods[E_W].init_args.encoder": "new.pt"}
    drop = ["model.init_args.methods[pSp].init_args.encoder", "model.init_args.methods[pSp].init_args.generator"]  # two keys, one item
    methods = link_delta(str(cfg), links, drop)["model"]["init_args"]["methods"]
    assert [m["init_args"]["name"] for m in methods] == ["E_W", "bicubic"] and methods[0]["init_args"]["encoder"] == "new.pt"
    assert [m["init_args"]["name"] for m in link_delta(str(cfg), {}, drop[:1])["model"]["init_args"]["methods"]] == ["E_W", "bicubic"]
    with pytest.raises(UserFacingError, match="no list items named 'PSP'"):
        link_delta(str(cfg), {}, ["model.init_args.methods[PSP].init_args.encoder"])
    with pytest.raises(UserFacingError, match="only a list item can be dropped"):
        link_delta(str(cfg), {}, ["model.init_args.title"])


def test_links_to_an_optional_stage_must_name_a_list_item(tmp_path):
    spec = {
        "out_dir": str(tmp_path / "out"),
        "stages": [
            {"name": "psp", "config": "psp.yaml", "export": "psp.pt", "optional": True},
            {"name": "eval", "command": "test", "config": "eval.yaml", "export": "report.json", "links": {"model.init_args.encoder": "psp"}},
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserFacingError, match=r"links to an optional stage must point into a named list item.*model\.init_args\.encoder"):
        read_pipeline(str(path))
    spec["stages"][1]["links"] = {"model.init_args.methods[pSp].init_args.encoder": "psp"}
    path.write_text(yaml.safe_dump(spec))
    _, stages = read_pipeline(str(path))
    assert [s.optional for s in stages] == [True, False]
