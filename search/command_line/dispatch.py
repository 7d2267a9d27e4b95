"""One `bwbpf-search` command once its libraries are loaded (``cli`` loads them): parse
(``parser``), run one subcommand (``commands``), and turn every way it can end into an exit
status and at most one line."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, Sequence

import optuna
from sqlalchemy.exc import SQLAlchemyError

from bwbpf.reports.optuna_api import OptunaChanged
from bwbpf.search.cli import interrupted
from bwbpf.search.command_line import commands, listing
from bwbpf.search.command_line.parser import PROG, UsageError, parse
from bwbpf.search.study.stopping import Terminated, stop_on_sigterm
from bwbpf.search.study.storage import StorageLost, storage_lost
from bwbpf.search.winners.full_training import Diverged
from bwbpf.spaces import UserError
from bwbpf.trainers import NonFiniteLoss
from bwbpf.trainers.device import OutOfMemory, is_out_of_memory, oom_line
from bwbpf.trainers.group import RankStop, end_rank, joined

log = logging.getLogger("bwbpf.search")
Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {  # what each subcommand runs
    "run": commands.cmd_run, "export": commands.cmd_export, "train": commands.cmd_train,
    "report": commands.cmd_report, "dashboard": commands.cmd_dashboard,
    "studies": commands.cmd_studies, "backbones": listing.cmd_backbones}


_FAILED_WITH_NONE = re.compile(r"Trial \d+ failed with value None\.$")


def _drop_optuna_trial_traceback(record: logging.LogRecord) -> bool:
    """Optuna logs a failed trial (NaN loss, Ctrl-C) with its full traceback, then "failed
    with value None"; the trial line gives the reason (fail_reason), and Ctrl-C ends in our
    one line, so both go. Other Optuna warnings stay."""
    return not record.exc_info and not _FAILED_WITH_NONE.match(record.getMessage())


def _heartbeat_hook(default: Callable[[threading.ExceptHookArgs], object]
                    ) -> Callable[[threading.ExceptHookArgs], None]:
    """Optuna's heartbeat thread dies with the storage (a PostgreSQL restart) and Python
    prints its 100-line traceback; the trial's own thread then fails with the one line the
    command prints. So the heartbeat's error is logged at DEBUG level, and others as before."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if "_record_heartbeat" in getattr(args.thread, "name", ""):
            log.debug("the heartbeat thread stopped: %s", args.exc_value)
            return
        default(args)

    return hook


def _quiet_stdout() -> None:
    """Python's advice for a closed pipe (`studies | head -1`): the rest of stdout goes to
    devnull, so the flush at exit raises nothing more."""
    with suppress(OSError, ValueError):  # no real file descriptor (captured in tests)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 ok, 2 bad input (one line on stderr), 1 other failures. A rank of a
    distributed run ends its process here (trainers.group.end_rank says why)."""
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if joined():
        end_rank(code)
    return code


@contextmanager
def command_logging(quiet: bool) -> Iterator[None]:
    """For one command: the package's lines (the ``bwbpf`` loggers) on stderr as bare
    messages, Optuna's at warnings only; the caller's logging (the root logger's handlers,
    the package's and Optuna's levels) as it was afterwards."""
    ours = logging.getLogger("bwbpf")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    was = ours.level, ours.propagate, optuna.logging.get_verbosity()
    ours.addHandler(handler)
    ours.setLevel(logging.WARNING if quiet else logging.INFO)
    ours.propagate = False  # a host's root handlers would print every line twice
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for h in logging.getLogger("optuna").handlers:
        h.addFilter(_drop_optuna_trial_traceback)  # once: addFilter skips a repeat
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(was[0])
        ours.propagate = was[1]
        optuna.logging.set_verbosity(was[2])


def _main(argv: list[str]) -> int:
    default = threading.excepthook
    threading.excepthook = _heartbeat_hook(default)
    try:
        return _outcome(argv)
    finally:
        threading.excepthook = default


def _fault_line(e: BaseException) -> str | None:
    """The one line of a runtime fault (exit 1); None for anything else."""
    if isinstance(e, (OptunaChanged, OutOfMemory, Diverged)):  # the message is the line
        return str(e)
    if isinstance(e, NonFiniteLoss):  # a schedule that did not say which run diverged
        return f"training diverged: {e}; try a lower --lr"
    if is_out_of_memory(e):  # where no guard named the work
        return oom_line(e, "running the command")
    return None


def _run(args: argparse.Namespace) -> int:
    """The parsed command, with SIGTERM's meaning (but for the dashboard: the server ends on
    SIGTERM as it is) and the command's logging."""
    if args.command != "dashboard":
        stop_on_sigterm()
    with command_logging(args.quiet):
        code = COMMANDS[args.command](args)
    sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    return code


def _outcome(argv: list[str]) -> int:
    try:
        args = parse(argv)
        return _run(args)
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except RankStop as e:  # one rank of a distributed run: the run's one line, or quiet
        if e.line:
            print(f"{PROG}: {'error: ' if e.code == 2 else ''}{e.line}", file=sys.stderr)
        return e.code
    except UserError as e:  # a launched rank > 0 is quiet: rank 0 says the same line
        if os.environ.get("RANK", "0") == "0" or "LOCAL_RANK" not in os.environ:
            print(f"{e.prog if isinstance(e, UsageError) else PROG}: error: {e}", file=sys.stderr)
        return 2
    except (StorageLost, SQLAlchemyError) as e:  # the storage went away mid-run
        lost = e if isinstance(e, StorageLost) else storage_lost(e, getattr(args, "storage", ""))
        print(f"bwbpf-search: {lost}", file=sys.stderr)
        return 1
    except Terminated:
        if getattr(args, "worker", None) is None:  # a --jobs worker: its parent says it
            resumable = getattr(args, "command", "") in ("run", "train")
            print("bwbpf-search: stopped by SIGTERM"
                  + ("; rerun the same command to resume" if resumable else ""), file=sys.stderr)
        return 143
    except (MemoryError, RuntimeError) as e:  # OutOfMemory, Diverged, NonFiniteLoss among them
        line = _fault_line(e)
        if line is None:  # a programming error: its traceback is wanted
            raise
        print(f"bwbpf-search: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted()
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
