"""Hostile input, third round: symlinked run folders, corrupt journals, space-file values,
full disks, orphaned workers, unbounded counts and empty paths. Each case ends in one line and
the right exit status, and leaves what was stored as it was."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from bwbpf.search.command_line.argtypes import JOBS_PER_CORE, cores

from .conftest import FAST, Runner, until
from .test_storage_safety import as_unprivileged

pytestmark = pytest.mark.integration  # starts the command in processes, under limits

TINY_TRAIN = ["--dataset", "synthetic", "--train-subset", "128", "--val-size", "64",
              "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--width", "0.125"]


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1. --force over a run whose blockwise/ is a symbolic link --------------------------------

def test_force_removes_a_symlinked_run_folder_but_not_what_it_points_to(
        cli: Runner, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert cli("-q", "train", "--out", str(out), *TINY_TRAIN)[0] == 0
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the run's")
    for p in (out / "blockwise").iterdir():
        p.unlink()
    (out / "blockwise").rmdir()
    (out / "blockwise").symlink_to(elsewhere, target_is_directory=True)
    rc, _, err = cli("-q", "train", "--out", str(out), *TINY_TRAIN, "--force")
    assert rc == 0, err
    assert (elsewhere / "keep.txt").read_text() == "not the run's"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    assert not (out / "blockwise").is_symlink() and (out / "blockwise/checkpoint.pt").is_file()


# --- 2. a journal with a bad line in the middle, or random bytes -----------------------------

@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bwbpf.search.cli import main

    path = tmp_path_factory.mktemp("journal") / "study.log"
    assert main(["-q", "run", "--storage", f"journal:{path}", "--study", "j", "--n-trials", "2",
                 "--no-baselines", "--pruner", "none", *FAST]) == 0
    return path


@pytest.mark.parametrize("damage", ["middle line", "random bytes"])
@pytest.mark.parametrize("command", [["studies"], ["report", "-o", "r.html"],
                                     ["run", "--n-trials", "3", *FAST]])
def test_a_corrupt_journal_is_one_line_and_stays_as_it_was(
        cli: Runner, journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        damage: str, command: list[str]) -> None:
    bad = tmp_path / "bad.log"
    if damage == "middle line":
        lines = journal.read_text().splitlines(keepends=True)
        assert len(lines) > 6
        bad.write_text("".join([*lines[:3], "{not json\n", *lines[3:]]))
    else:
        bad.write_bytes(os.urandom(3000))
    before = digest(bad)
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(command[0], "--storage", f"journal:{bad}", "--study", "j", *command[1:])
    assert rc == 2 and one_line(err), err
    assert f"storage journal:{bad} is corrupt" in err
    assert digest(bad) == before and not (tmp_path / "r.html").exists()


# --- 3-6. space-file values of the wrong shape, alias bombs, duplicate keys -------------------

BOMB = "\n".join(
    [f'a0: &a0 [{", ".join(["lol"] * 9)}]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["heads: *a8"]) + "\n"

SPACE_FILES = [
    ("lr.yaml", "lr: [0.1]\n", "lr: [0.1] must be a list of 2 values"),
    ("lr3.yaml", "lr: [0.01, 0.1, 0.2]\n", "lr: [0.01, 0.1, 0.2] must be a list of 2 values"),
    ("float.yaml", "max_blocks: 3.0\n", "max_blocks: 3.0 must be a whole number"),
    ("half.yaml", "min_blocks: 2.5\n", "min_blocks: 2.5 must be a whole number"),
    ("map.yaml", "heads: {linear: 1}\n", "heads: {'linear': 1} must be a list"),
    ("word.yaml", "heads: linear\n", "heads: 'linear' must be a list"),
    ("bool.yaml", "width: true\n", "width: True must be a number"),
    ("nested.yaml", "heads: [[conv]]\n", "heads[0]: ['conv'] must be a string"),
    ("bomb.yaml", BOMB, "more than 32 YAML aliases"),
    ("twice.yaml", "width: 0.5\nwidth: 0.25\n", "duplicate key 'width' (line 2)"),
    ("twice.json", '{"width": 0.5, "width": 0.25}', "duplicate key 'width'"),
    ("key.yaml", "[1, 2]: 3\n", "not valid YAML"),
    ("long.yaml", f"{'x' * 1000}: 1\n", "unknown key 'xxxxxxxx"),
]


@pytest.mark.parametrize(("name", "text", "message"), SPACE_FILES,
                         ids=[c[0] for c in SPACE_FILES])
def test_a_bad_space_file_is_one_line_before_the_storage_exists(
        cli: Runner, tmp_path: Path, name: str, text: str, message: str) -> None:
    space, db = tmp_path / name, tmp_path / "study.db"
    space.write_text(text)
    rc, _, err = cli("run", "--storage", f"sqlite:///{db}", "--space", str(space), *FAST)
    assert rc == 2 and one_line(err), err
    assert message in err and len(err) < 500
    assert not db.exists()


def test_an_endless_space_file_is_read_no_further_than_the_limit(cli: Runner, tmp_path: Path
                                                                  ) -> None:
    db = tmp_path / "study.db"
    rc, _, err = cli("run", "--storage", f"sqlite:///{db}", "--space", "/dev/zero", *FAST)
    assert rc == 2 and one_line(err), err
    assert "--space /dev/zero: larger than 1048576 bytes" in err and not db.exists()


def test_the_alias_bomb_is_refused_without_expanding_it() -> None:
    """The bomb expands to 9**9 (387 million) strings; refused after 33 aliases, it costs no
    memory to speak of (the child's peak resident memory, before and after)."""
    code = ("import resource, sys; from bwbpf.spaces.values import load_yaml\n"
            "from bwbpf.spaces import UserError\n"
            "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "before = peak()\n"
            "try:\n load_yaml(sys.stdin.read(), 'x')\nexcept UserError as e:\n print(e)\n"
            "print(peak() - before)")
    r = subprocess.run([sys.executable, "-c", code], input=BOMB, capture_output=True,
                       text=True, timeout=120)
    said, grown_kib = r.stdout.splitlines()
    assert "more than 32 YAML aliases" in said, r.stderr
    assert int(grown_kib) < 50_000


# --- 7. a full disk under `train` --------------------------------------------------------------

def _small_files() -> None:  # in the child: any file past 16 KiB fails as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))


def test_train_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "bwbpf.search", "-q", "train", "--out", str(out),
                        *TINY_TRAIN], capture_output=True, text=True, timeout=300,
                       preexec_fn=_small_files)
    assert r.returncode == 2 and one_line(r.stderr), r.stderr
    assert "cannot write" in r.stderr and "checkpoint.pt" in r.stderr
    assert not out.exists()  # neither settings.json nor an empty blockwise/


