"""Outputs: files land inside the folder asked for, nothing is overwritten without --force,
'-' is refused alike everywhere, and a refused `train --force` keeps the earlier run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import FAST, Runner

SYN = ["--dataset", "synthetic", "--batch-size", "64", "--device", "cpu"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def slashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(root, storage, absolute study name): studies '../../escape' (2 trials) and
    '<root>/abs/X' (1 trial), both legal Optuna names, in root/db/study.db."""
    from bwbpf.search.cli import main

    root = tmp_path_factory.mktemp("out")
    (root / "db").mkdir()
    db = f"sqlite:///{root / 'db' / 'study.db'}"
    absolute = f"{root}/abs/X"
    for name, n in (("../../escape", "2"), (absolute, "1")):
        assert main(["-q", "run", "--storage", db, "--study", name, "--n-trials", n,
                     "--no-baselines", "--pruner", "none", *FAST]) == 0
    return root, db, absolute


@pytest.mark.parametrize("which", ["relative", "absolute"])
def test_study_names_with_slashes_export_inside_the_folder(
        cli: Runner, slashed: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch,
        which: str) -> None:
    root, db, absolute = slashed
    name = "../../escape" if which == "relative" else absolute
    work = root / which / "a" / "b"
    work.mkdir(parents=True)
    (work / "one").mkdir()
    monkeypatch.chdir(work)
    before = snapshot(root)
    trials = 2 if which == "relative" else 1
    outputs: list[str] = []
    for flags, folder in ((["--top", "2", "-o", "outdir/"], "outdir"), (["-o", "one"], "one")):
        rc, out, err = cli("export", "--storage", db, "--study", name, *flags)
        assert rc == 0, err
        new = sorted(set(snapshot(root)) - set(before) - set(outputs))
        assert len(new) == (trials if folder == "outdir" else 1), new
        for path in new:  # flat, safe names, each directly in the folder asked for
            where, _, file = path.rpartition("/")
            assert where == f"{which}/a/b/{folder}", path
            assert re.fullmatch(r"\w[\w.-]*-trial\d+\.json", file) and ".." not in file, path
        outputs += new
    assert not (root / "abs").exists() and not (root / "escape-trial0.json").exists()
    if which == "relative":
        assert {Path(p).name for p in outputs} == {"escape-trial0.json", "escape-trial1.json"}


@pytest.mark.parametrize("flag", ["-o", "--csv", "--parquet"])
def test_report_never_overwrites_without_force(cli: Runner, slashed: tuple[Path, str, str],
                                               tmp_path: Path, flag: str) -> None:
    _, db, _ = slashed
    paths = {"-o": tmp_path / "r.html", "--csv": tmp_path / "t.csv",
             "--parquet": tmp_path / "t.parquet"}
    paths[flag].write_bytes(b"earlier work")
    argv = ["report", "--storage", db, "--study", "../../escape"]
    argv += [a for f, p in paths.items() for a in (f, str(p))]
    rc, out, err = cli(*argv)
    assert rc == 2
    assert err == f"bwbpf-search: error: {flag} {paths[flag]} exists; pass --force to " \
                  "overwrite it\n"
    assert paths[flag].read_bytes() == b"earlier work"
    assert sorted(tmp_path.iterdir()) == [paths[flag]]  # refused before anything was written
    rc, out, err = cli(*argv, "--force")
    assert rc == 0, err
    assert paths[flag].read_bytes() != b"earlier work" and all(p.is_file() for p in paths.values())


def test_export_never_overwrites_without_force(cli: Runner, slashed: tuple[Path, str, str],
                                               tmp_path: Path) -> None:
    _, db, _ = slashed
    (tmp_path / "escape-trial1.json").write_text("earlier work")
    argv = ["export", "--storage", db, "--study", "../../escape", "--top", "2", "-o",
            str(tmp_path)]
    rc, _, err = cli(*argv)
    assert rc == 2
    assert f"-o {tmp_path / 'escape-trial1.json'} exists; pass --force to overwrite it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escape-trial1.json"]
    assert cli(*argv, "--force")[0] == 0
    assert len(list(tmp_path.iterdir())) == 2
    assert (tmp_path / "escape-trial1.json").read_text() != "earlier work"


def test_dash_is_refused_for_every_output(cli: Runner, slashed: tuple[Path, str, str],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """One rule: outputs are files. '-' is not standard output, and not a file named '-'."""
    _, db, _ = slashed
    monkeypatch.chdir(tmp_path)
    study = ["--storage", db, "--study", "../../escape"]
    cases = [(["export", *study, "-o", "-"], "-o"),
             (["export", *study, "--top", "2", "-o", "-"], "-o"),
             (["report", *study, "-o", "-"], "-o"),
             (["report", *study, "-o", "r.html", "--csv", "-"], "--csv"),
             (["report", *study, "-o", "r.html", "--parquet", "-"], "--parquet"),
             (["train", "--arch", "paper", "--epochs", "1", *SYN, "--out", "-"], "--out")]
    for argv, flag in cases:
        rc, out, err = cli(*argv)
        assert rc == 2, (argv, err)
        assert err == (f"bwbpf-search: error: {flag} -: outputs are written to files, not to "
                       "standard output; give a path\n"), argv
        assert out == "" and list(tmp_path.iterdir()) == [], argv


BAD_SECOND_RUN = {
    "batch size 1 (TrainPlan)": (["--batch-size", "1"], "--batch-size: 1 must be >= 2"),
    "missing data": (["--dataset", "cifar10", "--data-dir", "{empty}", "--no-download"],
                     "cifar10 not found in"),
    "bad device": (["--device", "cuda:99"], "--device cuda:99"),
}


@pytest.mark.parametrize("bad", list(BAD_SECOND_RUN))
def test_a_refused_forced_train_keeps_the_earlier_run(cli: Runner, tmp_path: Path,
                                                      bad: str) -> None:
    run = tmp_path / "r"
    common = ["train", "--arch", "paper", "--epochs", "1", *SYN, "--out", str(run)]
    rc, _, err = cli(*common)
    assert rc == 0, err
    before = snapshot(run)
    assert {"settings.json", "metrics.json", "blockwise/checkpoint.pt"} <= set(before)
    (tmp_path / "empty").mkdir()
    flags, message = BAD_SECOND_RUN[bad]
    flags = [f.replace("{empty}", str(tmp_path / "empty")) for f in flags]
    rc, out, err = cli(*common, "--force", *flags)
    assert rc == 2, err
    assert snapshot(run) == before  # byte for byte
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
