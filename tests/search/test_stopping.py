"""A signal's exception waits for a point outside the storage's code, so the storage is never
broken half-way (Optuna's journal file lock, released twice, raised FileNotFoundError instead of
stopping), and a storage that hangs is still interrupted."""

from __future__ import annotations

import random
import signal
import threading
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Callable, Iterator

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from bwbpf.search import cli
from bwbpf.search.study import safe_point, stopping

STORAGE_PATHS = ("optuna/storages", "sqlalchemy")


@pytest.fixture
def handlers() -> Iterator[None]:
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, before[0])
    signal.signal(signal.SIGINT, before[1])


def _signal_soon(sig: int, after_s: float) -> None:
    main = threading.main_thread().ident
    assert main is not None
    threading.Timer(after_s, signal.pthread_kill, (main, sig)).start()


def _where_raised(e: BaseException) -> list[str]:
    return [f.filename for f in traceback.extract_tb(e.__traceback__)]


@pytest.mark.parametrize("sig, install, expected", [
    (signal.SIGTERM, stopping.stop_on_sigterm, stopping.Terminated),
    (signal.SIGINT, lambda: signal.signal(signal.SIGINT, cli._Interrupts()), KeyboardInterrupt),
], ids=["TERM", "INT"])
def test_a_signal_never_lands_inside_the_storage(
        tmp_path: Path, handlers: None, sig: int, install: Callable[[], object],
        expected: type[BaseException]) -> None:
    log = tmp_path / "study.log"
    storage = JournalStorage(JournalFileBackend(str(log)))
    study = optuna.create_study(study_name="s", storage=storage)
    trial_id = study.ask()._trial_id
    rng = random.Random(0)
    written = 0
    for _ in range(25):
        install()
        _signal_soon(sig, rng.uniform(0.0, 0.03))
        with pytest.raises(expected) as caught:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # nearly all of this loop is the storage's
                storage.set_trial_user_attr(trial_id, f"k{written}", written)
                written += 1
        assert caught.value.__context__ is None, "the exception broke the storage's clean-up"
        assert not [f for f in _where_raised(caught.value) if any(p in f for p in STORAGE_PATHS)]
    assert not list(tmp_path.glob("*.lock*")), "a journal lock was left behind"
    attrs = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(
        str(log)))).trials[0].user_attrs
    # every write is whole; the last may be stored though its caller was stopped on its return
    assert attrs == {f"k{i}": i for i in range(len(attrs))}
    assert len(attrs) in (written, written + 1)


def _hung_storage(flag: list[bool]) -> Callable[[], None]:
    """A function that Python counts as the storage's code and that does not return for 20 s."""
    code = ("def call():\n    end = time.monotonic() + 20\n"
            "    while time.monotonic() < end:\n        time.sleep(0.005)\n    flag.append(True)\n")
    space: dict[str, object] = {"__name__": "sqlalchemy.pool.hung", "time": time, "flag": flag}
    exec(code, space)  # noqa: S102 - a function whose module is the storage's
    return space["call"]  # type: ignore[return-value]


def test_a_storage_that_hangs_is_interrupted_after_the_limit(
        handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safe_point, "DEFER_LIMIT_S", 0.3)
    finished: list[bool] = []
    call = _hung_storage(finished)
    stopping.stop_on_sigterm()
    _signal_soon(signal.SIGTERM, 0.05)
    start = time.monotonic()
    with pytest.raises(stopping.Terminated):
        call()
    assert 0.3 <= time.monotonic() - start < 10, "stopped before the limit, or long after it"
    assert not finished


def test_the_storage_is_recognised_from_any_frame_below_it() -> None:
    seen: list[FrameType | None] = []
    space: dict[str, object] = {"__name__": "optuna.storages._fake", "seen": seen,
                                "sys": __import__("sys"), "inner": lambda: seen.append(
                                    __import__("sys")._getframe())}
    exec("def outer():\n    inner()\n", space)  # noqa: S102
    space["outer"]()  # type: ignore[operator]
    assert safe_point.outermost_storage(seen[0]) is seen[0].f_back
    assert safe_point.outermost_storage(__import__("sys")._getframe()) is None
