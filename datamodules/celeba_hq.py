"""CelebA-HQ: the evaluation / encoder-training faces of both papers.

Pro-PULSE Sec. IV-A-1: "We train the proposed progressive encoders on the CelebA-HQ dataset ...
30,000 images with the resolution of 1024 × 1024. We follow the standard train-test split,
resulting in 24,183 and 5,817 images for training and testing", with 16² LR (x64). PULSE Sec. 4.1
evaluates on CelebA-HQ as well. The "standard split" (as in pSp) carries CelebA's own partition
over to CelebA-HQ through the mapping file: CelebA partition 0 (train) -> train; partitions 1
(val) and 2 (test) -> test.

Where the files come from:

* images and ``CelebA-HQ-to-CelebA-mapping.txt`` and ``CelebAMask-HQ-attribute-anno.txt``:
  CelebAMask-HQ (https://github.com/switchablenorms/CelebAMask-HQ, Google Drive link in its
  README); the images are ``CelebA-HQ-img/0.jpg ... 29999.jpg`` (1024², JPEG).
* ``list_eval_partition.txt``: CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html,
  "Eval/list_eval_partition.txt" in its Google Drive / Baidu folders).

Accepted layouts under ``root`` (``layout="auto"`` picks the first that exists):

* ``folders``: ``root/train/**`` and ``root/test/**`` (already split; any image names);
* ``mapping``: images in ``root/CelebA-HQ-img/`` or directly in ``root/``, named by CelebA-HQ
  index: ``0.jpg``, ``00000.jpg``, ``0.png`` or ``00000.png``; the split comes from the mapping
  file (columns ``idx orig_idx orig_file``) and CelebA's ``list_eval_partition.txt``
  (``orig_file partition``).

Attributes: the 40 CelebA attributes from ``CelebAMask-HQ-attribute-anno.txt`` (first line the
count, second line the 40 names, then ``file v1 ... v40`` with -1/1), mapped to {0, 1}.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pytorch_lightning.utilities import rank_zero_warn

from datamodules.folder import FileSRDataModule, SplitFiles
from lit_propulse.core.images import IMAGE_EXTENSIONS, list_images

__all__ = [
    "CELEBA_HQ_SPLIT_SIZES",
    "CelebAHQDataModule",
    "celeba_hq_split_files",
    "find_celeba_hq_images",
    "read_celeba_hq_attrs",
    "read_celeba_hq_mapping",
    "read_celeba_partition",
]

#: Sizes of the standard split on the full data set (Pro-PULSE Sec. IV-A-1).
CELEBA_HQ_SPLIT_SIZES = {"train": 24183, "test": 5817}

MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILE = "list_eval_partition.txt"
ATTR_FILE = "CelebAMask-HQ-attribute-anno.txt"
IMAGE_DIRS = ("CelebA-HQ-img", ".")

SOURCES = {
    "images": "CelebA-HQ images (CelebA-HQ-img/0.jpg ... 29999.jpg) come with CelebAMask-HQ: "
    "https://github.com/switchablenorms/CelebAMask-HQ (Google Drive link in its README)",
    MAPPING_FILE: f"{MAPPING_FILE} ships in the CelebAMask-HQ archive next to CelebA-HQ-img/ (https://github.com/switchablenorms/CelebAMask-HQ)",
    PARTITION_FILE: f"{PARTITION_FILE} is CelebA's standard split, from the CelebA website "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Eval/list_eval_partition.txt)",
    ATTR_FILE: f"{ATTR_FILE} ships in the CelebAMask-HQ archive (https://github.com/switchablenorms/CelebAMask-HQ)",
}


def _missing(what: str, path: Path, hint: str = "") -> FileNotFoundError:
    return FileNotFoundError(f"CelebA-HQ: {what} not found at {str(path)!r}. {SOURCES.get(path.name, SOURCES['images'])}.{hint}")


def read_celeba_hq_mapping(path: str | Path) -> dict[int, str]:
    """``CelebA-HQ-to-CelebA-mapping.txt`` -> {CelebA-HQ idx: CelebA file name} (header skipped)."""
    path = Path(path)
    out: dict[int, str] = {}
    with open(path) as f:
        for ln, line in enumerate(f, start=1):
            parts = line.split()
            if not parts or not parts[0].isdigit():  # header "idx orig_idx orig_file" or blank
                continue
            if len(parts) < 3:
                raise ValueError(f"{path}:{ln}: expected 'idx orig_idx orig_file', got {line.strip()!r}")
            out[int(parts[0])] = parts[2]
    if not out:
        raise ValueError(f"{str(path)!r} has no 'idx orig_idx orig_file' rows")
    return out


def read_celeba_partition(path: str | Path) -> dict[str, int]:
    """CelebA ``list_eval_partition.txt`` -> {CelebA file name: 0 train / 1 val / 2 test}."""
    path = Path(path)
    out: dict[str, int] = {}
    with open(path) as f:
        for ln, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{ln}: expected '<file> <0|1|2>', got {line.strip()!r}")
            out[parts[0]] = int(parts[1])
    return out


def read_celeba_hq_attrs(path: str | Path) -> tuple[dict[int, int], list[str], np.ndarray]:
    """``CelebAMask-HQ-attribute-anno.txt`` -> ({idx: row}, 40 names, float32 [N, 40] in {0, 1})."""
    path = Path(path)
    with open(path) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{str(path)!r}: expected a count line and a names line")
    names = lines[1]
    rows: dict[int, int] = {}
    vals = []
    for k, parts in enumerate(lines[2:], start=3):
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}:{k}: expected a file name and {len(names)} values, got {len(parts)} fields")
        stem = Path(parts[0]).stem
        if not stem.isdigit():
            raise ValueError(f"{path}:{k}: file {parts[0]!r} is not a CelebA-HQ index name like 0.jpg")
        v = [int(x) for x in parts[1:]]
        if not set(v) <= {-1, 1}:
            raise ValueError(f"{path}:{k}: attribute values must be -1 or 1, got {sorted(set(v))}")
        rows[int(stem)] = len(vals)
        vals.append(v)
    count = int(lines[0][0]) if lines[0] and lines[0][0].isdigit() else None
    if count is not None and count != len(vals):
        raise ValueError(f"{str(path)!r} announces {count} rows on its first line but has {len(vals)}")
    return rows, names, (np.asarray(vals, dtype=np.int64).reshape(len(vals), len(names)) > 0).astype(np.float32)


def find_celeba_hq_images(root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[Path, dict[int, str]]:
    """Find the image folder (``root/CelebA-HQ-img`` or ``root``) -> (folder, {idx: file name}).

    File names are CelebA-HQ indices, unpadded (``0.jpg``) or 5-digit (``00000.png``). Raises
    FileNotFoundError when neither folder holds such files and ValueError when one index has
    several files (e.g. ``0.jpg`` and ``00000.png``).
    """
    root = Path(root)
    if not root.is_dir():
        raise _missing("root folder", root)
    for sub in IMAGE_DIRS:
        d = (root / sub) if sub != "." else root
        if not d.is_dir():
            continue
        found: dict[int, list[str]] = {}
        with os.scandir(d) as it:
            for e in it:
                stem, ext = os.path.splitext(e.name)
                if ext.lower() in extensions and stem.isdigit() and not e.name.startswith("."):
                    found.setdefault(int(stem), []).append(e.name)
        if found:
            dup = {k: v for k, v in found.items() if len(v) > 1}
            if dup:
                shown = "; ".join(", ".join(sorted(v)) for _, v in sorted(dup.items())[:10])
                raise ValueError(f"CelebA-HQ: {len(dup)} indices have several files in {str(d)!r}: {shown}")
            return d, {k: v[0] for k, v in found.items()}
    raise _missing(
        "images named by index (0.jpg / 00000.jpg / .png)",
        root / "CelebA-HQ-img",
        f" Looked in {str(root / 'CelebA-HQ-img')!r} and {str(root)!r}; a pre-split layout needs {str(root / 'train')!r} and {str(root / 'test')!r}.",
    )


def celeba_hq_split_files(
    root: str | Path,
    layout: Literal["auto", "mapping", "folders"] = "auto",
    mapping_file: str | Path | None = None,
    partition_file: str | Path | None = None,
) -> tuple[Path, dict[str, list[str]], dict[str, list[int | None]]]:
    """List the train/test files of CelebA-HQ.

    Returns ``(image_root, {"train": names, "test": names}, {split: CelebA-HQ indices (None when a
    name is not an index)})``, names relative to ``image_root``. In the ``mapping`` layout an
    index listed by the mapping but absent from the disk is kept as ``<idx>.jpg``, so the scan
    reports it ("file does not exist") under the bad-file policy.
    """
    root = Path(root)
    if not root.is_dir():
        raise _missing("root folder", root)
    if layout == "auto":
        layout = "folders" if (root / "train").is_dir() and (root / "test").is_dir() else "mapping"
    if layout == "folders":
        names, ids = {}, {}
        for split in ("train", "test"):
            d = root / split
            if not d.is_dir():
                raise FileNotFoundError(f"CelebA-HQ layout 'folders' needs {str(d)!r} (pre-split train/ and test/ folders)")
            names[split] = [f"{split}/{n}" for n in list_images(d)]
            ids[split] = [int(Path(n).stem) if Path(n).stem.isdigit() else None for n in names[split]]
        return root, names, ids
    if layout != "mapping":
        raise ValueError(f"layout must be 'auto', 'mapping' or 'folders', got {layout!r}")
    mapping_path = Path(mapping_file) if mapping_file is not None else root / MAPPING_FILE
    partition_path = Path(partition_file) if partition_file is not None else root / PARTITION_FILE
    if not mapping_path.is_file():
        raise _missing("the mapping file", mapping_path, " Or pass mapping_file=<path>, or use pre-split train/ and test/ folders.")
    if not partition_path.is_file():
        raise _missing("CelebA's partition file", partition_path, " Or pass partition_file=<path>, or use pre-split train/ and test/ folders.")
    img_dir, files = find_celeba_hq_images(root)
    mapping = read_celeba_hq_mapping(mapping_path)
    partition = read_celeba_partition(partition_path)
    unknown = [f for f in mapping.values() if f not in partition]
    if unknown:
        raise ValueError(f"{len(unknown)} CelebA files of {str(mapping_path)!r} are not in {str(partition_path)!r}: {', '.join(unknown[:10])}")
    names: dict[str, list[str]] = {"train": [], "test": []}
    ids: dict[str, list[int | None]] = {"train": [], "test": []}
    for idx in sorted(mapping):
        split = "train" if partition[mapping[idx]] == 0 else "test"
        # an index the disk lacks keeps its standard name: the scan reports it as a missing file
        names[split].append(files.get(idx, f"{idx}.jpg"))
        ids[split].append(idx)
    counts = {s: len(v) for s, v in names.items()}
    if len(mapping) == sum(CELEBA_HQ_SPLIT_SIZES.values()) and counts != CELEBA_HQ_SPLIT_SIZES:
        rank_zero_warn(
            f"CelebA-HQ split from {str(partition_path)!r} has {counts}, not the standard {CELEBA_HQ_SPLIT_SIZES} "
            "(Pro-PULSE Sec. IV-A-1): is it CelebA's original list_eval_partition.txt?"
        )
    return img_dir, names, ids


class CelebAHQDataModule(FileSRDataModule):
    """CelebA-HQ HR/LR pairs with the standard 24,183 / 5,817 split (Pro-PULSE Sec. IV-A-1).

    Args:
        root: CelebA-HQ folder: ``CelebA-HQ-img/`` (or the images directly) plus the list files,
            or pre-split ``train/`` and ``test/`` folders.
        layout: "auto" = "folders" when ``root/train`` and ``root/test`` exist, else "mapping";
            "mapping" = split by the mapping and partition files; "folders" = pre-split folders.
        mapping_file: path of ``CelebA-HQ-to-CelebA-mapping.txt``; None = ``root/`` + that name.
        partition_file: path of CelebA's ``list_eval_partition.txt``; None = ``root/`` + that name.
        attr_file: path of ``CelebAMask-HQ-attribute-anno.txt``; None = ``root/`` + that name,
            used when present (a missing default file means no attributes).
        use_attrs: False = never load attributes.
        **kwargs: see :class:`~datamodules.folder.FileSRDataModule` and
            :class:`~datamodules.base.SRDataModule`.
    """

    def __init__(
        self,
        root: str,
        layout: Literal["auto", "mapping", "folders"] = "auto",
        mapping_file: str | None = None,
        partition_file: str | None = None,
        attr_file: str | None = None,
        use_attrs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if layout not in ("auto", "mapping", "folders"):
            raise ValueError(f"layout must be 'auto', 'mapping' or 'folders', got {layout!r}")
        self.root, self.layout = root, layout
        self.mapping_file, self.partition_file = mapping_file, partition_file
        self.attr_file, self.use_attrs = attr_file, bool(use_attrs)
        self._listing: tuple[Path, dict[str, list[str]], dict[str, list[int | None]]] | None = None
        self._attrs: tuple[dict[int, int], list[str], np.ndarray] | None | bool = False  # False = not read yet

    def _attr_path(self) -> Path | None:
        if not self.use_attrs:
            return None
        if self.attr_file is not None:
            p = Path(self.attr_file)
            if not p.is_file():
                raise _missing("the attribute file", p, " Or set use_attrs: false.")
            return p
        p = Path(self.root) / ATTR_FILE
        return p if p.is_file() else None

    def _read_attrs(self) -> tuple[dict[int, int], list[str], np.ndarray] | None:
        if self._attrs is False:
            p = self._attr_path()
            self._attrs = None if p is None else read_celeba_hq_attrs(p)
        return self._attrs  # type: ignore[return-value]

    @property
    def attr_names(self) -> tuple[str, ...]:
        """The 40 CelebA attribute names when the annotation file is used, else ()."""
        a = self._read_attrs()
        return () if a is None else tuple(a[1])

    def list_split(self, split: str) -> SplitFiles:
        if self._listing is None:
            self._listing = celeba_hq_split_files(self.root, self.layout, self.mapping_file, self.partition_file)
        img_root, names, ids = self._listing
        files = SplitFiles(root=img_root, names=list(names[split]))
        a = self._read_attrs()
        if a is not None:
            rows, attr_names, values = a
            idx = ids[split]
            lacking = [n for n, i in zip(files.names, idx) if i is None or i not in rows]
            if lacking:
                raise ValueError(
                    f"{len(lacking)} {split} images have no row in the attribute file {str(self._attr_path())!r} "
                    f"(rows are matched by the CelebA-HQ index in the file name): {', '.join(lacking[:10])}"
                    + (" ..." if len(lacking) > 10 else "")
                    + ". Set use_attrs: false to train without attributes."
                )
            files.attrs = values[np.asarray([rows[i] for i in idx], dtype=np.int64)]
            files.attr_names = list(attr_names)
        return files

    def fingerprint(self) -> dict[str, Any]:
        return {
            **super().fingerprint(),
            "root": self.root,
            "layout": self.layout,
            "mapping_file": self.mapping_file,
            "partition_file": self.partition_file,
            "attrs": None if self._attr_path() is None else str(self._attr_path()),
            "on_bad_image": self.on_bad_image,
        }
