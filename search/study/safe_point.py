"""Where a signal's exception may be raised: never inside the storage's own code.

Python runs a signal's handler between two bytecodes, wherever the main thread is. An exception
raised there inside the storage can break it half-way: Optuna's journal file lock, for one,
is removed twice and fails with FileNotFoundError instead of stopping. So a handler asks a
``SafePoint``: outside the storage the exception is raised at once; inside, it is raised where
the outermost call into the storage returns to its caller (a trace on that one frame), or
after ``DEFER_LIMIT_S`` wherever the code is, so that a storage that hangs still stops.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable

# Code a signal's exception must not break half-way: the storages and Optuna's record of a
# finished trial.
STORAGE_CODE = ("optuna.storages", "optuna.study._tell", "sqlalchemy")
DEFER_LIMIT_S = 10.0


def _is_storage(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith(STORAGE_CODE)


def outermost_storage(frame: FrameType | None) -> FrameType | None:
    """The first call into the storage's code on ``frame``'s stack, or None outside it."""
    found = None
    while frame is not None:
        if _is_storage(frame):
            found = frame
        frame = frame.f_back
    return found


class SafePoint:
    """A signal handler that raises ``stop()`` at the first safe point (see the module)."""

    def __init__(self, stop: Callable[[], BaseException]) -> None:
        self._stop = stop
        self._since: float | None = None
        self._trapped: FrameType | None = None
        self._previous_trace: Any = None
        self._limit: threading.Timer | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        start = self._since = time.monotonic() if self._since is None else self._since
        outer = outermost_storage(frame)
        if outer is None or time.monotonic() - start >= DEFER_LIMIT_S:
            self._raise()
        if self._trapped is None:
            self._trap(outer, signum)  # type: ignore[arg-type]

    def _trap(self, outer: FrameType, signum: int) -> None:
        def on_return(f: FrameType, event: str, arg: object) -> Any:
            if event == "return" and f is outer:
                self._raise()  # raised at the call into the storage, in its caller
            return on_return

        self._trapped = outer
        self._previous_trace = sys.gettrace()
        outer.f_trace_lines = False
        outer.f_trace = on_return
        sys.settrace(lambda *_: None)  # frames report to their own trace only
        self._limit = threading.Timer(DEFER_LIMIT_S, _thread.interrupt_main, (signum,))
        self._limit.daemon = True
        self._limit.start()

    def _raise(self) -> None:
        if self._limit is not None:
            self._limit.cancel()
        if self._trapped is not None:
            self._trapped.f_trace = None
            sys.settrace(self._previous_trace)
        self._since = self._trapped = self._limit = None
        raise self._stop()
