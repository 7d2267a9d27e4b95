"""SIGTERM stops a search as Ctrl-C does, and a parent's workers stop with it.

A `run` that gets SIGTERM (``kill``, ``timeout``, a batch system) raises ``Terminated``, a
KeyboardInterrupt: the running trial is recorded as interrupted (it uses no budget) and the
study stays resumable. A `run --jobs N` parent forwards the signal to its workers, waits
for them and kills any that hang; each worker also asks the kernel for SIGTERM when its
parent dies (Linux's PR_SET_PDEATHSIG), so no worker outlives a parent killed by SIGKILL.

Both signals wait for a point outside the storage's code (``safe_point``).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
from contextlib import suppress
from typing import Any

from bwbpf.search.study.safe_point import SafePoint

GRACE_S = 60.0  # seconds workers get to record their trial as interrupted before SIGKILL
PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM: this process stops as after Ctrl-C."""


def _terminated() -> Terminated:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-up finish
    return Terminated()


def stop_on_sigterm() -> None:
    """SIGTERM raises ``Terminated`` from now on (only the main thread may say so: a command
    run from another thread leaves SIGTERM as it was)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, SafePoint(_terminated))


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_worker(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[Any]:
    """A worker process that gets SIGTERM when this process dies, however it dies."""
    return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)


def stop_workers(procs: list[subprocess.Popen[Any]], sig: int | None,
                 grace_s: float = GRACE_S) -> None:
    """Sends ``sig`` (None: none, they have it) to the live workers, waits up to ``grace_s``
    for all, kills the rest."""
    for p in procs:
        if sig is not None and p.poll() is None:
            with suppress(OSError):
                p.send_signal(sig)
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
