"""Hostile input, fourth round: memory limits, closed streams, swallowed Ctrl-C, Optuna's
heartbeat thread, dead workers of a journal file, outputs that are not regular files, a busy
machine's step times and duplicate JSON keys. Each case ends in one line and the right exit
status, and leaves what was stored as it was. Memory limits are set on a child process
(RLIMIT_AS), never by exhausting this machine."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bwbpf.reports import optuna_api
from bwbpf.search.command_line import dispatch
from bwbpf.search.study.workers import WORKER, _machine, mark_worker, reap
from bwbpf.search.trial.constraints import check_reachable
from bwbpf.spaces import SearchSpace, UserError
from bwbpf.spaces.files import check_output, write_text_atomic
from bwbpf.trainers import OutOfMemory, memory_guard
from bwbpf.trainers.timing import StepTimer

from .conftest import FAST, Runner

pytestmark = pytest.mark.integration  # starts the command in processes, under limits

TINY = ["--dataset", "synthetic", "--train-subset", "128", "--val-size", "64", "--batch-size",
        "32", "--epochs", "1", "--device", "cpu", "--width", "0.125"]
GIB = 2**30


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def limited(argv: list[str], cwd: Path, *, memory: int | None = None,
            before: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process, its address space capped at ``memory`` bytes."""

    def pre() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if before is not None:
            before()

    return subprocess.run([sys.executable, "-m", "bwbpf.search", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300, preexec_fn=pre,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


# --- 1. a --batch-size beyond the training split is cut to it, timing included ---------------

@pytest.mark.integration
def test_a_huge_batch_is_cut_to_the_training_split_and_said_once(tmp_path: Path) -> None:
    r = limited(["run", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "b", *TINY,
                 "--batch-size", "1000000", "--no-baselines", "--n-trials", "1"], tmp_path,
                memory=6 * GIB)
    assert r.returncode == 0, r.stderr[-2000:]
    note = "--batch-size 1000000: the training split holds 128 images"
    assert r.stderr.count(note) == 1 and "Traceback" not in r.stderr
    study = optuna.load_study(study_name="b", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


# --- 2. running out of memory -------------------------------------------------------------------

def test_a_real_allocator_failure_becomes_one_line_naming_the_work() -> None:
    with pytest.raises(OutOfMemory) as e:
        with memory_guard("training trial 3"):
            torch.empty(2**50, dtype=torch.uint8)  # the CPU allocator refuses 1 PiB at once
    line = str(e.value)
    assert "\n" not in line and line.startswith("out of memory while training trial 3")
    assert "lower --batch-size" in line


def test_other_runtime_errors_pass_the_memory_guard_unchanged() -> None:
    with pytest.raises(RuntimeError, match="shape"):
        with memory_guard("training"):
            torch.ones(2, 3) @ torch.ones(2, 3)


@pytest.mark.integration
def test_a_search_whose_trials_run_out_of_memory_records_them_and_goes_on(tmp_path: Path
                                                                          ) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    r = limited(["-q", "run", "--storage", db, "--study", "w", *TINY, "--width", "16",
                 "--no-baselines", "--n-trials", "2"], tmp_path, memory=int(4.2 * GIB))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    study = optuna.load_study(study_name="w", storage=db)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2  # both tried: it went on
    for t in study.trials:
        assert t.user_attrs["fail_reason"].startswith(f"out of memory while building and "
                                                      f"training trial {t.number}")


@pytest.mark.integration
def test_train_out_of_memory_is_one_line_and_exit_1(tmp_path: Path) -> None:
    r = limited(["train", "--arch", "paper", *TINY, "--width", "16", "--out",
                 str(tmp_path / "run")], tmp_path, memory=int(4.2 * GIB))
    assert r.returncode == 1 and one_line(r.stderr), r.stderr[-3000:]
    assert r.stderr.startswith("bwbpf-search: out of memory while building and training vgg8b")


# --- 3, 4. torch cannot load; standard output closed; current folder deleted ------------------

@pytest.mark.integration
def test_torch_failing_to_load_is_one_line(tmp_path: Path) -> None:
    # 1,000 MiB: torch's libraries fail to map (larger limits may fail inside the loader)
    r = limited(["studies", "--storage", f"sqlite:///{tmp_path / 'x.db'}"], tmp_path,
                memory=1000 * 2**20)
    assert r.returncode == 1 and one_line(r.stderr), r.stderr[-3000:]
    assert r.stderr.startswith("bwbpf-search: cannot load its libraries: ")


@pytest.mark.parametrize("command", [["studies"], ["run", "--n-trials", "1", *TINY]])
def test_a_closed_stdout_is_one_line_before_anything_runs(tmp_path: Path,
                                                          command: list[str]) -> None:
    db = tmp_path / "s.db"
    r = limited([command[0], "--storage", f"sqlite:///{db}", *command[1:]], tmp_path,
                before=lambda: os.close(1))
    assert r.returncode == 2 and one_line(r.stderr), r.stderr[-3000:]
    assert "standard output is closed" in r.stderr
    assert not db.exists()  # nothing was run


def test_a_deleted_current_folder_is_one_line(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    r = subprocess.run([sys.executable, "-c", "import os, sys; os.rmdir(os.getcwd()); "
                        "from bwbpf.search.cli import main; "
                        "sys.exit(main(['studies']))"],
                       cwd=gone, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and one_line(r.stderr), r.stderr
    assert "the current folder no longer exists" in r.stderr


# --- 8. Optuna's heartbeat thread dying with the storage prints nothing -----------------------

def _raise_in_thread(target: Callable[[], None], hook: Any) -> None:
    default = threading.excepthook
    threading.excepthook = hook
    try:
        t = threading.Thread(target=target)
        t.start()
        t.join()
    finally:
        threading.excepthook = default


def test_the_heartbeat_threads_error_stays_out_of_the_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    def _record_heartbeat() -> None:  # the name Optuna's heartbeat thread runs
        raise ConnectionError("server closed the connection unexpectedly")

    def other() -> None:
        raise ConnectionError("another thread's error")

    seen: list[str] = []
    hook = dispatch._heartbeat_hook(lambda args: seen.append(str(args.exc_value)))
    _raise_in_thread(_record_heartbeat, hook)
    _raise_in_thread(other, hook)
    assert seen == ["another thread's error"]  # only the heartbeat's is kept from the terminal
    assert capsys.readouterr().err == ""


# --- 9. a journal file: a SIGKILLed worker's trial is failed and re-queued --------------------

def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_journal_trial_whose_worker_died_is_failed_and_requeued(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "s.log")))
    study = optuna.create_study(study_name="j", storage=storage)
    dead, alive = study.ask(), study.ask()
    for t in (dead, alive):
        t.suggest_float("x", 0, 1)
    mark_worker(alive)  # this process: alive
    storage.set_trial_system_attr(optuna_api.trial_id(dead), WORKER,
                                  f"{_machine()}|{_dead_pid()}|1|0")
    assert reap(study, set()) is False  # no heartbeats in a journal: nothing to wait for
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[2].params == study.trials[0].params  # the same sample, run again
    reap(study, set())  # the retry inherits the dead mark, but for another trial number
    assert [t.state for t in study.get_trials()] == states


def test_a_journal_trial_of_another_pid_namespace_is_left_running(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "s.log")))
    study = optuna.create_study(study_name="j", storage=storage)
    trial = study.ask()
    host, boot, _ = _machine().split("/", 2)  # a container on this host: its pids are its own
    storage.set_trial_system_attr(optuna_api.trial_id(trial), WORKER,
                                  f"{host}/{boot}/pid:[1]|{_dead_pid()}|1|0")
    reap(study, set())
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]


