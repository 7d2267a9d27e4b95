"""Storages and studies: what Optuna is asked to open (samplers and pruners:
search.study.samplers)."""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.exc import SQLAlchemyError

from bwbpf.reports.attr_readers import study_names  # a value that is not JSON is refused
from bwbpf.reports.study_attrs import check_study
from bwbpf.spaces import UserError

log = logging.getLogger("bwbpf.search")

DIALECTS = ("sqlite", "postgresql", "mysql")
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_TIMEOUT_S = 60  # a second process waits this long for the write lock, not "locked"
HEARTBEAT_RETRIES = 2  # a killed worker's trial is re-queued at most this often
SCHEMA_RACE_RETRIES = 5
OPTUNA_TABLES = {"studies", "version_info"}  # what makes a database an Optuna storage
MAX_STUDY_NAME = 512  # Optuna's study_name column


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


# Userinfo as SQLAlchemy reads it (user up to the first ':'), with the password running to the
# LAST '@' on the line: a raw '@' in a password must not leave its tail in view.
_USERINFO = re.compile(r"(\b[A-Za-z][\w+.-]*://[^:/\n]*:)[^\n]*@")
# One query item; SQLAlchemy splits the query on '&' only, so a value runs to the next '&'.
_QUERY_ITEM = re.compile(r"([?&;])([^=&;\n]*)=([^&\n]*)")
# Query keys that carry credentials, by substring: password and sslpassword (libpq, psycopg,
# asyncpg), passwd (PyMySQL, mysqlclient), pwd (ODBC), and the secrets/tokens of other drivers.
_SECRET = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_SECRET_SETTING = re.compile(r"(pass|pwd|secret|token)\w*\s*=", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL (or a line quoting one) with every credential replaced by ***: the userinfo
    password and credential query parameters (keys compared after %-decoding, as SQLAlchemy
    does; a value that itself holds ``password=...``, e.g. libpq options, too). Safe for logs,
    errors, JSON and reports."""
    from urllib.parse import unquote_plus

    def item(m: re.Match[str]) -> str:
        key, value = unquote_plus(m.group(2)), unquote_plus(m.group(3))
        if _SECRET.search(key) or _SECRET_SETTING.search(value):
            return f"{m.group(1)}{m.group(2)}=***"
        return m.group(0)

    return _QUERY_ITEM.sub(item, _USERINFO.sub(r"\1***@", url))


def check_storage_url(url: str, *, create: bool = True) -> None:
    """Refuses bad storage URLs before anything is opened or created. ``create``: the command
    may create the storage (and writes to it), so a file storage must be writable; otherwise
    a missing file is an error (a reading command never creates one)."""
    if url.startswith("journal:"):
        _check_file(Path(url[len("journal:"):]), url, magic=None, create=create)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"--storage {redact(url)!r} is not a storage URL; use sqlite:///FILE, "
                        "postgresql+psycopg://USER:PW@HOST/DB, mysql+pymysql://... or "
                        "journal:FILE") from None
    if parsed.host and "@" in parsed.host:  # SQLAlchemy ends the password at the first '@'
        raise UserError(f"--storage {redact(url)}: the password holds a raw '@'; write it "
                        "as %40")
    if parsed.get_backend_name() not in DIALECTS:
        raise UserError(f"--storage {redact(url)}: unknown dialect "
                        f"{parsed.get_backend_name()!r}; valid: {', '.join(DIALECTS)}, journal")
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UserError(f"--storage {redact(url)}: give a file, e.g. sqlite:///study.db")
        _check_file(Path(parsed.database), url, magic=SQLITE_MAGIC, create=create)


def _check_file(path: Path, url: str, magic: bytes | None, *, create: bool) -> None:
    where = f"--storage {redact(url)}"
    try:  # stat and open fail with PermissionError in a folder this user may not enter
        if path.is_dir():
            raise UserError(f"{where}: {path} is a directory")
        if not path.parent.is_dir():
            raise UserError(f"{where}: folder {path.parent} does not exist")
        exists = path.exists()
        if magic and exists and path.stat().st_size > 0:
            with path.open("rb") as f:
                head = f.read(len(magic))
            if head != magic:
                raise UserError(f"{where}: {path} is not an SQLite database; "
                                "refusing to touch it")
    except OSError as e:
        raise UserError(f"{where}: cannot access {path}: {e.strerror or e}") from None
    if not create:
        if not exists:
            raise UserError(f"{where}: {path} does not exist (this command creates nothing)")
        return
    # SQLite writes a journal beside the file, and the journal storage a lock file.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(f"{where}: folder {path.parent} is not writable")
    if exists and not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"{where}: {path} is not writable")


def open_storage(url: str, *, heartbeat_s: int | None = 60, create: bool = True
                 ) -> BaseStorage:
    """An Optuna storage; RDB storages get heartbeats and retry of heartbeat-stale trials.
    With ``create=False`` (reading commands) nothing is created: not a file, not a table."""
    check_storage_url(url, create=create)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        except OSError as e:
            raise UserError(f"cannot open storage {redact(url)}: {e.strerror or e}") from None
        # replaying the log: a line that is not JSON (ValueError) or not an entry (KeyError,
        # TypeError, AttributeError on a value of the wrong kind)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise UserError(f"storage {redact(url)} is corrupt: an entry cannot be read "
                            f"({type(e).__name__}); nothing was changed. Restore it from a "
                            "copy, or move it aside") from None
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return _rdb(url, heartbeat_s, create=create)
        except UserError:
            raise
        # sqlalchemy.exc.* (a refused connection, a bad URL), a missing driver (ImportError),
        # a URL sqlalchemy cannot parse (ValueError), a schema of another Optuna version
        # (RuntimeError) or Optuna's storage errors
        except (SQLAlchemyError, ImportError, ValueError, RuntimeError,
                optuna.exceptions.OptunaError) as e:
            if attempt < SCHEMA_RACE_RETRIES and _schema_race(e):
                time.sleep(0.2 * (attempt + 1))  # the other process is creating the tables
                continue
            raise UserError(f"cannot open storage {redact(url)}: {_first_line(e)}") from None
    raise AssertionError("unreachable")


def _rdb(url: str, heartbeat_s: int | None, *, create: bool) -> RDBStorage:
    sqlite = url.startswith("sqlite")
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    if not create:
        _require_tables(url, engine)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not heartbeat_s:
            return RDBStorage(url, engine_kwargs=engine, skip_table_creation=not create)
        # A trial whose worker missed three heartbeats is failed and re-queued.
        return RDBStorage(url, engine_kwargs=engine, skip_table_creation=not create,
                          heartbeat_interval=heartbeat_s,
                          grace_period=max(2, 3 * heartbeat_s),
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                              max_retry=HEARTBEAT_RETRIES))


def _require_tables(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Refuses a database without Optuna's tables: RDBStorage would create them on connect."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not OPTUNA_TABLES <= tables:
        raise UserError(f"--storage {redact(url)}: no Optuna storage in this database (no "
                        "studies table); this command creates nothing")


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


def check_study_name(name: str, *, new: bool = False) -> None:
    """Optuna takes any string; a name must still be visible, and a new study's name must fit
    Optuna's column and be printable (an existing one is looked up as given)."""
    if new and (not name or len(name) > MAX_STUDY_NAME or not name.isprintable()):
        raise UserError(f"--study: a name of 1..{MAX_STUDY_NAME} printable characters "
                        f"(got {len(name)} characters)")
    if not name.strip():
        raise UserError(f"--study {name!r}: a name needs a visible character, not only spaces")


def load_existing(storage: BaseStorage, name: str) -> optuna.Study:
    """A study that must exist: an unknown name lists the ones there are."""
    check_study_name(name)
    names = study_names(storage)
    if name not in names:
        raise UserError(f"no study named {name!r} in this storage; studies: "
                        f"{', '.join(names) or '(none)'}")
    return checked(optuna.load_study(study_name=name, storage=storage))


def checked_studies(storage: BaseStorage) -> list[optuna.Study]:
    """Every study of the storage, each ``checked``."""
    return [checked(optuna.load_study(study_name=name, storage=storage))
            for name in study_names(storage)]


def checked(study: optuna.Study) -> optuna.Study:
    """``study``, once every value this version reads of it was read: one it cannot read is
    refused before a command uses or changes the study."""
    check_study(study)
    return study


def open_study(storage: BaseStorage, name: str, directions: Sequence[str],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner
               ) -> optuna.Study:
    """Creates the study or loads it; an existing study with other directions is refused."""
    if name in study_names(storage):
        study = checked(optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                          pruner=pruner))
        have = [d.name.lower() for d in study.directions]
        if have != list(directions):
            raise UserError(f"study {name!r} optimises {have}; this run asks for "
                            f"{list(directions)} (use another --study)")
        return study
    dirs: list[Any] = list(directions)
    return optuna.create_study(study_name=name, storage=storage, directions=dirs,
                               sampler=sampler, pruner=pruner, load_if_exists=True)
