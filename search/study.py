"""Storages, studies, samplers and pruners: everything Optuna is asked to set up."""

from __future__ import annotations

import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from bwbpf.spaces import UserError

log = logging.getLogger("bwbpf.search")

Sampler = Literal["tpe", "random", "nsga2", "gp"]
Pruner = Literal["hyperband", "sha", "median", "none"]
DIALECTS = ("sqlite", "postgresql", "mysql")
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_TIMEOUT_S = 60  # a second process waits this long for the write lock, not "locked"
HEARTBEAT_RETRIES = 2  # a killed worker's trial is re-queued at most this often
SCHEMA_RACE_RETRIES = 5


class StorageLost(RuntimeError):
    """The storage went away mid-run (server restart, network); the message is one line."""


def storage_cause(e: BaseException | None) -> BaseException | None:
    """The SQLAlchemy error behind ``e``, if any (Optuna can mask it with its own error)."""
    from sqlalchemy.exc import SQLAlchemyError

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, SQLAlchemyError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def storage_lost(e: BaseException, url: str) -> StorageLost:
    cause = storage_cause(e) or e
    first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or ["?"])[0]
    return StorageLost(f"storage {redact(url)} failed: {redact(first)[:200]}; what is stored "
                       "is kept: rerun the same command to finish the study")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bwbpf-search")
    except PackageNotFoundError:
        return "unknown"


def redact(url: str) -> str:
    """The URL with any password replaced by ***; safe for logs, errors, JSON and reports."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_storage_url(url: str) -> None:
    """Refuses bad storage URLs before anything is opened or created."""
    if url.startswith("journal:"):
        _check_file(Path(url[len("journal:"):]), url, magic=None)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"--storage {redact(url)!r} is not a storage URL; use sqlite:///FILE, "
                        "postgresql+psycopg://USER:PW@HOST/DB, mysql+pymysql://... or "
                        "journal:FILE") from None
    if parsed.get_backend_name() not in DIALECTS:
        raise UserError(f"--storage {redact(url)}: unknown dialect "
                        f"{parsed.get_backend_name()!r}; valid: {', '.join(DIALECTS)}, journal")
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError(f"--storage {url}: give a file, e.g. sqlite:///study.db")
        _check_file(Path(parsed.database), url, magic=SQLITE_MAGIC)


def _check_file(path: Path, url: str, magic: bytes | None) -> None:
    if path.is_dir():
        raise UserError(f"--storage {url}: {path} is a directory")
    if not path.parent.is_dir():
        raise UserError(f"--storage {url}: folder {path.parent} does not exist")
    if magic and path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as f:
            head = f.read(len(magic))
        if head != magic:
            raise UserError(f"--storage {url}: {path} is not an SQLite database; "
                            "refusing to touch it")


def open_storage(url: str, *, heartbeat_s: int | None = 60) -> BaseStorage:
    """An Optuna storage; RDB storages get heartbeats and retry of heartbeat-stale trials."""
    check_storage_url(url)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return _rdb(url, heartbeat_s)
        except Exception as e:  # sqlalchemy.exc.*, a missing driver, a refused connection
            if attempt < SCHEMA_RACE_RETRIES and _schema_race(e):
                time.sleep(0.2 * (attempt + 1))  # the other process is creating the tables
                continue
            raise UserError(f"cannot open storage {redact(url)}: {_first_line(e)}") from None
    raise AssertionError("unreachable")


def _rdb(url: str, heartbeat_s: int | None) -> RDBStorage:
    sqlite = url.startswith("sqlite")
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not heartbeat_s:
            return RDBStorage(url, engine_kwargs=engine)
        # A trial whose worker missed three heartbeats is failed and re-queued.
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                          grace_period=max(2, 3 * heartbeat_s),
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                              max_retry=HEARTBEAT_RETRIES))


def _schema_race(e: BaseException) -> bool:
    """Two processes creating Optuna's tables at once: the loser sees a duplicate."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    text = str(e).lower()
    return isinstance(e, IntegrityError) or (
        isinstance(e, (OperationalError, ProgrammingError))
        and ("already exists" in text or "duplicate" in text))


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return redact(text[0] if text else type(e).__name__)[:200]


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_existing(storage: BaseStorage, name: str) -> optuna.Study:
    """A study that must exist: an unknown name lists the ones there are."""
    names = study_names(storage)
    if name not in names:
        raise UserError(f"no study named {name!r} in this storage; studies: "
                        f"{', '.join(names) or '(none)'}")
    return optuna.load_study(study_name=name, storage=storage)


def open_study(storage: BaseStorage, name: str, directions: Sequence[str],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner
               ) -> optuna.Study:
    """Creates the study or loads it; an existing study with other directions is refused."""
    if name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        have = [d.name.lower() for d in study.directions]
        if have != list(directions):
            raise UserError(f"study {name!r} optimises {have}; this run asks for "
                            f"{list(directions)} (use another --study)")
        return study
    dirs: list[Any] = list(directions)
    return optuna.create_study(study_name=name, storage=storage, directions=dirs,
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def make_sampler(name: Sampler, *, seed: int | None, n_trials: int, n_objectives: int
                 ) -> optuna.samplers.BaseSampler:
    startup = min(10, max(4, n_trials // 4))  # random trials before the model takes over
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        population = max(4, min(50, n_trials // 3))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)


def make_pruner(name: Pruner, *, epochs: int, min_epochs: int, reduction_factor: int,
                startup_trials: int) -> optuna.pruners.BasePruner:
    """Resource = epochs. (Multi-objective studies prune with search.pruning instead.)"""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs,
                                              reduction_factor=reduction_factor)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs,
                                                      reduction_factor=reduction_factor)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=min_epochs - 1)
    return optuna.pruners.NopPruner()
