"""One-time prepare step: decode, convert and resize every image once into a uint8 memmap.

Decoding a 1024² PNG costs ~12 ms and a JPEG ~4 ms per image on one CPU core, which caps a
2-core machine at a few dozen HR images per second (the README's Data section has the measured figures). The
prepare step does that work once: for each split it writes

* ``{split}_hr.npy``: uint8 ``[N, hr_size, hr_size, 3]`` (a plain ``.npy``, opened as a memmap);
* ``{split}_lr.npy``: uint8 ``[N, lr_size, lr_size, 3]``, only when LR files come from ``lr_root``
  (otherwise LR = ``DS(HR)`` is computed on the fly, as without the prepare step: same values);
* ``index.json``: names, attributes, sizes and a *fingerprint* of the DataModule settings that
  produced it; :class:`PreparedDataset` refuses a directory whose fingerprint differs.

The arrays are written under temporary names and renamed when complete; ``index.json`` is written
last, so an interrupted run leaves no directory that looks prepared. Disk use is ``3·hr_size²``
bytes per image: 94 GB for the 30,000 CelebA-HQ images at 1024², 5.9 GB at 256².

Run it through the DataModule (``prepare_data()`` does it on the first run when ``prepared_dir`` is
set) or from the command line with the ``data:`` section of a LightningCLI config::

    python -m datamodules.prepare --config configs/data/celeba_hq.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import SRDataModule
from datamodules.degradations import Degradation
from datamodules.items import check_degradations, check_sizes, make_item

__all__ = ["PREPARED_VERSION", "INDEX_FILE", "PreparedDataset", "prepare_datasets", "is_prepared", "main"]

PREPARED_VERSION = 1
INDEX_FILE = "index.json"


def is_prepared(prepared_dir: str | Path) -> bool:
    """True when ``prepared_dir`` holds a complete prepared data set (its ``index.json``)."""
    return (Path(prepared_dir) / INDEX_FILE).is_file()


def _write_array(path: Path, n: int, side: int, load: Any, num_threads: int) -> None:
    tmp = path.with_name(path.name + ".partial.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, side, side, 3))
    chunk = 4 * num_threads  # bounded number of decoded images in memory
    with ThreadPoolExecutor(max_workers=num_threads) as pool:  # PIL decodes without the GIL
        for start in range(0, n, chunk):
            for i, img in zip(range(start, n), pool.map(load, range(start, min(n, start + chunk)))):
                arr[i] = img  # [side, side, 3] uint8
    arr.flush()
    del arr  # close the memmap before renaming
    os.replace(tmp, path)


def prepare_datasets(
    datasets: Mapping[str, Any],  # split -> ImageFolderDataset
    prepared_dir: str | Path,
    fingerprint: Mapping[str, Any],
    num_threads: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write every split of ``datasets`` (already scanned) to ``prepared_dir``; returns the index path.

    Args:
        datasets: split name -> dataset; all must share ``hr_size`` (and ``lr_size`` if LR files).
        prepared_dir: output folder (created).
        fingerprint: JSON-serialisable settings that produced the datasets, checked when reading.
        num_threads: decoding threads; None = one per CPU core.
        overwrite: replace an existing prepared directory (False = refuse with FileExistsError).
    """
    out = Path(prepared_dir)
    if is_prepared(out) and not overwrite:
        raise FileExistsError(f"{str(out / INDEX_FILE)!r} exists; pass overwrite=True (--overwrite) to re-prepare")
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX_FILE).unlink(missing_ok=True)
    sizes = {ds.hr_size for ds in datasets.values()}
    if len(sizes) != 1:
        raise ValueError(f"all splits must share hr_size, got {sorted(sizes)}")
    hr_size = sizes.pop()
    threads = num_threads or os.cpu_count() or 1
    splits: dict[str, Any] = {}
    for split, ds in datasets.items():
        n = len(ds)
        entry: dict[str, Any] = {"n": n, "names": list(ds.names), "hr_file": None, "lr_file": None, "lr_size": None}
        if n:
            entry["hr_file"] = f"{split}_hr.npy"
            _write_array(out / entry["hr_file"], n, hr_size, ds.load_hr_uint8, threads)
            if ds.lr_root is not None:
                entry["lr_file"], entry["lr_size"] = f"{split}_lr.npy", ds.lr_size
                _write_array(out / entry["lr_file"], n, ds.lr_size, ds.load_lr_uint8, threads)
        entry["attr_names"] = ds.attr_names
        entry["attrs"] = None if ds.attrs is None else ds.attrs.astype(int).tolist()
        splits[split] = entry
    index = {"version": PREPARED_VERSION, "hr_size": hr_size, "fingerprint": dict(fingerprint), "splits": splits}
    tmp = out / (INDEX_FILE + ".partial")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, out / INDEX_FILE)
    return out / INDEX_FILE


def read_index(prepared_dir: str | Path) -> dict[str, Any]:
    path = Path(prepared_dir) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"prepared data index {str(path)!r} not found: run the prepare step first "
            "(Trainer.fit calls DataModule.prepare_data(), or run `python -m datamodules.prepare --config <cfg.yaml>`)"
        )
    index = json.loads(path.read_text())
    if index.get("version") != PREPARED_VERSION:
        raise ValueError(f"{str(path)!r} has prepared-data version {index.get('version')}, this code reads {PREPARED_VERSION}; re-run the prepare step")
    return index


