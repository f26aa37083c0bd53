"""FFHQ: the 70,000 1024² faces StyleGAN2 was trained on (Pro-PULSE Sec. III-F / IV-A-1).

Pro-PULSE uses FFHQ through the pre-trained StyleGAN2 (and trains the deeply-supervised side
outputs on it); its encoders are trained and tested on CelebA-HQ. So FFHQ has no standard test
split: by default every image is "train" and asking for "test" raises an error that says so;
``test_count=N`` holds out the last N images (by index, 69999 downwards) as a test split.

Where it comes from: https://github.com/NVlabs/ffhq-dataset (``images1024x1024``, 89 GB, PNG).
Accepted layouts under ``root`` (first that holds images):

* ``root/images1024x1024/00000/00000.png ...`` (the official release: folders of 1,000), or
  ``root/images1024x1024/00000.png ...`` (flat, as in most mirrors);
* the same directly under ``root``.

Files are identified by their numeric stem (``00000`` ... ``69999``); other files are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.folder import FileSRDataModule, SplitFiles
from lit_propulse.core.images import IMAGE_EXTENSIONS, list_images

__all__ = ["FFHQ_SIZE", "FFHQDataModule", "ffhq_split_files", "find_ffhq_images"]

#: Number of images in the full release.
FFHQ_SIZE = 70000
FFHQ_SOURCE = "FFHQ comes from https://github.com/NVlabs/ffhq-dataset (images1024x1024, PNG)"
IMAGE_DIRS = ("images1024x1024", ".")


def find_ffhq_images(root: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[Path, list[str]]:
    """(image folder, names relative to it in index order) for ``root/images1024x1024`` or ``root``.

    Only files with a numeric stem count; ValueError when one index has several files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"FFHQ root folder {str(root)!r} does not exist. {FFHQ_SOURCE}.")
    for sub in IMAGE_DIRS:
        d = root / sub if sub != "." else root
        if not d.is_dir():
            continue
        names = [n for n in list_images(d, extensions) if Path(n).stem.isdigit()]
        if not names:
            continue
        by_id: dict[int, list[str]] = {}
        for n in names:
            by_id.setdefault(int(Path(n).stem), []).append(n)
        dup = [v for v in by_id.values() if len(v) > 1]
        if dup:
            raise ValueError(f"FFHQ: {len(dup)} indices have several files under {str(d)!r}, e.g. {', '.join(dup[0])}")
        return d, [by_id[k][0] for k in sorted(by_id)]
    raise FileNotFoundError(f"FFHQ: no images named by index (00000.png ...) under {str(root / 'images1024x1024')!r} or {str(root)!r}. {FFHQ_SOURCE}.")


def ffhq_split_files(root: str | Path, test_count: int = 0) -> tuple[Path, dict[str, list[str]]]:
    """(image folder, {"train": names, "test": the last ``test_count`` names by index})."""
    if test_count < 0:
        raise ValueError(f"test_count must be >= 0, got {test_count}")
    d, names = find_ffhq_images(root)
    if test_count >= len(names):
        raise ValueError(f"test_count={test_count} leaves no training images: only {len(names)} FFHQ images under {str(d)!r}")
    cut = len(names) - test_count
    return d, {"train": names[:cut], "test": names[cut:]}


class FFHQDataModule(FileSRDataModule):
    """FFHQ HR/LR pairs; train only unless ``test_count`` > 0.

    Args:
        root: folder holding ``images1024x1024/`` (nested ``00000/00000.png`` or flat), or the
            images themselves.
        test_count: number of images (the highest indices) held out as the test split;
            0 = train only: the test split is empty and the val/test loaders raise a ValueError
            explaining why (train with ``trainer.limit_val_batches: 0``).
        **kwargs: see :class:`~datamodules.folder.FileSRDataModule` and
            :class:`~datamodules.base.SRDataModule`.
    """

    def __init__(self, root: str, test_count: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if test_count < 0:
            raise ValueError(f"test_count must be >= 0, got {test_count}")
        self.root = root
        self.test_count = int(test_count)

    def no_test_message(self) -> str:
        return (
            "FFHQDataModule: FFHQ has no test split (it is StyleGAN2's training set; the papers evaluate on "
            "CelebA-HQ). Set test_count=N to hold out the last N images, or evaluate with CelebAHQDataModule"
        )

    def list_split(self, split: str) -> SplitFiles:
        d, names = ffhq_split_files(self.root, self.test_count)
        return SplitFiles(root=d, names=names[split])

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "root": self.root, "test_count": self.test_count, "on_bad_image": self.on_bad_image}
