"""Dataset sources that need no download: class-per-folder image trees (Tiny-ImageNet's
layout included) and the seeded synthetic set; and what every source shares."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bwbpf.spaces import UserError
from bwbpf.spaces.files import shown
from bwbpf.trainers.device import available_memory

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

T = TypeVar("T")
# train x (uint8, N C H W), train y, test x, test y, number of classes
Raw = tuple[Tensor, Tensor, Tensor, Tensor, int]
FOLDER_LAYOUT = ("Layout: <dir>/train/<class>/* and <dir>/val|test/<class>/* (Tiny-ImageNet's "
                 "own layout works as is)")
# Without --image-size an image folder goes to its most common image size, scaled down (aspect
# kept) to this longer side: the backbones here are built for 32-64 px inputs, and a folder of
# photos at full resolution would not fit in memory as one tensor.
MAX_SIDE = 256


class DataError(UserError):
    """Missing or unreadable data; the message says where we looked and how to get it."""


def one_line(e: BaseException) -> str:
    return (" ".join(str(e).split())[:160]) or type(e).__name__


def gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


# ---------------------------------------------------------------- image folders
def imagefolder(root: Path | None, download: bool, image_size: int | None = None) -> Raw:
    """A class-per-folder tree: ``root/train/<class>/**`` with ``root/val`` or ``root/test`` as
    the test split (Tiny-ImageNet's ``val/images`` + ``val_annotations.txt`` included).

    Every image is resized as it is decoded: to ``image_size`` x ``image_size`` when given,
    else to the most common size among the training images (ties: the first in sort order),
    scaled down to a longer side of at most ``MAX_SIDE`` pixels."""
    if root is None or not (root / "train").is_dir():
        raise DataError(f"imagefolder needs --data-dir with a train/ folder of class folders "
                        f"(got {shown(root) if root else None}). {FOLDER_LAYOUT}")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{shown(root / 'train')}: need at least 2 class folders, "
                        f"found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    train = [(p, index[c]) for c in classes for p in _images(root / "train" / c)]
    test = _test_listing(root, index)
    if not train or not test:
        raise DataError(f"{shown(root)}: the {'train' if not train else 'test'} split has no "
                        "images")
    size = (image_size, image_size) if image_size else _common_size([p for p, _ in train])
    _check_fits(f"--image-size {image_size}" if image_size else "imagefolder",
                len(train) + len(test), size)
    tx, ty = _decode(train, size)
    sx, sy = _decode(test, size)
    return tx, ty, sx, sy, len(classes)


def _images(folder: Path) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp"}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)


def _test_listing(root: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    notes = root / "val" / "val_annotations.txt"
    if notes.is_file():  # Tiny-ImageNet: "<file>\t<wnid>\t<box>" per line
        try:
            lines = notes.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {shown(notes)}: {one_line(e)}") from None
        listing = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = line.split("\t")
            if len(row) < 2 or not row[0]:
                raise DataError(f"{shown(notes)} line {number}: expected '<file>\\t<class>...', "
                                f"got {line[:80]!r}")
            if row[1] in index:
                listing.append((root / "val" / "images" / row[0], index[row[1]]))
        return listing
    for name in ("val", "test"):
        if (root / name).is_dir():
            return [(p, index[c]) for c in index for p in _images(root / name / c)]
    raise DataError(f"{shown(root)}: no val/ or test/ folder with the same class folders as "
                    "train/")


def _common_size(paths: list[Path]) -> tuple[int, int]:
    """The most common (height, width) of ``paths``, read from their headers only, scaled down
    (aspect kept) to a longer side of at most ``MAX_SIDE``."""
    sizes = Counter(_guarded(p, lambda im: (im.height, im.width)) for p in paths)
    (h, w), _ = sizes.most_common(1)[0]  # ties: the first in sort order
    scale = min(1.0, MAX_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _check_fits(what: str, images: int, size: tuple[int, int]) -> None:
    """Refuses, before decoding anything, images whose uint8 tensor cannot fit in memory."""
    need = images * 3 * size[0] * size[1]
    free = available_memory(torch.device("cpu"))
    if free is not None and need > free:
        raise DataError(f"{what}: {images:,} images of 3x{size[0]}x{size[1]} need {gib(need)} "
                        f"to decode, but cpu has {gib(free)} available; choose a smaller "
                        "--image-size")


def _decode(items: list[tuple[Path, int]], size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The images of ``items`` as one (N, 3, H, W) uint8 tensor of ``size``, filled one image at
    a time: memory is the output's plus one source image, whatever the sources' sizes."""
    from functools import partial

    x = torch.empty((len(items), 3, *size), dtype=torch.uint8)
    for i, (path, _) in enumerate(items):
        x[i] = _guarded(path, partial(_pixels, size=size)).permute(2, 0, 1)
    return x, torch.tensor([label for _, label in items])


def _pixels(im: PILImage, size: tuple[int, int]) -> Tensor:
    """``im`` as an (H, W, 3) uint8 tensor of ``size``; shrunk before it is widened to RGB, so a
    large grey or bilevel image costs a byte a pixel, not three."""
    import numpy as np
    from PIL import Image

    h, w = size
    im.draft(None, (w, h))  # a JPEG decodes at 1/2..1/8 scale when that still covers ``size``
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(im.convert("RGB")))


def _guarded(path: Path, read: Callable[[PILImage], T]) -> T:
    """``read(image)`` of the image at ``path``; each way a hostile file fails is one line."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # PIL warns from 89 Mpx and refuses from 179 Mpx (the error below); in between an
            # image costs one decode here, as each is resized as it is read: no warning each.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return read(im)
    except Image.DecompressionBombError as e:
        raise DataError(f"image {shown(path)} is too large to decode: {one_line(e)}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"cannot read image {shown(path)}: {one_line(e)}") from None


# ---------------------------------------------------------------- synthetic
def synthetic(root: Path | None, download: bool, image_size: int | None = None) -> Raw:
    """Seeded, tiny and learnable: each class is a smooth random template plus pixel noise.
    3x16x16, 10 classes, 1,200 training and 400 test images; the same tensors every call.
    (``image_size`` is applied later, by the float conversion.)"""
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
