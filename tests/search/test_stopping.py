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

from bwbpf.reports import optuna_api
from bwbpf.search import cli
from bwbpf.search.study import safe_point, stopping


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


def _storage_frames_left(e: BaseException) -> list[str]:
    """The frames between this test's and the signal handler's when ``e`` was raised. Python
    3.11 raises it at the call into the storage (none); 3.10 and 3.12 on the returning frame of
    that call, whose code has ended (one); deeper would be inside the storage, half-way."""
    files = [f.filename for f in traceback.extract_tb(e.__traceback__)]
    below = files[len(files) - files[::-1].index(__file__):]
    return [f for f in below if not f.endswith(("safe_point.py", "stopping.py", "cli.py"))]


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
    trial_id = optuna_api.trial_id(study.ask())
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
        written += f"k{written}" in storage.get_trial(trial_id).user_attrs  # stopped after it
        assert caught.value.__context__ is None, "the exception broke the storage's clean-up"
        assert len(_storage_frames_left(caught.value)) <= 1, "stopped inside the storage"
    assert not list(tmp_path.glob("*.lock*")), "a journal lock was left behind"
    attrs = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(
        str(log)))).trials[0].user_attrs
    assert attrs == {f"k{i}": i for i in range(written)}


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