# --- 10. --force never replaces what is not a regular file ------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "symlink", "device"])
def test_an_output_that_is_not_a_regular_file_is_refused_even_with_force(
        tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out.json"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real.json").write_text("{}")
        target.symlink_to(tmp_path / "real.json")
    else:
        if os.geteuid() != 0:
            target = Path("/dev/null")  # a device anyone may name; it is never written
        else:
            os.mknod(target, 0o666 | 0o020000, os.makedev(1, 3))  # a second /dev/null
    mode = os.lstat(target).st_mode
    for attempt in (lambda: check_output(target, "-o", force=True),
                    lambda: write_text_atomic(target, "{}")):
        with pytest.raises(UserError, match="refusing to replace it"):
            attempt()
    assert os.lstat(target).st_mode == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.json", *(["real.json"] if kind == "symlink" else [])])


def test_export_over_a_fifo_is_one_line(cli: Runner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("-q", "run", "--storage", db, "--study", "e", "--n-trials", "1",
               "--no-baselines", *FAST)[0] == 0
    os.mkfifo(tmp_path / "best.json")
    rc, _, err = cli("export", "--storage", db, "--study", "e", "-o",
                     str(tmp_path / "best.json"), "--force")
    assert rc == 2 and one_line(err) and "is a FIFO; refusing to replace it" in err
    assert (tmp_path / "best.json").is_fifo()


# --- 11. a Ctrl-C that a finaliser swallowed still ends the command ---------------------------

@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C as at a terminal: a test run started in the background (`cmd &` in a script)
    inherits SIGINT ignored, and the command rightly keeps it so."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_a_ctrl_c_swallowed_by_a_finaliser_ends_in_one_line(
        cli: Runner, db: str, monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    class Held:
        pass

    held = [Held()]
    weakref.finalize(held[0], signal.raise_signal, signal.SIGINT)  # a weakref callback
    real = dispatch.parse

    def parse_then_collect(argv: list[str]) -> Any:
        held.clear()  # the finaliser runs here; Python prints "Exception ignored" and goes on
        return real(argv)

    monkeypatch.setattr(dispatch, "parse", parse_then_collect)
    optuna.create_study(study_name="s", storage=db)
    rc, out, err = cli("studies", "--storage", db)
    assert rc == 130 and err.endswith("bwbpf-search: interrupted\n")
    assert "s" in out  # the command itself finished


def test_a_command_started_with_ctrl_c_ignored_keeps_it_ignored(
        cli: Runner, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = dispatch.parse

    def parse_under_ctrl_c(argv: list[str]) -> Any:
        signal.raise_signal(signal.SIGINT)  # the script's Ctrl-C, meant for the script
        return real(argv)

    monkeypatch.setattr(dispatch, "parse", parse_under_ctrl_c)
    optuna.create_study(study_name="s", storage=db)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a script
    try:
        rc, out, _ = cli("studies", "--storage", db)
    finally:
        signal.signal(signal.SIGINT, before)
    assert rc == 0 and out.startswith("s: ")


# --- 13. a busy machine: the space is timed again, and the refusal names the FLOPs figure ----

class BusyHeads(StepTimer):
    """Step times as a machine busy while the heads are timed would measure them: every head
    50x slower, in the first pass only (``busy_passes`` 1) or in every pass."""

    def __init__(self, busy_passes: int) -> None:
        super().__init__(torch.device("cpu"), 8, in_channels=1, image_size=(28, 28),
                         num_classes=10, repeats=3, warmup=1)
        self.busy_passes, self.passes = busy_passes, 1

    def time_again(self) -> None:
        self.passes += 1
        super().time_again()

    def head(self, *args: Any, **kwargs: Any) -> float:
        seconds = super().head(*args, **kwargs)  # measured and kept as measured
        return 50 * seconds if self.passes <= self.busy_passes else seconds


# 1.2x: every decoupling of two or more even blocks reaches it, on a quiet machine or a busy one
SPACE = SearchSpace(backbones=("vgg8b",), width=0.125, min_speedup=1.2)
SHAPE: dict[str, Any] = {"in_channels": 1, "image_size": (28, 28), "num_classes": 10}


def test_a_speedup_refused_by_busy_step_times_names_the_flops_figure() -> None:
    check_reachable(SPACE, **SHAPE)  # by FLOPs the space reaches the constraint
    timer = BusyHeads(busy_passes=2)
    with pytest.raises(UserError) as e:
        check_reachable(SPACE, **SHAPE, timer=timer)
    assert timer.passes == 2  # timed a second time before refusing
    assert "by FLOPs it reaches" in str(e.value) and "--cost-model flops" in str(e.value)


def test_a_burst_of_load_in_the_first_timing_is_taken_back_by_the_second() -> None:
    timer = BusyHeads(busy_passes=1)
    check_reachable(SPACE, **SHAPE, timer=timer)  # accepted: the second pass was quiet
    assert timer.passes == 2


def test_a_second_timing_pass_keeps_the_faster_figure() -> None:
    timer = StepTimer(torch.device("cpu"), 8, in_channels=1, image_size=(28, 28),
                      num_classes=10, cache={"a": 2.0, "b": 1.0})
    timer.time_again()
    assert "a" not in timer.cache  # every piece is timed again
    timer.cache["a"], timer.cache["b"] = 3.0, 0.5
    assert dict(timer.cache) == {"a": 2.0, "b": 0.5}


# --- also: a document with a key given twice --------------------------------------------------

def test_a_document_with_a_duplicate_key_is_refused(cli: Runner, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text('{"schema": 1, "schema": 2}')
    rc, _, err = cli("train", "--arch", str(arch), *TINY, "--out", str(tmp_path / "run"))
    assert rc == 2 and one_line(err) and "duplicate key 'schema'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_a_sigkilled_journal_run_is_finished_by_its_rerun(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    log = tmp_path / "s.log"
    argv = [sys.executable, "-m", "bwbpf.search", "-q", "run", "--storage", f"journal:{log}",
            "--study", "j", "--n-trials", "2", "--no-baselines", "--pruner", "none", *TINY,
            "--train-subset", "600", "--epochs", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def running() -> list[optuna.trial.FrozenTrial]:
        if not log.exists():
            return []
        storage = JournalStorage(JournalFileBackend(str(log)))
        return [t for s in storage.get_all_studies() for t in storage.get_all_trials(s._study_id)
                if t.state == TrialState.RUNNING and WORKER in t.system_attrs]

    deadline = time.monotonic() + 120
    while not running():  # wait on the condition: a trial marked by its worker
        assert first.poll() is None and time.monotonic() < deadline, "no trial ran"
        time.sleep(0.05)
    first.kill()
    first.wait()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="j",
                              storage=JournalStorage(JournalFileBackend(str(log))))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
    assert TrialState.FAIL in states  # the killed worker's trial, failed and run again


def test_resume_without_an_earlier_run_says_so(cli: Runner, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc, _, err = cli("train", "--arch", "paper", *TINY, "--out", str(out), "--resume")
    assert rc == 0, err
    assert f"--resume: {out} holds no earlier run; starting a new one" in err
    assert (out / "metrics.json").is_file()


def test_a_command_run_from_another_thread_leaves_the_signals_alone(
        db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bwbpf.search.cli import main

    optuna.create_study(study_name="s", storage=db)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(main(["studies", "--storage", db])))
    t.start()
    t.join()
    assert codes == [0] and capsys.readouterr().out.startswith("s: ")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
