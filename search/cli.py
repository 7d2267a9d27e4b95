"""The `bwbpf-search` entry point. It imports nothing heavy itself, so that what can go wrong
before a command runs is still one line: standard output closed, the current folder deleted,
torch failing to load (too little memory for its libraries), Ctrl-C while loading. Then
``search.command_line.dispatch`` runs the command.

Ctrl-C raises KeyboardInterrupt wherever Python is; where that is a finaliser or a weakref
callback (SQLAlchemy's), Python prints "Exception ignored" and the command goes on. The
handler here also remembers the signal, so such a command still ends "interrupted", 130; and,
like SIGTERM's, it waits for a point outside the storage's code (``safe_point``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Sequence

from bwbpf.search.study.safe_point import SafePoint

PROG = "bwbpf-search"
INTERRUPTED = 130


class _Interrupts:
    """SIGINT raises KeyboardInterrupt, as Python's own handler does, and is remembered."""

    def __init__(self) -> None:
        self.seen = False
        self._safe = SafePoint(KeyboardInterrupt)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        self._safe(signum, frame)


def _refusal() -> str | None:
    """What makes any command impossible before it starts, as its one line."""
    if sys.stdout is None:  # fd 1 was closed (`>&-`): Python gives no stream at all
        return "standard output is closed; redirect it to a file or to /dev/null"
    try:
        os.getcwd()
    except OSError:
        return "the current folder no longer exists; cd to a folder that does"
    return None


def _load() -> Any:
    """``search.command_line.dispatch``, which loads torch, Optuna and the project."""
    from bwbpf.search.command_line import dispatch

    return dispatch


def _load_failure(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    hint = ""
    if "map segment" in first or "allocate" in first or isinstance(e, MemoryError):
        hint = "; the process has too little memory for torch's libraries (see ulimit -v)"
    return f"{PROG}: cannot load its libraries: {first}{hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 ok, 2 bad input (one line on stderr), 1 other failures, 130 Ctrl-C.
    Called as the program (``argv`` None), a Ctrl-C after the command ended is ignored, so
    interpreter shutdown prints nothing; called as a function, the caller's SIGINT handler
    is given back."""
    if (line := _refusal()) is not None:
        print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    interrupts = _Interrupts()
    previous = signal.getsignal(signal.SIGINT)
    # Only the main thread may set a handler; a background job started with Ctrl-C ignored
    # keeps it ignored.
    ours = threading.current_thread() is threading.main_thread() and previous is not signal.SIG_IGN
    if ours:
        signal.signal(signal.SIGINT, interrupts)
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv), interrupts)
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.SIG_IGN if argv is None
                          else previous if previous is not None else signal.SIG_DFL)
    return code


def interrupted() -> int:
    """Ctrl-C's one line and exit status, wherever the command was."""
    print(f"{PROG}: interrupted", file=sys.stderr)
    return INTERRUPTED


def _run(argv: list[str], interrupts: _Interrupts) -> int:
    try:
        dispatch = _load()
    except KeyboardInterrupt:
        return interrupted()
    except (ImportError, OSError, MemoryError) as e:
        print(_load_failure(e), file=sys.stderr)
        return 1
    code: int = dispatch.run_cli(argv)
    if interrupts.seen and code == 0:  # swallowed by a finaliser: the command did not finish
        return interrupted()
    return code