def check_fingerprint(index: Mapping[str, Any], expected: Mapping[str, Any], prepared_dir: str | Path) -> None:
    """ValueError naming every setting that differs between the prepared data and the request."""
    got = index.get("fingerprint", {})
    keys = sorted(set(got) | set(expected))
    diff = [f"{k}: prepared={got.get(k)!r}, requested={expected.get(k)!r}" for k in keys if got.get(k) != expected.get(k)]
    if diff:
        raise ValueError(
            f"prepared data in {str(prepared_dir)!r} was made with other settings:\n  "
            + "\n  ".join(diff)
            + "\nRe-run the prepare step with overwrite (`python -m datamodules.prepare --config ... --overwrite`) "
            "or point prepared_dir to a new folder."
        )


class PreparedDataset(Dataset):
    """Items from the prepared memmaps, identical to :class:`~datamodules.folder.ImageFolderDataset`'s.

    The memmaps are opened lazily in each process (DataLoader workers included), so the dataset
    pickles as a few strings.

    Args:
        prepared_dir: folder written by :func:`prepare_datasets`.
        split: split name in its index ("train", "test").
        hr_size: must equal the prepared ``hr_size`` (ValueError otherwise).
        lr_size: LR side; LR = ``DS(HR)`` unless LR files were prepared (then it must match them).
        degradations: PULSE Sec. 5 degradations (empty = none); see ImageFolderDataset.
        degradation_seed: see ImageFolderDataset (None = fresh draws).
        fingerprint: expected settings; None = do not check.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        hr_size: int,
        lr_size: int,
        degradations: Sequence[Degradation] = (),
        degradation_seed: int | None = 0,
        fingerprint: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_sizes(hr_size, lr_size)
        self.prepared_dir = Path(prepared_dir)
        index = read_index(self.prepared_dir)
        if fingerprint is not None:
            check_fingerprint(index, fingerprint, self.prepared_dir)
        if index["hr_size"] != hr_size:
            raise ValueError(f"prepared data in {str(self.prepared_dir)!r} has hr_size={index['hr_size']}, requested hr_size={hr_size}")
        if split not in index["splits"]:
            raise ValueError(f"prepared data in {str(self.prepared_dir)!r} has splits {sorted(index['splits'])}, not {split!r}")
        entry = index["splits"][split]
        self.split = split
        self.names: list[str] = entry["names"]
        self.hr_size, self.lr_size = int(hr_size), int(lr_size)
        if entry["lr_file"] is not None and entry["lr_size"] != lr_size:
            raise ValueError(f"prepared LR files are {entry['lr_size']}², requested lr_size={lr_size}")
        self._hr_file = None if entry["hr_file"] is None else str(self.prepared_dir / entry["hr_file"])
        self._lr_file = None if entry["lr_file"] is None else str(self.prepared_dir / entry["lr_file"])
        self.attr_names = entry["attr_names"]
        self.attrs = None if entry["attrs"] is None else np.asarray(entry["attrs"], dtype=np.float32)
        self.degradations = check_degradations(degradations, lr_from_disk=self._lr_file is not None)
        self.degradation_seed = degradation_seed
        self._hr: np.ndarray | None = None
        self._lr: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_hr"] = state["_lr"] = None  # reopen in the worker
        return state

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if self._hr is None:
            assert self._hr_file is not None, "empty split"
            self._hr = np.load(self._hr_file, mmap_mode="r")
            self._lr = None if self._lr_file is None else np.load(self._lr_file, mmap_mode="r")
        hr = self._hr[i]  # [H, W, 3] uint8
        lr = None if self._lr is None else self._lr[i]
        return make_item(self, i, hr, lr)


def _load_data_section(path: str) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    if isinstance(cfg, dict) and "data" in cfg:
        cfg = cfg["data"]
    if not isinstance(cfg, dict) or "class_path" not in cfg:
        raise ValueError(f"{path!r}: expected a `data:` section (or a file) with class_path and init_args")
    return cfg


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m datamodules.prepare --config cfg.yaml [--overwrite] [--threads N]``."""
    from jsonargparse import ArgumentParser as JAParser

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="YAML with a `data:` section (LightningCLI config) or a bare class_path/init_args")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing prepared directory")
    ap.add_argument("--threads", type=int, default=None, help="decoding threads (default: CPU cores)")
    args = ap.parse_args(argv)
    parser = JAParser(exit_on_error=False)
    parser.add_subclass_arguments(SRDataModule, "data")
    cfg = parser.parse_object({"data": _load_data_section(args.config)})
    dm = parser.instantiate(cfg)["data"]
    if not hasattr(dm, "prepare"):
        raise ValueError(f"{args.config!r}: {type(dm).__name__} reads no image files, so there is nothing to prepare")
    if dm.prepared_dir is None:
        raise ValueError(f"{args.config!r}: set data.init_args.prepared_dir to the output folder")
    t0 = time.perf_counter()
    path = dm.prepare(overwrite=args.overwrite, num_threads=args.threads)
    print(f"prepared {path.parent} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