# --- 8-9. SIGTERM (and SIGKILL) to `run --jobs 2`; --jobs and --threads are bounded ------------

def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_a_signal_to_the_parent_stops_its_workers(tmp_path: Path, sig: int) -> None:
    log = tmp_path / "study.log"
    p = subprocess.Popen([sys.executable, "-m", "bwbpf.search", "-q", "run", "--storage",
                          f"journal:{log}", "--study", "w", "--jobs", "2", "--n-trials", "40",
                          "--no-baselines", "--pruner", "none", *FAST, "--epochs", "6"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.5)
        workers = _children(p.pid)
    assert len(workers) == 2, "the workers never started"
    storage = JournalStorage(JournalFileBackend(str(log)))
    until(lambda: sum(t.state == TrialState.RUNNING for t in optuna.load_study(
        study_name="w", storage=storage).get_trials()) == 2, "both workers in a trial")
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    end = time.monotonic() + 60
    while any(_alive(w) for w in workers) and time.monotonic() < end:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "a worker outlived its parent"
    if sig == signal.SIGTERM:
        assert p.returncode == 143
        assert err.strip().splitlines() == [
            "bwbpf-search: stopped by SIGTERM; rerun the same command to resume"]


def test_worker_and_thread_counts_are_bounded(cli: Runner) -> None:
    rc, _, err = cli("train", "--threads", str(cores() + 1))
    assert rc == 2 and one_line(err)
    assert f"{cores() + 1} is more than the {cores()} cores of this machine" in err
    most = JOBS_PER_CORE * cores()
    rc, _, err = cli("run", "--jobs", str(most + 1))
    assert rc == 2 and one_line(err)
    assert f"{most + 1} is more than {most} ({JOBS_PER_CORE} per core" in err
    for argv in (["run", "--jobs", "100000"], ["train", "--threads", "100000"]):
        rc, _, err = cli(*argv)
        assert rc == 2 and one_line(err)


# --- 11. empty paths --------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["export", "--study", "x", "-o", ""], ["train", "--out", ""], ["report", "-o", ""],
    ["report", "-o", "r.html", "--csv", ""], ["run", "--space", ""],
    ["train", "--data-dir", " "]], ids=lambda a: f"{a[0]}{a[-2]}")
def test_an_empty_path_is_refused(cli: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(*argv)
    assert rc == 2 and one_line(err)
    assert "is an empty path" in err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


# --- a read-only output folder, as a user without rights to it --------------------------------

@pytest.fixture
def read_only(journal: Path) -> Iterator[Path]:
    """A folder anyone may enter, holding ro/ (no one but root may write there) and a copy of
    the journal study that anyone may use."""
    root = Path(tempfile.mkdtemp(prefix="bwbpf-ro-"))
    root.chmod(0o755)
    (root / "ro").mkdir(mode=0o555)
    (root / "study.log").write_bytes(journal.read_bytes())
    (root / "study.log").chmod(0o666)
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)


@pytest.mark.parametrize("argv", [["train", "--out", "{ro}/run", *TINY_TRAIN],
                                  ["report", "--storage", "journal:{log}", "--study", "j",
                                   "-o", "{ro}/r.html"],
                                  ["export", "--storage", "journal:{log}", "--study", "j",
                                   "-o", "{ro}/best.json"]], ids=["train", "report", "export"])
def test_a_read_only_output_folder_is_one_line(read_only: Path, argv: list[str]) -> None:
    ro = read_only / "ro"
    rc, _, err = as_unprivileged([a.format(ro=ro, log=read_only / "study.log") for a in argv])
    assert rc == 2 and one_line(err), err
    assert str(ro) in err and "Permission denied" in err
    assert list(ro.iterdir()) == []


# --- 12. the resume check that every rank makes is said once ---------------------------------

@pytest.mark.integration
def test_a_resume_refused_by_every_rank_is_said_once(tmp_path: Path) -> None:
    out = tmp_path / "d"
    argv = [sys.executable, "-m", "bwbpf.search", "-q", "train", *TINY_TRAIN, "--epochs", "2",
            "--schedule", "distributed", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*argv, "--nproc", "2", "--stop-after", "1"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    settings = json.loads((out / "settings.json").read_text())
    (out / "settings.json").write_text(json.dumps({**settings, "ranks": 3}))
    r = subprocess.run([*argv, "--nproc", "3", "--resume"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2
    said = [x for x in r.stderr.splitlines() if x.startswith("bwbpf-search")]
    assert said == [f"bwbpf-search: error: --resume: {out / 'blockwise'} was written by 2 "
                    "ranks, not 3; launch 2 (torchrun --nproc-per-node 2, or --nproc 2)"]
