"""Bad input: exit status 2, one line naming what is wrong, and stored studies untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .conftest import FAST, Runner


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bwbpf.search.cli import main

    path = tmp_path_factory.mktemp("db") / "study.db"
    assert main(["-q", "run", "--storage", f"sqlite:///{path}", "--study", "keep",
                 "--n-trials", "2", "--no-baselines", "--pruner", "none", *FAST]) == 0
    return path


CASES = [
    (["--sampler", "cmaes"], "argument --sampler: invalid choice: 'cmaes'"),
    (["--pruner", "asha"], "argument --pruner: invalid choice: 'asha'"),
    (["--backbone", "vgg99"], "unknown backbone 'vgg99'; valid: vgg8b"),
    (["--max-blocks", "9"], "max_blocks: 9 blocks of >= 1 unit(s) do not fit; vgg8b has 6"),
    (["--n-trials", "0"], "argument --n-trials: 0 must be >= 1"),
    (["--epochs", "two"], "argument --epochs: 'two' is not an integer"),
    (["--objectives", "speedup"], "--objectives 'speedup': accuracy first"),
    (["--heads", "conv,mlp"], "unknown aux head 'mlp'"),
    (["--min-epochs", "5"], "--min-epochs 5 exceeds --epochs 2"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
    (["--study", "x" * 600], "--study: a name of 1..512 printable characters"),
    (["--storage", "oracle://u:pw@host/db"], "unknown dialect 'oracle'"),
    (["--storage", "not a url"], "is not a storage URL"),
    (["--storage", "postgresql+psycopg://me:s3cret@127.0.0.1:1/db"], "cannot open storage"),
    (["--storage", "sqlite:////nonexistent-dir/x.db"], "folder /nonexistent-dir does not exist"),
]


@pytest.mark.parametrize(("flags", "message"), CASES, ids=[c[1][:30] for c in CASES])
def test_run_refuses_bad_input(cli: Runner, existing: Path, flags: list[str], message: str
                               ) -> None:
    before = hashlib.sha256(existing.read_bytes()).hexdigest()
    argv = ["run", "--storage", f"sqlite:///{existing}", "--study", "keep", "--n-trials", "3",
            *FAST, *flags]
    rc, out, err = cli(*argv)
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert "s3cret" not in err + out
    assert hashlib.sha256(existing.read_bytes()).hexdigest() == before


def test_other_settings_for_an_existing_study_are_refused(cli: Runner, existing: Path) -> None:
    before = existing.read_bytes()
    rc, _, err = cli("run", "--storage", f"sqlite:///{existing}", "--study", "keep",
                     *[a if a != "2" else "3" for a in FAST])
    assert rc == 2 and "was created with epochs=2; this run asks epochs=3" in err
    assert existing.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_never_touched(cli: Runner, tmp_path: Path) -> None:
    junk = tmp_path / "study.db"
    junk.write_bytes(b"\x00garbage" * 100)
    rc, _, err = cli("run", "--storage", f"sqlite:///{junk}", *FAST)
    assert rc == 2 and "is not an SQLite database; refusing to touch it" in err
    assert junk.read_bytes() == b"\x00garbage" * 100


def test_unknown_study_in_studies_command(cli: Runner, existing: Path) -> None:
    rc, out, _ = cli("studies", "--storage", f"sqlite:///{existing}")
    assert rc == 0 and out.startswith("keep: 2 complete")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from bwbpf.spaces import Decoupling

    root = tmp_path_factory.mktemp("files")
    good = Decoupling.paper_default("vgg11", width=0.125).to_json()
    (root / "truncated.json").write_text(good[: len(good) // 3])
    (root / "vgg11.json").write_text(good)
    momentum = Decoupling.from_dict({"backbone": "vgg11", "width": 0.125, "cuts": [2],
                                     "aux": [{"family": "momentum"}], "optim": [{}, {}]})
    (root / "momentum.json").write_text(momentum.to_json())
    (root / "garbage.db").write_bytes(b"\x13\x37not sqlite at all" * 64)
    (root / "empty").mkdir()
    (root / "afile").write_text("x")
    (root / "bad.yaml").write_text("heads: [conv\n  lr: ]]")
    return {p.name: p for p in root.iterdir()}


# (argv, message); {db} is the existing study's storage, {name} a file from ``files``.
OTHER = [
    (["train", "--arch", "{truncated.json}"], "not valid JSON"),
    (["train", "--arch", "nothing-here.json"], "not 'paper', 'uniform' or an existing JSON"),
    (["train", "--arch", "{vgg11.json}", "--backbone", "resnet18"],
     "cannot transfer a vgg decoupling (vgg11) to resnet18"),
    (["train", "--arch", "paper", "--out", "{afile}"], "is a file, not a folder"),
    (["train", "--arch", "paper", "--out", "/proc/bwbpf-run"], "cannot create it"),
    (["train", "--dataset", "imagefolder", "--data-dir", "{empty}"],
     "imagefolder needs --data-dir with a train/ folder"),
    (["train", "--dataset", "cifar10", "--data-dir", "{empty}", "--no-download"],
     "cifar10 not found in"),
    (["train", "--device", "cuda:7"], "--device cuda:7"),
    (["train", "--epochs", "-3"], "argument --epochs: -3 must be >= 1"),
    (["export", "--storage", "{db}", "--study", "\u00e9tude-\u03c0", "-o", "x.json"],
     "no study named '\u00e9tude-\u03c0'"),
    (["export", "--storage", "{db}", "--study", "k" * 700, "-o", "x.json"], "no study named"),
    (["export", "--storage", "{db}", "--study", "keep", "-o", "/proc/best.json"],
     "cannot write /proc/best.json"),
    (["export", "--storage", "{db}", "--study", "keep", "-o", "/nope/dir/best.json"],
     "folder /nope/dir does not exist"),
    (["export", "--storage", "{db}", "--study", "keep", "--top", "0", "-o", "x"],
     "argument --top: 0 must be >= 1"),
    (["export", "--storage", "sqlite:///{garbage.db}", "--study", "keep", "-o", "x.json"],
     "is not an SQLite database; refusing to touch it"),
    (["report", "--storage", "{db}", "--study", "keep", "-o", "{empty}"],
     "need a file in an existing folder"),
    (["report", "--storage", "{db}", "--study", "keep", "-o", "/proc/r.html"],
     "cannot write /proc/r.html"),
    (["report", "--storage", "{db}", "--study", "missing", "-o", "r.html"],
     "no study named 'missing'"),
    (["studies", "--storage", "sqlite:///{garbage.db}"], "is not an SQLite database"),
    (["studies", "--storage", "sqlite:///{empty}"], "is a directory"),
    (["dashboard", "--storage", "oracle://u:pw@h/db"], "unknown dialect 'oracle'"),
    (["dashboard", "--port", "0"], "argument --port: 0 must be >= 1"),
    (["run", "--space", "nothing.yaml"], "--space nothing.yaml: cannot read"),
    (["run", "--space", "{bad.yaml}"], "not valid YAML"),
    (["run", "--min-units", "4", "--max-blocks", "2"],
     "max_blocks: 2 blocks of >= 4 unit(s) do not fit; vgg8b has 6 units, so at most 1"),
    (["run", "--timeout", "-5"], "argument --timeout: -5 must be a positive number"),
    (["run", "--bp-lrs", "0"], "argument --bp-lrs: 0.0: learning rates must be in (0, 10]"),
    (["run", "--objectives", "accuracy,accuracy"], "accuracy first"),
    (["run", "--references", "../x"],
     "argument --references: '../x' is not one of paper, uniform, predsim, auglocal, infopro"),
    (["run", "--references", "paper,,uniform"],
     "argument --references: 'paper,,uniform' has an empty item"),
    (["run", "--bp-lrs", "0.05,"], "argument --bp-lrs: '0.05,' has an empty item"),
    (["run", "--heads-tied", "maybe"], "argument --heads-tied: invalid choice: 'maybe'"),
    (["run", "--cut-placement", ""], "argument --cut-placement: invalid choice: ''"),
    (["export", "--storage", "{db}", "--study", "keep", "-o", "x.json", "--backbone",
      "resnet50"], "cannot transfer a vgg decoupling (vgg8b) to resnet50"),
    (["export", "--storage", "{db}", "--study", "keep", "-o", "x.json", "--width", "0"],
     "argument --width: 0 must be a positive number"),
    (["export", "--storage", "{db}", "--study", "keep", "-o", "x.json", "--cost-model", "wild"],
     "argument --cost-model: invalid choice: 'wild'"),
    (["train", "--arch", "{vgg11.json}", "--backbone", "vgg16", "--cost-model", "gpu"],
     "argument --cost-model: invalid choice: 'gpu'"),
    (["run", "--warm-start", "{truncated.json}"], "not valid JSON"),
    (["run", "--heads", "linear,momentum", "--schedule", "pipelined"],
     "schedule: momentum heads follow the next block's weights, so they train with --schedule "
     "sequential, not pipelined"),
    (["train", "--arch", "{momentum.json}", "--schedule", "distributed"],
     "so they train with --schedule sequential, not distributed"),
    (["train", "--arch", "{momentum.json}", "--schedule", "pipelined"],
     "so they train with --schedule sequential, not pipelined"),
    (["run", "--warm-start", "{empty}"], "--warm-start"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("argv", "message"), OTHER, ids=[" ".join(c[0][:2]) + f"-{i}"
                                                         for i, c in enumerate(OTHER)])
def test_every_subcommand_refuses_bad_input(cli: Runner, existing: Path, files: dict[str, Path],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    names = {"db": f"sqlite:///{existing}", **{k: str(v) for k, v in files.items()}}
    for key, value in names.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    if argv[0] in ("run", "train"):
        argv += [] if argv[0] == "train" else ["--storage", f"sqlite:///{existing}"]
        argv += ["--dataset", "synthetic"] if "--dataset" not in argv else []
    before = hashlib.sha256(existing.read_bytes()).hexdigest()
    garbage = files["garbage.db"].read_bytes()
    rc, out, err = cli(*argv)
    assert rc == 2, (out, err)
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert hashlib.sha256(existing.read_bytes()).hexdigest() == before
    assert files["garbage.db"].read_bytes() == garbage
    assert not (tmp_path / "runs").exists()  # no run folder made for a refused command


def test_non_ascii_study_names_work(cli: Runner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    name = "\u00e9tude-\u03c0-\u7814\u7a76"
    rc, out, err = cli("-q", "run", "--storage", db, "--study", name, "--n-trials", "1",
                       "--no-baselines", *FAST)
    assert rc == 0, err
    rc, out, _ = cli("studies", "--storage", db)
    assert rc == 0 and out.startswith(name + ": 1 complete")
