"""Reliability as a user meets it (issue "Reliability and security"): every case drives the CLI and
asserts the exit code, the one-line message, and what is (not) on disk afterwards.

A tiny LightningModule/DataModule defined here keeps the LightningCLI cases fast; the data cases use
the project's own folder DataModule.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lit_propulse.cli import main
from lit_propulse.core.errors import UserFacingError
from lit_propulse.core.images import list_images
from lit_propulse.runs import LOCK_FILE, run_lock

pytestmark = pytest.mark.slow  # end-to-end runs: outside `pytest -m "not slow"`

HERE = "tests.test_reliability"


class Counting(pl.LightningModule):
    """Counts the batches each loop sees (written to <run dir>/counts.txt at test end)."""

    def __init__(self, width: int = 2, lr: float = 0.1) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, 1)
        self.lr = lr
        self.test_batches = 0

    def training_step(self, batch, batch_idx):
        loss = self.lin(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val", self.lin(batch[0]).mean())

    def test_step(self, batch, batch_idx):
        self.test_batches += 1

    def on_test_end(self) -> None:
        Path(self.trainer.default_root_dir, "counts.txt").write_text(str(self.test_batches))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class OtherStage(Counting):
    """Another kind of module with other weights (a checkpoint of it is not a Counting checkpoint)."""

    def __init__(self, width: int = 2, lr: float = 0.1) -> None:
        super().__init__(width, lr)
        self.extra = torch.nn.Linear(width, 3)


class Remembering(Counting):
    """Saves its hyperparameters (as every Pro-PULSE stage does), so a checkpoint carries them."""

    def __init__(self, width: int = 2, lr: float = 0.1) -> None:
        super().__init__(width, lr)
        self.save_hyperparameters()


class Failing(Counting):
    """Fails at its second training step, as a run that breaks mid-way."""

    def training_step(self, batch, batch_idx):
        if batch_idx == 1:
            raise UserFacingError("step 1 went wrong")
        return super().training_step(batch, batch_idx)


class Exporting(Counting):
    """A stage with an export (as the Pro-PULSE stages): ``export(path)`` saves the weights."""

    def export(self, path: str) -> None:
        torch.save(self.state_dict(), path)


class Data(pl.LightningDataModule):
    def __init__(self, n: int = 16, batch_size: int = 2) -> None:
        super().__init__()
        self.ds = TensorDataset(torch.randn(n, 2))
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=self.batch_size)

    val_dataloader = test_dataloader = train_dataloader


class _Gds(torch.nn.Module):
    size, lr_size = 64, 8


class SizedStage(Counting):
    """A stage whose G_ds outputs 64x64 from 8x8 LR (as the toy Pro-PULSE stages)."""

    def __init__(self, width: int = 2, lr: float = 0.1) -> None:
        super().__init__(width, lr)
        self.gds = _Gds()


class SizedData(Data):
    def __init__(self, hr_size: int = 64, lr_size: int = 8) -> None:
        super().__init__()
        self.hr_size, self.lr_size = hr_size, lr_size


def cli(sub: str, root: Path, *extra: str, model: str = "Counting", data: str = "Data") -> int:
    return main(
        [
            sub,
            "--model",
            f"{HERE}.{model}",
            "--data",
            f"{HERE}.{data}",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.logger",
            "lit_propulse.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir",
            str(root),
            "--trainer.logger.init_args.name",
            "",
            "--trainer.logger.init_args.version",
            "",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.accelerator",
            "cpu",
            *extra,
        ]
    )


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------------------------
# Configs mean what they say


def test_integer_trainer_limits_stay_integers_in_print_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli("test", tmp_path, "--trainer.limit_test_batches=1", "--trainer.limit_val_batches", "2", "--trainer.limit_train_batches=0.5", "--print_config")
    out = capsys.readouterr().out
    assert "limit_test_batches: 1\n" in out and "limit_val_batches: 2\n" in out and "limit_train_batches: 0.5\n" in out


def test_limit_test_batches_1_runs_one_batch_not_the_whole_set(tmp_path):
    assert cli("test", tmp_path, "--trainer.limit_test_batches=1") == 0
    assert (tmp_path / "counts.txt").read_text() == "1"  # 1.0 would have run all 8 batches
    assert cli("test", tmp_path / "b", "--trainer.limit_test_batches=1.0") == 0
    assert (tmp_path / "b" / "counts.txt").read_text() == "8"  # a float stays a fraction


# ----------------------------------------------------------------------------------------------
# One run directory, one run


def test_a_second_run_in_a_busy_run_directory_fails_at_start(tmp_path, capsys):
    with run_lock(str(tmp_path)):  # another run holds the directory
        assert cli("fit", tmp_path, "--trainer.max_steps", "2") == 2
        line = one_error_line(capsys)
        assert "another run is using this run directory" in line and str(tmp_path) in line
        assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "checkpoints").exists()
    assert cli("fit", tmp_path, "--trainer.max_steps", "2") == 0  # free again once the first run ends
    assert (tmp_path / "checkpoints").is_dir() and (tmp_path / LOCK_FILE).exists()


def test_a_failed_run_releases_its_lock(tmp_path, capsys):
    assert cli("fit", tmp_path, "--trainer.max_steps", "3", model="Failing") == 2
    assert "step 1 went wrong" in one_error_line(capsys)
    assert cli("fit", tmp_path, "--trainer.max_steps", "1") == 0


def test_resuming_keeps_the_rows_logged_before(tmp_path):
    assert cli("fit", tmp_path, "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1") == 0
    first = (tmp_path / "metrics.csv").read_text()
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert cli("fit", tmp_path, "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "1", "--ckpt_path", str(ckpt)) == 0
    assert (tmp_path / "metrics.1.csv").read_text() == first  # the earlier rows, untouched
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) >= 1  # the resumed part


def test_resuming_with_other_hyperparameters_says_which_values_the_checkpoint_overrides(tmp_path):
    # Lightning reads the model's hyperparameters back from --ckpt_path over the config and the command
    # line; a changed value must not be dropped silently.
    assert cli("fit", tmp_path, "--trainer.max_steps", "2", model="Remembering") == 0
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    with pytest.warns(UserWarning, match=r"NOT used: lr 0\.5 -> 0\.1\.") as rec:
        assert cli("fit", tmp_path, "--trainer.max_steps", "3", "--model.init_args.lr", "0.5", "--ckpt_path", str(ckpt), model="Remembering") == 0
    assert str(ckpt) in str(rec[0].message) and "width" not in str(rec[0].message)  # unchanged values are not listed


# ----------------------------------------------------------------------------------------------
# --ckpt_path: missing, corrupt, from another stage


def test_ckpt_path_missing_corrupt_or_from_another_stage_is_one_line(tmp_path, capsys):
    assert cli("fit", tmp_path / "other", "--trainer.max_steps", "1", model="OtherStage") == 0
    other = next((tmp_path / "other" / "checkpoints").glob("*.ckpt"))
    capsys.readouterr()
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    cases = {
        str(tmp_path / "nope.ckpt"): "no such checkpoint file",
        str(tmp_path / "corrupt.ckpt"): "not a readable torch file",
        str(other): "a checkpoint of OtherStage",
    }
    for path, expected in cases.items():
        run = tmp_path / f"run_{Path(path).stem}"
        assert cli("test", run, "--ckpt_path", path) == 2
        line = one_error_line(capsys)
        assert expected in line and path in line
        assert not (run / "counts.txt").exists()


# ----------------------------------------------------------------------------------------------
# Folders: symlink loops and links out of the folder


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def test_symlink_loops_and_outside_links_are_not_followed_and_files_count_once(tmp_path):
    root, outside = tmp_path / "faces", tmp_path / "elsewhere"
    _png(root / "a.png", 10)
    _png(root / "sub" / "b.png", 20)
    _png(outside / "c.png", 30)
    os.symlink(root, root / "sub" / "loop")  # a loop back to the root
    os.symlink(root / "sub", root / "again")  # a second way to sub/
    os.symlink(root / "a.png", root / "a_link.png")  # a second path to a.png
    os.symlink(outside, root / "out")  # out of the folder
    with pytest.warns(UserWarning, match="symbolic link") as rec:
        files = list_images(root)
    assert files == ["a.png", "sub/b.png"]
    msg = str(rec[0].message)
    assert "sub/loop" in msg and "again" in msg and "a_link.png" in msg and "out" in msg


# ----------------------------------------------------------------------------------------------
# Finite or failed


def test_a_diverging_run_stops_by_name_keeps_its_last_good_checkpoint_and_writes_no_export(tmp_path, capsys):
    code = cli(
        "fit",
        tmp_path,
        "--model.init_args.lr",
        "1e12",
        "--trainer.max_steps",
        "40",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks+=lit_propulse.callbacks.export.StageExport",
        "--trainer.callbacks.path=stage.pt",
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.dirpath",
        str(tmp_path / "checkpoints"),
        model="Exporting",
    )
    assert code == 2
    line = one_error_line(capsys)
    assert "training diverged at step" in line and "loss" in line
    assert not (tmp_path / "stage.pt.done").exists()
    if (tmp_path / "stage.pt").exists():  # an export from an earlier, finite checkpoint save
        assert all(bool(torch.isfinite(v).all()) for v in torch.load(tmp_path / "stage.pt").values())
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for v in last["state_dict"].values())


def test_loaders_refuse_non_finite_weights_by_name(tmp_path):
    from lit_propulse.core.weights import FORMAT, load_module
    from lit_propulse.networks.encoders import EWEncoder

    enc = EWEncoder(8, 32, 10, channels=8, num_groups=1, rcabs_per_group=1, reduction=4)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][...] = float("nan")
    torch.save({"format": FORMAT, "class": "lit_propulse.networks.encoders.EWEncoder", "init_args": enc.init_args, "state_dict": state}, tmp_path / "ew.pt")
    with pytest.raises(UserFacingError, match=f"not finite.*{first}"):
        load_module(tmp_path / "ew.pt")


def test_json_reports_never_hold_nan_or_infinity(tmp_path):
    import json

    from lit_propulse.core.reports import write_json

    write_json(tmp_path / "r.json", {"direction_norm": float("inf"), "l_ds": [0.1, float("nan")]})
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))["non_finite"] == ["direction_norm", "l_ds[1]"]


def test_edit_refuses_a_direction_whose_norm_overflows(tmp_path):
    import numpy as np

    from lit_propulse.editing import load_direction

    np.save(tmp_path / "huge.npy", np.full(16, 3e38, np.float32))
    with pytest.raises(ValueError, match="norm overflows"):
        load_direction(str(tmp_path / "huge.npy"))


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    import lit_propulse.cli as cli_module

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_module.COMMANDS, "boom", ("test", interrupted))
    assert main(["boom"]) == 130
    assert "interrupted" in one_error_line(capsys)


def test_an_interrupted_pulse_leaves_an_index_of_what_it_finished(tmp_path, monkeypatch, capsys):
    import lit_propulse.commands.pulse as pulse_command

    fixture = Path(__file__).resolve().parent / "fixtures" / "stylegan2_port_g64" / "checkpoint.pt"
    inp = tmp_path / "lr"
    for i in range(3):
        _png(inp / f"face{i}.png", 40 * i)
    real, calls = pulse_command._search_batch, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pulse_command, "_search_batch", interrupt_second)
    code = main(
        [
            "pulse",
            "--generator",
            str(fixture),
            "--input",
            str(inp),
            "--output",
            str(tmp_path / "out"),
            "--steps",
            "2",
            "--batch-size",
            "1",
            "--fit-samples",
            "1000",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 2
    assert "interrupted after 1 of 3 searches" in one_error_line(capsys)
    with open(tmp_path / "out" / "results.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["face0"]


def test_data_that_do_not_fit_the_model_stop_before_the_first_step(tmp_path, capsys):
    assert cli("fit", tmp_path, "--trainer.max_steps", "2", "--data.init_args.lr_size", "16", model="SizedStage", data="SizedData") == 2
    line = one_error_line(capsys)
    assert "lr_size=16 but the networks take 8x8" in line and "data.init_args.lr_size=8" in line
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.csv").exists()
    assert cli("fit", tmp_path / "ok", "--trainer.max_steps", "1", model="SizedStage", data="SizedData") == 0


def _folder_data(root: Path) -> list[str]:
    return [
        "--data",
        "datamodules.folder.ImageFolderDataModule",
        "--data.init_args.root",
        str(root),
        "--data.init_args.hr_size",
        "8",
        "--data.init_args.lr_size",
        "4",
        "--data.init_args.test_fraction",
        "0.5",
    ]


def _fit_on_folder(root: Path, run_dir: Path) -> int:
    """One step of ``fit`` of the Counting model on the image folder ``root``; the exit code."""
    return main(
        [
            "fit",
            "--model",
            f"{HERE}.Counting",
            *_folder_data(root),
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.max_steps",
            "1",
        ]
    )


def test_a_missing_data_root_is_one_line(tmp_path, capsys):
    assert _fit_on_folder(tmp_path / "no_such_folder", tmp_path / "run") == 2
    line = one_error_line(capsys)
    assert "no_such_folder" in line and "does not exist" in line


def test_bad_image_files_are_one_error_naming_them(tmp_path, capsys):
    root = tmp_path / "faces"
    for i in range(4):
        _png(root / f"ok{i}.png", 30 * i)
    (root / "broken.png").write_bytes(b"not a png")
    assert _fit_on_folder(root, tmp_path / "run") == 2
    err = capsys.readouterr().err
    first = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(first) == 1 and "1 bad image file" in first[0] and "broken.png" in err and "Traceback" not in err
