"""Dataset loaders: files (or a torchvision download) -> normalised tensors on the device.
The registry of datasets, the IDX files (Fashion-MNIST, MNIST) and torchvision's sets are here;
image folders and the synthetic set in trainers.sources."""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bwbpf.spaces.files import shown
from bwbpf.spaces.registry import Registry
from bwbpf.trainers.data import Data, Split
from bwbpf.trainers.device import available_memory, is_out_of_memory, oom_line
from bwbpf.trainers.sources import (
    FOLDER_LAYOUT,
    DataError,
    Raw,
    gib,
    imagefolder,
    one_line,
    synthetic,
)

# Where Debian's dataset-fashion-mnist package puts the four IDX .gz files.
SYSTEM_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CLASSES = 10  # MNIST and Fashion-MNIST both


@dataclass(frozen=True)
class DatasetInfo:
    # (data_dir, download, image_size) -> raw; only an image folder resizes (as it decodes)
    load: Callable[[Path | None, bool, int | None], Raw]
    flip: bool  # horizontal flip keeps the label
    hint: str  # how to get the data, for error messages


DATASETS: Registry[DatasetInfo] = Registry("dataset", error=DataError)


def default_data_dir() -> Path:
    env = os.environ.get("BWBPF_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bwbpf-search" / "data"


def load_data(
    name: str,
    *,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    val_size: int | None = None,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    image_size: int | None = None,
) -> Data:
    """Loads ``name`` once, holds out a seeded validation split of ``val_size`` images (default
    10% of train) from the training split, keeps ``train_subset`` of the rest, normalises with the
    training statistics and puts every split on ``device``."""
    info = DATASETS.get(name)
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and root.exists() and not root.is_dir():
        raise DataError(f"--data-dir {shown(root)} is a file, not a directory")
    tx, ty, sx, sy, classes = info.load(root, download, image_size)
    n = len(ty)
    val_n = n // 10 if val_size is None else val_size
    if not 1 <= val_n < n:
        raise DataError(f"val_size {val_n} not in 1..{n - 1} for {name} ({n} training images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_n], perm[val_n:]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_idx):
            raise DataError(f"train_subset {train_subset} not in 1..{len(train_idx)} for {name}")
        train_idx = train_idx[:train_subset]
    parts = [(tx[train_idx], ty[train_idx]), (tx[val_idx], ty[val_idx]), (sx, sy)]
    train, val, test = _float_splits(name, parts, image_size, torch.device(device))
    pad = max(1, train.x.shape[-1] // 8)  # 4 px at 32x32, 3 at 28x28, 8 at 64x64
    return Data(name, train, val, test, num_classes=classes, flip=info.flip, crop_pad=pad)


def _float_splits(name: str, parts: list[tuple[Tensor, Tensor]], image_size: int | None,
                  target: torch.device) -> list[Split]:
    """The uint8 (train, val, test) splits as normalised float32 on ``target``; one DataError
    line, before allocating where it can be told, when they do not fit."""
    train_x = parts[0][0]
    what = f"--image-size {image_size}" if image_size else name
    size = (image_size, image_size) if image_size else tuple(train_x.shape[-2:])
    channels = int(train_x.shape[1])
    check_memory(what, sum(len(y) for _, y in parts), channels, size, target)
    if target.type != "cpu":  # each split is converted on the CPU first
        check_memory(what, len(train_x), channels, size, torch.device("cpu"))
    try:
        to_float = _converter(train_x, image_size)
        return [Split(to_float(x), y.long()).to(target) for x, y in parts]
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(e):
            raise
        raise DataError(f"{what}: " + oom_line(e, f"converting {name} to float32 for {target}",
                                               "choose a smaller --image-size")) from None


def check_memory(what: str, images: int, channels: int, size: tuple[int, ...],
                 device: torch.device) -> None:
    """Refuses, before allocating, splits whose float32 tensors cannot fit on ``device``."""
    need = images * channels * size[0] * size[1] * 4  # bytes of float32 (N, C, H, W)
    free = available_memory(device)
    if free is not None and need > free:
        raise DataError(f"{what}: {images:,} images of {channels}x{size[0]}x{size[1]} as "
                        f"float32 need {gib(need)}, but {device} has {gib(free)} available; "
                        "choose a smaller --image-size")


def _converter(train_x: Tensor, image_size: int | None) -> Callable[[Tensor], Tensor]:
    """uint8 -> float, resized once, normalised by the training split's per-channel stats."""

    def scale(x: Tensor) -> Tensor:
        x = x.float().div_(255)
        if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                              antialias=True, align_corners=False)
        return x

    ref = scale(train_x)
    mean = ref.mean(dim=(0, 2, 3), keepdim=True)
    std = ref.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return lambda x: ((scale(x) - mean) / std).contiguous()


# ---------------------------------------------------------------- IDX (MNIST family)
def read_idx(path: Path) -> Tensor:
    """Reads an IDX file (optionally .gz) of unsigned bytes: no more than its header declares
    plus one byte, so a small gzip that expands to gigabytes is refused, not expanded."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            dims = _idx_dims(f, path)
            count = math.prod(dims)
            body = _read_at_most(f, count + 1)
    except (OSError, EOFError, zlib.error) as e:  # a corrupt deflate stream is a zlib.error
        raise DataError(f"cannot read {shown(path)}: {one_line(e)}") from None
    shape = "x".join(map(str, dims))
    if len(body) > count:
        raise DataError(f"{shown(path)}: holds more data than the {count:,} bytes its header "
                        f"declares ({shape}); not an IDX file of that shape")
    if len(body) < count:
        raise DataError(f"{shown(path)}: {len(body)} data bytes, header says {count} (truncated?)")
    return torch.frombuffer(body, dtype=torch.uint8).reshape(dims)


def _idx_dims(f: io.BufferedIOBase, path: Path) -> list[int]:
    """The dimensions in an IDX header, refused when empty or beyond the memory available."""
    head = f.read(4)
    ndim = head[3] if len(head) == 4 else 0
    raw = f.read(4 * ndim)
    if head[:3] != b"\x00\x00\x08" or ndim == 0 or len(raw) < 4 * ndim:
        raise DataError(f"{shown(path)} is not an IDX file of unsigned bytes")
    dims = [int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(ndim)]
    count, shape = math.prod(dims), "x".join(map(str, dims))
    if count == 0:
        raise DataError(f"{shown(path)}: its header declares no data ({shape})")
    free = available_memory(torch.device("cpu"))
    if free is not None and count > free:
        raise DataError(f"{shown(path)}: its header declares {gib(count)} of data ({shape}), "
                        f"but cpu has {gib(free)} available")
    return dims


def _read_at_most(f: io.BufferedIOBase, n: int) -> bytearray:
    """Up to ``n`` bytes of ``f``, a chunk at a time: memory follows what is there, not ``n``."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(1 << 24, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _find_idx(dirs: list[Path]) -> list[Path] | None:
    for d in dirs:
        found = []
        for base in IDX_FILES:
            hits = [d / base, d / f"{base}.gz"]
            found.append(next((p for p in hits if p.is_file()), None))
        if all(found):
            return [p for p in found if p is not None]
    return None


def _idx_set(name: str, folder: str, tv_class: str, root: Path | None, download: bool) -> Raw:
    """MNIST-family IDX files from --data-dir, then the system folders, then a download."""
    looked, files = [], None
    if root is not None:
        files = _find_idx([root, root / folder / "raw", root / name])
        looked.append(f"--data-dir {shown(root)}")
    else:
        looked.append("no --data-dir given")
    for sys_dir in SYSTEM_DIRS.get(name, ()):
        if files is None:
            files = _find_idx([sys_dir])
            looked.append(shown(sys_dir))
    if files is None:
        files = _download_idx(name, tv_class, folder, root, download, looked)
    tx, ty, sx, sy = (read_idx(p) for p in files)
    shapes = [(t.ndim, len(t)) for t in (tx, ty, sx, sy)]
    if shapes != [(3, len(ty)), (1, len(tx)), (3, len(sy)), (1, len(sx))]:
        raise DataError(f"{name}: IDX files in {shown(files[0].parent)} do not match each other")
    _check_labels(name, [(ty, files[1]), (sy, files[3])])
    return tx[:, None], ty, sx[:, None], sy, IDX_CLASSES


def _check_labels(name: str, label_files: list[tuple[Tensor, Path]]) -> None:
    """Refuses a label beyond the classes now, not as "Target 200 is out of bounds" mid-run."""
    for labels, path in label_files:
        top = int(labels.max())
        if top >= IDX_CLASSES:
            raise DataError(f"{shown(path)}: label {top} is not a class of {name} "
                            f"({IDX_CLASSES} classes, labels 0..{IDX_CLASSES - 1})")


def _download_idx(name: str, tv_class: str, folder: str, root: Path | None, download: bool,
                  looked: list[str]) -> list[Path]:
    target = root or default_data_dir()
    if download:
        try:
            import torchvision.datasets as tvd

            for train in (True, False):
                getattr(tvd, tv_class)(str(target), train=train, download=True)
            files = _find_idx([target / folder / "raw"])
            if files:
                return files
            reason = "no IDX files after download"
        except (OSError, RuntimeError, ValueError) as e:  # network/IO (URLError), damaged file
            reason = one_line(e)
        looked.append(f"torchvision download into {shown(target)} failed ({reason})")
    else:
        looked.append("download disabled")
    raise DataError(f"{name} not found: looked in " + "; ".join(looked)
                    + f". {DATASETS.get(name).hint}")


# ---------------------------------------------------------------- torchvision sets
def _torchvision_set(name: str, root: Path | None, download: bool,
                     image_size: int | None = None) -> Raw:
    """CIFAR-10/100 and SVHN through torchvision, from --data-dir or downloaded into it."""
    import numpy as np
    import torchvision.datasets as tvd

    target = root or default_data_dir()
    try:
        if name == "svhn":
            tr, te = (tvd.SVHN(str(target), split=s, download=download) for s in ("train", "test"))
            xs = [torch.from_numpy(np.asarray(d.data)) for d in (tr, te)]  # (N, 3, 32, 32)
            ys = [torch.as_tensor(d.labels) for d in (tr, te)]
            classes = 10
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            tr, te = (cls(str(target), train=t, download=download) for t in (True, False))
            xs = [torch.from_numpy(np.asarray(d.data)).permute(0, 3, 1, 2) for d in (tr, te)]
            ys = [torch.as_tensor(d.targets) for d in (tr, te)]
            classes = len(tr.classes)
    except (OSError, RuntimeError, ValueError, EOFError) as e:  # missing/damaged, no download
        how = "download failed" if download else "download disabled"
        raise DataError(f"{name} not found in {shown(target)} ({how}: {one_line(e)}). "
                        f"{DATASETS.get(name).hint}") from None
    return xs[0].contiguous(), ys[0], xs[1].contiguous(), ys[1], classes


_HINT_FMNIST = ("Get it with `apt-get install dataset-fashion-mnist` (Debian), or put the four "
                "IDX files in --data-dir")
DATASETS.add("fashion-mnist", DatasetInfo(
    lambda r, d, s: _idx_set("fashion-mnist", "FashionMNIST", "FashionMNIST", r, d), True,
    _HINT_FMNIST))
DATASETS.add("mnist", DatasetInfo(
    lambda r, d, s: _idx_set("mnist", "MNIST", "MNIST", r, d), False,
    "Put the four MNIST IDX files in --data-dir, or run once with network access"))
for _name in ("cifar10", "cifar100", "svhn"):
    DATASETS.add(_name, DatasetInfo(
        partial(_torchvision_set, _name), _name != "svhn",
        "Point --data-dir at a folder holding torchvision's files, or run once with network "
        "access"))
DATASETS.add("imagefolder", DatasetInfo(imagefolder, True, FOLDER_LAYOUT))
DATASETS.add("synthetic", DatasetInfo(synthetic, False, ""))


def list_datasets() -> list[str]:
    return DATASETS.names()
