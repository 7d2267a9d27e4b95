"""Dataset sources that need no download: class-per-folder image trees (Tiny-ImageNet's
layout included) and the seeded synthetic set; and what every source shares."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bwbpf.spaces import UserError

# train x (uint8, N C H W), train y, test x, test y, number of classes
Raw = tuple[Tensor, Tensor, Tensor, Tensor, int]
FOLDER_LAYOUT = ("Layout: <dir>/train/<class>/* and <dir>/val|test/<class>/* (Tiny-ImageNet's "
                 "own layout works as is)")


class DataError(UserError):
    """Missing or unreadable data; the message says where we looked and how to get it."""


def one_line(e: BaseException) -> str:
    return (" ".join(str(e).split())[:160]) or type(e).__name__


# ---------------------------------------------------------------- image folders
def imagefolder(root: Path | None, download: bool) -> Raw:
    """A class-per-folder tree: ``root/train/<class>/**`` with ``root/val`` or ``root/test`` as
    the test split (Tiny-ImageNet's ``val/images`` + ``val_annotations.txt`` included)."""
    if root is None or not (root / "train").is_dir():
        raise DataError(f"imagefolder needs --data-dir with a train/ folder of class folders "
                        f"(got {root}). {FOLDER_LAYOUT}")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: need at least 2 class folders, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    train = [(p, index[c]) for c in classes for p in _images(root / "train" / c)]
    test = _test_listing(root, index)
    tx, ty = _decode(train)
    sx, sy = _decode(test, size=tuple(tx.shape[-2:]))
    return tx, ty, sx, sy, len(classes)


def _images(folder: Path) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp"}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)


def _test_listing(root: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    notes = root / "val" / "val_annotations.txt"
    if notes.is_file():  # Tiny-ImageNet: "<file>\t<wnid>\t<box>" per line
        rows = [line.split("\t") for line in notes.read_text().splitlines() if line.strip()]
        return [(root / "val" / "images" / r[0], index[r[1]]) for r in rows if r[1] in index]
    for name in ("val", "test"):
        if (root / name).is_dir():
            return [(p, index[c]) for c in index for p in _images(root / name / c)]
    raise DataError(f"{root}: no val/ or test/ folder with the same class folders as train/")


def _decode(items: list[tuple[Path, int]], size: tuple[int, ...] | None = None
            ) -> tuple[Tensor, Tensor]:
    import numpy as np
    from PIL import Image

    if not items:
        raise DataError("image folder split is empty")
    arrays = []
    for path, _ in items:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size is None:
                    size = (im.height, im.width)
                if (im.height, im.width) != size:
                    im = im.resize((size[1], size[0]))
                arrays.append(np.asarray(im))
        except OSError as e:
            raise DataError(f"cannot read image {path}: {one_line(e)}") from None
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in items])


# ---------------------------------------------------------------- synthetic
def synthetic(root: Path | None, download: bool) -> Raw:
    """Seeded, tiny and learnable: each class is a smooth random template plus pixel noise.
    3x16x16, 10 classes, 1,200 training and 400 test images; the same tensors every call."""
    g = torch.Generator().manual_seed(20231221)
    classes, c, s = 10, 3, 16
    templates = F.interpolate(torch.randn(classes, c, 4, 4, generator=g), size=(s, s),
                              mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        x = 0.5 * templates[y] + 2.0 * torch.randn(n, c, s, s, generator=g)
        return ((x.clamp(-3, 3) + 3) * (255 / 6)).round().to(torch.uint8), y

    (tx, ty), (sx, sy) = draw(1200), draw(400)
    return tx, ty, sx, sy, classes


