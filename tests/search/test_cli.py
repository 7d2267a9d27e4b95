"""The command line itself: one-line refusals, usage errors, -q and --version, the defaults
--help shows, the dashboard's address checks, closed pipes, Optuna's tracebacks, and how
--jobs workers are launched."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from bwbpf.search.command_line import commands
from bwbpf.search.command_line.parser import build_parser, parse
from bwbpf.search.run import runner
from bwbpf.search.study.settings import MAX_SEED, TRAIN_EPOCHS, SearchSettings
from bwbpf.search.study.storage import package_version
from bwbpf.search.winners.full_training import load_arch
from bwbpf.spaces import SearchSpace, UserError

from .conftest import FAST, Runner

BWBPF = [sys.executable, "-m", "bwbpf.search"]


def one_line(rc: int, err: str, message: str) -> None:
    assert rc == 2, err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def new_study(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=db, study_name="s", direction="maximize")
    return db


BAD_RUN = [
    (["--seed", "-1"], "argument --seed: -1 must be >= 0"),
    (["--seed", "99999999999999999999999"],
     f"argument --seed: 99999999999999999999999 must be <= {MAX_SEED}"),
    (["--pruner", "median", "--pruner-startup=-3"], "argument --pruner-startup: -3 must be >= 0"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_RUN, ids=[c[1][:30] for c in BAD_RUN])
def test_run_refuses_bad_seed_and_pruner_startup(cli: Runner, tmp_path: Path,
                                                 flags: list[str], message: str) -> None:
    db = tmp_path / "study.db"
    rc, _, err = cli("run", "--storage", f"sqlite:///{db}", "--n-trials", "1",
                     "--no-baselines", *FAST, *flags)
    one_line(rc, err, message)
    assert not db.exists()


def test_train_refuses_a_bad_seed(cli: Runner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, _, err = cli("train", "--seed", "-1", "--out", str(out), "--epochs", "1",
                     "--train-subset", "64", "--dataset", "synthetic", "--device", "cpu")
    one_line(rc, err, "argument --seed: -1 must be >= 0")
    assert not out.exists()


def test_seed_and_pruner_startup_bounds_in_the_settings() -> None:
    assert build_parser().parse_args(["run", "--seed", str(MAX_SEED)]).seed == MAX_SEED
    optuna.samplers.TPESampler(seed=MAX_SEED)  # the largest seed is one the samplers take
    assert SearchSettings(study="s", storage="sqlite:///x.db", seed=MAX_SEED,
                          pruner_startup=0).seed == MAX_SEED
    for bad in ({"seed": -1}, {"seed": MAX_SEED + 1}, {"pruner_startup": -3}):
        with pytest.raises(UserError, match=re.escape(str(next(iter(bad.values()))))):
            SearchSettings(study="s", storage="sqlite:///x.db", **bad)  # type: ignore[arg-type]


USAGE = [
    (["run", "--epochs", "two"],
     "bwbpf-search run: error: argument --epochs: 'two' is not an integer\n"),
    (["run", "--frobnicate"], "bwbpf-search run: error: unrecognized arguments: --frobnicate\n"),
    (["export", "--study"], "bwbpf-search export: error: argument --study: expected one"),
    (["frobnicate"], "bwbpf-search: error: argument command: invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("argv", "start"), USAGE, ids=[" ".join(c[0]) for c in USAGE])
def test_usage_errors_name_the_program_once(cli: Runner, argv: list[str], start: str) -> None:
    rc, out, err = cli(*argv)
    assert rc == 2 and out == ""
    assert err.startswith(start), err
    assert err.count("bwbpf-search") == 1 and err.count("\n") == 1


@pytest.mark.parametrize(("argv", "quiet"), [
    (["studies"], False), (["-q", "studies"], True), (["studies", "-q"], True),
    (["run", "--quiet"], True), (["-q", "run", "-q"], True), (["--quiet", "dashboard"], True),
])
def test_quiet_before_or_after_the_subcommand(argv: list[str], quiet: bool) -> None:
    assert build_parser().parse_args(argv).quiet is quiet


def test_quiet_after_the_subcommand_runs(cli: Runner, tmp_path: Path) -> None:
    db = new_study(tmp_path)
    rc, out, err = cli("studies", "-q", "--storage", db)
    assert rc == 0, err
    assert out.startswith("s: ")


def test_a_command_leaves_the_hosts_logging_as_it_found_it(cli: Runner, tmp_path: Path
                                                         ) -> None:
    """Called as a function, a command prints its lines through its own handler and gives
    back the root logger's handlers and levels, the package's logger and Optuna's verbosity
    as they were; the host's handler sees none of the command's lines."""
    seen: list[logging.LogRecord] = []
    host = logging.Handler(logging.DEBUG)
    host.emit = seen.append  # type: ignore[method-assign]
    root, ours = logging.getLogger(), logging.getLogger("bwbpf")
    root.addHandler(host)
    try:
        before = (list(root.handlers), root.level, ours.level, ours.propagate,
                  list(ours.handlers), optuna.logging.get_verbosity())
        rc, out, err = cli("train", "--arch", "paper", "--epochs", "1", "--train-subset", "64",
                           "--dataset", "synthetic", "--device", "cpu", "--out",
                           str(tmp_path / "run"))
        assert rc == 0, err
        assert "epoch 1/1" in err  # the command's own lines, on stderr
        assert (list(root.handlers), root.level, ours.level, ours.propagate,
                list(ours.handlers), optuna.logging.get_verbosity()) == before
        assert not [r for r in seen if r.name.startswith("bwbpf")]
    finally:
        root.removeHandler(host)


def test_version(cli: Runner) -> None:
    rc, out, err = cli("--version")
    assert (rc, out, err) == (0, f"bwbpf-search {package_version()}\n", "")


def flag_help(text: str, flag: str) -> str:
    """One flag's help in argparse's --help text, on one line."""
    lines = text.splitlines()
    # argparse indents an option by two spaces; a help line that wraps onto a flag, more
    start = next(i for i, line in enumerate(lines) if re.match(rf"  {flag}\b(?!-)", line))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 6) or line.lstrip().startswith("-"):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def help_text(cli: Runner, command: str) -> str:
    rc, out, _ = cli(command, "--help")
    assert rc == 0
    return out


def test_run_help_shows_the_settings_defaults(cli: Runner) -> None:
    text = help_text(cli, "run")
    d = SearchSettings
    for flag, value in (("--epochs", d.epochs), ("--n-trials", d.n_trials),
                        ("--pruner-startup", d.pruner_startup), ("--seed", d.seed),
                        ("--sampler", d.sampler), ("--heartbeat", d.heartbeat),
                        ("--batch-size", d.batch_size), ("--dataset", d.dataset),
                        ("--objectives", ",".join(d.objectives)),
                        ("--bp-lrs", ",".join(map(str, d.bp_lrs)))):
        assert f"(default {value})" in flag_help(text, flag), flag
    for flag, value in (("--backbone", ",".join(SearchSpace.backbones)),
                        ("--width", SearchSpace.width), ("--min-blocks", SearchSpace.min_blocks),
                        ("--max-blocks", SearchSpace.max_blocks),
                        ("--min-units", SearchSpace.min_units),
                        ("--heads", ",".join(SearchSpace.heads))):
        assert f"(default: the --space file's, else {value})" in flag_help(text, flag), flag


def test_run_flags_default_to_the_settings_dataclass() -> None:
    args = build_parser().parse_args(["run"])
    settings = commands.settings_from(args)
    assert settings.space_given == frozenset()  # no space field named: a rerun adopts all
    assert replace(settings, space_given=None) == SearchSettings(study=args.study,
                                                                 storage=args.storage)


def test_train_help_and_defaults(cli: Runner) -> None:
    text = help_text(cli, "train")
    assert f"(default {TRAIN_EPOCHS})" in flag_help(text, "--epochs")
    assert f"default {SearchSpace.backbones[0]} for paper" in flag_help(text, "--backbone")
    assert f"default {SearchSpace.width} for paper" in flag_help(text, "--width")
    assert build_parser().parse_args(["train"]).epochs == TRAIN_EPOCHS
    for arch in ("paper", "uniform"):
        d, _, doc = load_arch(arch, None, None, 0.05)
        assert doc is None
        assert (d.backbone, d.width) == (SearchSpace.backbones[0], SearchSpace.width)


@pytest.fixture
def space3(tmp_path: Path) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"min_blocks": 3, "max_blocks": 4}))
    return path


def test_max_blocks_below_the_spaces_min_blocks_is_refused(cli: Runner, tmp_path: Path,
                                                           space3: Path) -> None:
    db = tmp_path / "study.db"
    rc, _, err = cli("run", "--storage", f"sqlite:///{db}", "--space", str(space3),
                     "--max-blocks", "2", "--n-trials", "1", "--no-baselines", *FAST)
    one_line(rc, err, "--max-blocks 2 is below the space's min_blocks 3; pass --min-blocks")
    assert not db.exists()


def test_min_blocks_flag(space3: Path) -> None:
    args = build_parser().parse_args(["run", "--space", str(space3), "--min-blocks", "2",
                                      "--max-blocks", "2"])
    space, named = commands.space_from(args)
    assert (space.min_blocks, space.max_blocks) == (2, 2)
    assert {"min_blocks", "max_blocks"} <= named and "heads" not in named
    space, named = commands.space_from(build_parser().parse_args(["run", "--space",
                                                                  str(space3)]))
    assert (space.min_blocks, space.max_blocks) == (3, 4)
    assert named == frozenset(yaml.safe_load(space3.read_text()))  # the file's fields


URL = "postgresql+psycopg://me:s3cret-pw@db.example:5432/bwbpf"


@pytest.mark.parametrize("storage", [["--storage", URL], [f"--storage={URL}"],
                                     ["--stor", URL], [f"--sto={URL}"]],
                         ids=["space", "equals", "abbreviated", "abbreviated-equals"])
def test_worker_launch_keeps_the_storage_out_of_argv(storage: list[str]) -> None:
    args = parse(["-q", "run", "--study", "s", *storage, "--epochs", "2", "--jobs", "3",
                  "-q"])
    cmd, env = commands.worker_launch(args, 2)
    assert env["BWBPF_STORAGE"] == URL
    assert not [a for a in cmd if "s3cret" in a or "db.example" in a]
    assert cmd[:5] == [*BWBPF, "-q", "run"]
    assert cmd[5:7] == ["--study=s", "--epochs=2"] and "--jobs" not in " ".join(cmd)
    assert cmd[cmd.index("--worker") + 1] == "2" and "--no-baselines" in cmd
    assert parse(cmd[3:]).jobs == 1  # the last --jobs wins
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment passes on


def test_run_workers_starts_each_launch_with_its_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = new_study(tmp_path)
    study = optuna.load_study(study_name="s", storage=db)
    monkeypatch.setattr(runner, "start", lambda s: (study, object(), True, None))
    check = "import os, sys; sys.exit(0 if os.environ['BWBPF_STORAGE'] == sys.argv[1] else 3)"
    launches = [([sys.executable, "-c", check, URL], {**os.environ, "BWBPF_STORAGE": URL}),
                ([sys.executable, "-c", check, URL], {**os.environ, "BWBPF_STORAGE": "other"})]
    s = SearchSettings(study="s", storage=db, quiet=True)
    assert runner.run_workers(s, launches[:1], poll_s=0.05) == (study, 0)
    assert runner.run_workers(s, launches, poll_s=0.05) == (study, 3)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna_dashboard

    def run_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr(optuna_dashboard, "run_server", run_server)


def test_dashboard_refuses_a_port_out_of_range_or_a_bad_host(cli: Runner, tmp_path: Path,
                                                             no_server: None) -> None:
    db = tmp_path / "study.db"
    rc, _, err = cli("dashboard", "--storage", f"sqlite:///{db}", "--port", "70000")
    one_line(rc, err, "argument --port: 70000 must be <= 65535")
    rc, _, err = cli("dashboard", "--storage", f"sqlite:///{db}", "--host", "999.1.1.1")
    one_line(rc, err, "--host 999.1.1.1: cannot resolve it")
    assert not db.exists()


def test_dashboard_refuses_a_port_in_use(cli: Runner, tmp_path: Path, no_server: None) -> None:
    db = new_study(tmp_path)
    before = (tmp_path / "study.db").read_bytes()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, _, err = cli("dashboard", "--storage", db, "--port", str(port))
    one_line(rc, err, f"--port {port}: already in use on 127.0.0.1")
    assert (tmp_path / "study.db").read_bytes() == before


def test_dashboard_server_start_failure_is_one_line(cli: Runner, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna_dashboard

    def run_server(*args: object, **kwargs: object) -> None:  # taken after the check
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(optuna_dashboard, "run_server", run_server)
    db = new_study(tmp_path)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    rc, _, err = cli("dashboard", "--storage", db, "--port", str(port))
    one_line(rc, err, f"--port {port}: cannot listen there (Address already in use)")


def test_a_closed_pipe_ends_quietly_with_status_1(tmp_path: Path) -> None:
    db = new_study(tmp_path)
    # the reader is gone before anything is written, as with `bwbpf-search studies | head -1`
    # once head has its line
    proc = subprocess.Popen([*BWBPF, "studies", "--storage", db], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_optunas_failed_trial_records_are_dropped(cli: Runner, tmp_path: Path) -> None:
    assert cli("studies", "--storage", new_study(tmp_path))[0] == 0  # main installs the filter
    handler = logging.getLogger("optuna").handlers[0]
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        info = sys.exc_info()

    def record(msg: str, exc_info: object = None) -> logging.LogRecord:
        return logging.LogRecord("optuna.study._optimize", logging.WARNING, __file__, 1, msg,
                                 None, exc_info)  # type: ignore[arg-type]

    assert not handler.filter(record("Trial 3 failed with parameters: {} because of the "
                                     "following error: KeyboardInterrupt().", info))
    assert not handler.filter(record("Trial 3 failed with value None."))
    assert handler.filter(record("Trial 3 failed with value nan."))
    assert handler.filter(record("some other warning"))


def test_a_trial_failing_on_a_nan_loss_prints_no_traceback(tmp_path: Path) -> None:
    space = tmp_path / "nan.json"  # a learning rate of 10 from the first step: non-finite
    space.write_text(json.dumps({"lr": [10, 10], "lr_mult": [1.0, 1.0],
                                 "weight_decay": [1e-5, 1e-5], "lr_schedule": "cosine"}))
    db = f"sqlite:///{tmp_path / 'study.db'}"
    r = subprocess.run([*BWBPF, "run", "--storage", db, "--study", "nan", "--space", str(space),
                        "--n-trials", "1", "--no-baselines", "--pruner", "none",
                        *FAST, "--train-subset", "256", "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    trials = optuna.load_study(study_name="nan", storage=db).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL], r.stderr  # it really failed
    assert "loss is not finite" in trials[0].user_attrs["fail_reason"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "failed with" not in r.stderr
    assert "loss is not finite" in r.stdout  # the reason, on the trial's line
