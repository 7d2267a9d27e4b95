"""Hostile data files (issue "Hostile input, round 4"): each is refused in one DataError line that
names the file, or loads within bounded memory; never a traceback, a warning per image, or a
tensor sized by the largest file. Real PNGs (PIL) and real gzip IDX files, written to tmp_path."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from bwbpf.search.cli import main
from bwbpf.trainers import DataError, load_data
from bwbpf.trainers import datasets as ds
from bwbpf.trainers.sources import MAX_SIDE, imagefolder


# ---------------------------------------------------------------- helpers
def _folder(root: Path, size: tuple[int, int] = (8, 8), per_class: int = 6) -> Path:
    """train/{a,b}/<i>.png and val/{a,b}/v.png, red for a and blue for b; size is (w, h)."""
    for cls, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        for split, names in (("train", [f"{i}.png" for i in range(per_class)]), ("val", ["v.png"])):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for name in names:
                Image.new("RGB", size, colour).save(root / split / cls / name)
    return root


def _claims_size(path: Path, width: int, height: int) -> None:
    """A real 1x1 PNG whose IHDR (CRC fixed) declares ``width`` x ``height``: PIL reads the size
    from the header when it opens the file, as it would for a real image that large."""
    Image.new("1", (1, 1)).save(path)
    png = bytearray(path.read_bytes())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path.write_bytes(bytes(png))


def _write_idx(path: Path, dims: tuple[int, ...], body: bytes) -> None:
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
        f.write(body)


def _idx_dir(root: Path, train_labels: bytes | None = None) -> Path:
    """The four Fashion-MNIST IDX .gz files: 50 train and 20 test 28x28 images."""
    g = torch.Generator().manual_seed(0)
    for name, n in (("train", 50), ("t10k", 20)):
        pixels = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        _write_idx(root / f"{name}-images-idx3-ubyte.gz", (n, 28, 28), pixels.numpy().tobytes())
        labels = bytes(i % 10 for i in range(n))
        _write_idx(root / f"{name}-labels-idx1-ubyte.gz", (n,), labels)
    if train_labels is not None:
        _write_idx(root / "train-labels-idx1-ubyte.gz", (len(train_labels),), train_labels)
    return root


@pytest.fixture(autouse=True)
def _no_system_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", ())


def _cli_error(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a CLI ``train`` refused with exit status 2."""
    rc = main(["train", "--arch", "uniform", "--epochs", "1", "--device", "cpu",
               "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("bwbpf-search: error: "), err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------- 1. decompression bombs
def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path: Path) -> None:
    _claims_size(_folder(tmp_path) / "train" / "b" / "bomb.png", 30000, 30000)
    with pytest.raises(DataError, match=r"^image .*/train/b/bomb\.png is too large to decode: "
                       r"Image size \(900000000 pixels\) exceeds limit"):
        load_data("imagefolder", data_dir=tmp_path)


def test_cli_refuses_a_decompression_bomb_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _claims_size(_folder(tmp_path / "d") / "val" / "a" / "v.png", 30000, 30000)
    err = _cli_error(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "d"),
                      "--image-size", "16"], tmp_path / "run", capsys)
    assert "val/a/v.png is too large to decode" in err


