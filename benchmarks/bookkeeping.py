"""The tool's own time per trial against the study's size: 100, 1,000 and 5,000 trials on
SQLite (target: the time at 5,000 within 2x of the time at 100).

After every trial a run asks what its budget has used (the objective, the stop callback and
the loop that asks for more trials: ``search.study.budget.used``), ranks the study for the progress
line (the best so far, in ``reports.record.ranked``'s order), writes the trial's line and checks
the rejection guard. Each of those reads the study's trials through Optuna, whose
cached storage reads only what changed; the tool's part is what it does with them. Here a
study holds N finished trials, each with a full record (the decoupling document included),
as `run` writes them; one more is stored (not timed), then those calls are timed, and the
time of the Optuna reads they make (the same number of ``get_trials`` calls, timed alone) is
taken off. The median of REPEATS such trials.

    .venv/bin/python benchmarks/bookkeeping.py
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import optuna
from common import Row, show
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from bwbpf.reports.record import TrialRecord
from bwbpf.search.run.summary import Progress
from bwbpf.search.study import budget
from bwbpf.search.study.settings import SearchSettings
from bwbpf.search.trial.constraints import Constraint, RejectionGuard
from bwbpf.spaces import Decoupling, to_document

SIZES, REPEATS = (100, 1000, 5000), 15


def record(n: int) -> dict[str, Any]:
    """A trial's user attributes as `run` stores them: every fifth rejected (PRUNED), every
    seventh pruned after an epoch, the others complete."""
    doc = to_document(Decoupling.paper_default("vgg8b"), metrics={"speedup": 2.1})
    rec = TrialRecord(document=doc, speedup=2.1, speedup_flops=2.3, memory_ratio=0.5,
                      block_flops=(1, 2, 3, 4), curve=(0.5, 0.6, 0.7),
                      rejected="speed-up 1.2x < 2x" if n % 5 == 0 else None,
                      pruned_at=1 if n % 7 == 0 else None)
    return rec.attrs()


def trial(n: int) -> optuna.trial.FrozenTrial:
    state = (TrialState.PRUNED if n % 5 == 0 or n % 7 == 0 else TrialState.COMPLETE)
    return create_trial(state=state, value=0.5 + (n % 97) / 1000
                        if state == TrialState.COMPLETE else None,
                        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                        user_attrs=record(n))


class Counted:
    """The study's ``get_trials``, counting its calls."""

    def __init__(self, study: optuna.Study) -> None:
        self.study, self.calls, self.inner = study, 0, study.get_trials

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.inner(*a, **kw)


def per_trial(study: optuna.Study, guard: RejectionGuard, progress: Progress) -> float:
    """Stores one more trial, then times the tool's calls after it, less Optuna's reads."""
    study.add_trial(trial(len(study.get_trials(deepcopy=False))))
    counted = Counted(study)
    study.get_trials = counted  # type: ignore[method-assign]
    last = study.get_trials(deepcopy=False)[-1]  # (the trial Optuna hands the callbacks)
    counted.calls = 0
    start = time.perf_counter()
    budget.used(study, before=last.number)  # the objective
    budget.used(study)  # the stop callback
    budget.used(study)  # the loop's room
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        progress(study, last)  # the bar: the budget, the best so far and the trial's line
    guard(study, last)
    tool = time.perf_counter() - start
    reads = counted.calls
    study.get_trials = counted.inner  # type: ignore[method-assign]
    start = time.perf_counter()
    for _ in range(reads):
        study.get_trials(deepcopy=False)
    return tool - (time.perf_counter() - start)


def run() -> list[Row]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    times: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            url = f"sqlite:///{Path(tmp) / f'{size}.db'}"
            study = optuna.create_study(storage=url, study_name="b", direction="maximize")
            study.add_trials([trial(n) for n in range(size)])
            study = optuna.load_study(storage=url, study_name="b")  # as a worker opens it
            guard = RejectionGuard([Constraint("min_speedup", 2.0)])
            with redirect_stderr(io.StringIO()):
                progress = Progress(study, SearchSettings(study="b", storage=url))
            per_trial(study, guard, progress)  # the first call reads every record once
            times[size] = statistics.median(per_trial(study, guard, progress)
                                            for _ in range(REPEATS))
            print(f"{size:5d} trials: {times[size] * 1e3:.3f} ms of the tool's own time "
                  "per trial", flush=True)
    small, large = times[SIZES[0]], times[SIZES[-1]]
    return [Row(f"tool's time per trial at {SIZES[-1]} / at {SIZES[0]} trials", large / small,
                "<= 2", ", ".join(f"{n}: {t * 1e3:.3f} ms" for n, t in times.items()))]


if __name__ == "__main__":
    show(run())
