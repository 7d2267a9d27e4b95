from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from bwbpf.search.cli import main
from bwbpf.trainers import DataError, load_data
from bwbpf.trainers import datasets as ds
from bwbpf.trainers.data import Data, Split, augment_batch


def test_synthetic_split_is_seeded_disjoint_and_normalised() -> None:
    a = load_data("synthetic", seed=1, val_size=100, train_subset=500)
    b = load_data("synthetic", seed=1, val_size=100, train_subset=500)
    c = load_data("synthetic", seed=2, val_size=100, train_subset=500)
    assert len(a.train) == 500 and len(a.val) == 100 and len(a.test) == 400
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    assert a.train.x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert a.train.x.std(dim=(0, 2, 3)).sub(1).abs().max() < 1e-3
    # the validation images are not among the training images
    flat_train = {tuple(r.tolist()) for r in a.train.x.flatten(1)[:, :8]}
    assert not any(tuple(r.tolist()) in flat_train for r in a.val.x.flatten(1)[:, :8])


def test_image_size_resizes_once() -> None:
    d = load_data("synthetic", image_size=24)
    assert d.image_size == (24, 24) and d.in_channels == 3 and d.crop_pad == 3


def test_an_image_size_beyond_memory_is_refused_before_allocating() -> None:
    with pytest.raises(DataError, match=r"^--image-size 100000: 1,600 images of 3x100000x100000 "
                       r"as float32 need 178,813\.9 GiB, but cpu has [\d,.]+ GiB available; "
                       r"choose a smaller --image-size$"):
        load_data("synthetic", image_size=100_000)


def test_a_failed_allocation_while_converting_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "available_memory", lambda device: 2**62)  # the check is fooled
    with pytest.raises(DataError, match=r"^--image-size 1000000: out of memory while converting "
                       r"synthetic to float32 for cpu( \(tried to allocate \d+ bytes\))?; "
                       r"choose a smaller --image-size$"):
        load_data("synthetic", image_size=1_000_000)  # 13 PB: no allocator can give it


@pytest.mark.parametrize("command", [
    ["run", "--n-trials", "1"],
    ["train", "--arch", "uniform", "--epochs", "1"],
])
def test_cli_refuses_a_huge_image_size_in_one_line(
        command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([*command, "--dataset", "synthetic", "--device", "cpu", "--image-size", "100000",
               *(["--storage", f"sqlite:///{tmp_path / 's.db'}"] if command[0] == "run" else
                 ["--out", str(tmp_path / "run")])])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "--image-size 100000: " in err and "GiB available" in err
    assert not (tmp_path / "s.db").exists()


def test_batches_cover_the_epoch_by_permutation() -> None:
    n = 250
    ids = torch.arange(n, dtype=torch.float32)  # every image is its own index: x[i] == i
    split = Split(ids.reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), torch.arange(n) % 10)
    data = Data("ids", split, split, split, num_classes=10)
    g = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        batches = list(data.train_batches(100, g, augment=False))
        for x, y in batches:  # images and labels stay paired
            assert torch.equal(y, x[:, 0, 0, 0].long() % 10)
        seen = torch.cat([x[:, 0, 0, 0] for x, _ in batches]).long().tolist()
        assert len(seen) == n // 100 * 100  # full batches only
        assert len(set(seen)) == len(seen)  # no image twice within an epoch
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # each epoch draws a new order


def test_augmentation_is_a_shift_and_a_flip() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    out = augment_batch(x, torch.Generator().manual_seed(3), flip=False, pad=2)
    assert out.shape == x.shape
    for i in range(2):
        # every output is a window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        windows = [padded[:, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = augment_batch(x.repeat(16, 1, 1, 1), torch.Generator().manual_seed(0),
                            flip=True, pad=0)
    kinds = {torch.equal(f, x[0]) or torch.equal(f, x[1]) for f in flipped}
    assert kinds == {True, False}  # some flipped, some not


def _write_idx(path: Path, arr: torch.Tensor) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.numpy().tobytes())


def test_fashion_mnist_from_a_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", ())
    g = torch.Generator().manual_seed(0)
    for name, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{name}-images-idx3-ubyte.gz",
                   torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8))
        labels = torch.arange(n, dtype=torch.uint8) % 10
        _write_idx(tmp_path / f"{name}-labels-idx1-ubyte.gz", labels)
    d = load_data("fashion-mnist", data_dir=tmp_path, val_size=10, download=False)
    assert (len(d.train), len(d.val), len(d.test)) == (40, 10, 20)
    assert d.in_channels == 1 and d.image_size == (28, 28) and d.num_classes == 10


def test_missing_data_names_every_place_looked(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", (tmp_path / "nowhere",))
    with pytest.raises(DataError) as e:
        load_data("fashion-mnist", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path) in msg and "nowhere" in msg and "download disabled" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_truncated_idx_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", ())
    for base in ds.IDX_FILES:
        (tmp_path / base).write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="truncated"):
        load_data("fashion-mnist", data_dir=tmp_path, download=False)


def test_unknown_dataset_lists_valid_ones() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*"
                       "fashion-mnist.*synthetic"):
        load_data("imagenet")


def test_imagefolder_tiny_imagenet_layout(tmp_path: Path) -> None:
    from PIL import Image

    for cls, colour in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
        (tmp_path / "train" / cls / "images").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "train" / cls / "images" / f"{i}.JPEG")
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i, cls in enumerate(["n01", "n02", "n02"]):
        colour = (255, 0, 0) if cls == "n01" else (0, 0, 255)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "val" / "images" / f"v{i}.JPEG")
        lines.append(f"v{i}.JPEG\t{cls}\t0\t0\t8\t8")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines))
    d = load_data("imagefolder", data_dir=tmp_path, val_size=2)
    assert d.num_classes == 2 and d.image_size == (8, 8) and len(d.test) == 3
    assert d.test.y.tolist() == [0, 1, 1]
    # red vs blue: the red channel separates the classes after normalisation
    assert (d.test.x[0, 0].mean() > d.test.x[1, 0].mean()).item()


def test_imagefolder_without_train_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train/ folder"):
        load_data("imagefolder", data_dir=tmp_path)