def test_an_image_under_pils_limit_loads_without_a_warning(
        tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    # 90 Mpx: above PIL's warning (89.5 Mpx), below its limit; 11 MB as a bilevel image
    Image.new("1", (10000, 9000), 1).save(_folder(tmp_path) / "train" / "b" / "z.png")
    d = load_data("imagefolder", data_dir=tmp_path, val_size=2)
    assert d.image_size == (8, 8) and len(d.train) + len(d.val) == 13
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


# ---------------------------------------------------------------- 2. the output size
def test_mixed_sizes_go_to_the_most_common_size_not_the_first(tmp_path: Path) -> None:
    _folder(tmp_path)
    Image.new("RGB", (1000, 1000), (255, 0, 0)).save(tmp_path / "train" / "a" / "0.png")
    tx, _, sx, _, classes = imagefolder(tmp_path, False)
    assert tx.shape == (12, 3, 8, 8) and sx.shape == (2, 3, 8, 8) and classes == 2
    assert tx[0, 0].min() == 255 and tx[0, 2].max() == 0  # the big red image, shrunk
    assert load_data("imagefolder", data_dir=tmp_path, val_size=2).image_size == (8, 8)


def test_without_image_size_the_longer_side_is_capped(tmp_path: Path) -> None:
    _folder(tmp_path, size=(600, 300), per_class=2)  # 600 wide, 300 high
    tx, _, sx, _, _ = imagefolder(tmp_path, False)
    assert MAX_SIDE == 256 and tx.shape[-2:] == sx.shape[-2:] == (128, 256)


def test_image_size_is_applied_as_each_image_is_decoded(tmp_path: Path) -> None:
    _folder(tmp_path)
    Image.new("RGB", (1000, 1000), (255, 0, 0)).save(tmp_path / "train" / "a" / "0.png")
    tx, _, sx, _, _ = imagefolder(tmp_path, False, 16)
    assert tx.shape == (12, 3, 16, 16) and sx.shape == (2, 3, 16, 16)
    assert load_data("imagefolder", data_dir=tmp_path, val_size=2, image_size=16
                     ).image_size == (16, 16)


def test_an_image_size_beyond_memory_is_refused_before_decoding(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^--image-size 100000: 14 images of 3x100000x100000 "
                       r"need 391\.2 GiB to decode, but cpu has [\d,.]+ GiB available"):
        load_data("imagefolder", data_dir=_folder(tmp_path), image_size=100_000)


# ---------------------------------------------------------------- 3. odd file names
def test_a_newline_in_a_file_name_stays_on_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (_folder(tmp_path / "d") / "train" / "b" / "bad\nname.png").write_bytes(b"not a png" * 9)
    with pytest.raises(DataError) as e:
        load_data("imagefolder", data_dir=tmp_path / "d")
    assert "\n" not in str(e.value) and "bad\\nname.png" in str(e.value)
    err = _cli_error(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "d")],
                     tmp_path / "run", capsys)
    assert "cannot read image '" in err and "bad\\nname.png'" in err


# ---------------------------------------------------------------- 4. Tiny-ImageNet notes
def test_an_annotation_line_without_tabs_names_the_file_and_line(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "val" / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "images" / "v0.png")
    (tmp_path / "val" / "val_annotations.txt").write_text("v0.png\ta\t0\t0\t8\t8\nv1.png b\n")
    with pytest.raises(DataError, match=r"^.*/val/val_annotations\.txt line 2: expected "
                       r"'<file>\\t<class>\.\.\.', got 'v1\.png b'$"):
        load_data("imagefolder", data_dir=tmp_path)


# ---------------------------------------------------------------- 5-7. IDX files
def test_an_idx_label_beyond_the_classes_is_refused_at_load(tmp_path: Path) -> None:
    _idx_dir(tmp_path, train_labels=bytes([3] * 49 + [200]))
    with pytest.raises(DataError, match=r"^.*/train-labels-idx1-ubyte\.gz: label 200 is not a "
                       r"class of fashion-mnist \(10 classes, labels 0\.\.9\)$"):
        load_data("fashion-mnist", data_dir=tmp_path, download=False)


def test_cli_refuses_an_idx_label_beyond_the_classes_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _idx_dir(tmp_path, train_labels=bytes([3] * 49 + [200]))
    err = _cli_error(["--dataset", "fashion-mnist", "--data-dir", str(tmp_path),
                      "--no-download"], tmp_path / "run", capsys)
    assert "train-labels-idx1-ubyte.gz: label 200 is not a class" in err


def test_an_idx_header_of_no_images_is_one_line(tmp_path: Path) -> None:
    _idx_dir(tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", (0, 28, 28), b"")
    with pytest.raises(DataError, match=r"^.*/t10k-images-idx3-ubyte\.gz: its header declares "
                       r"no data \(0x28x28\)$"):
        load_data("fashion-mnist", data_dir=tmp_path, download=False)


def test_a_gzip_expanding_past_its_header_is_refused_unread(tmp_path: Path) -> None:
    _idx_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:  # header: 50 images; body: 64 MiB
        f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (50, 28, 28)))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"^.*/train-images-idx3-ubyte\.gz: holds more "
                           r"data than the 39,200 bytes its header declares \(50x28x28\)"):
            load_data("fashion-mnist", data_dir=tmp_path, download=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the 64 MiB body was not read into memory
