"""Typed readers of what a study stores, its user and system attributes.

Anyone may write them: Optuna's API, the dashboard, a database client, another program
sharing the storage. So every value this version reads goes through a reader here, and one it
cannot use is refused in one line that names the study, the key and what was expected
(``BadStoredValue``: a UserError, the CLI's exit 2), before the command writes anything;
nothing stored is changed. The keys and their records are ``study_attrs``'s; the measured
step times are ``search.trial.costs``'s.

Refused: a value that is there but cannot be what its key says (not JSON; an attribute or
entry that is not an object; text where a number belongs; NaN; an accuracy outside [0, 1]): a
command would crash on it, or rank by it. Left out, as before: a record that lacks what makes
it a result (a BP entry without its winner, a confirmation short of seeds): older and
interrupted runs leave those, and a rerun makes them again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, NoReturn

import optuna
from optuna.storages import BaseStorage

from bwbpf.reports import optuna_api
from bwbpf.spaces import UserError

# + a piece's name: its measured step in seconds (search.trial.costs.StudyTimes writes them)
STEP_SECONDS = "bwbpf:step_seconds|"
SHOWN = 60  # characters of a refused value in its line


class BadStoredValue(UserError):
    """A stored value this version cannot read; the message is the whole line."""


def excerpt(value: Any) -> str:
    text = repr(value)  # one line: repr escapes newlines
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


@dataclass(frozen=True)
class Stored:
    """Where a value is stored: its study (None: not known here), its key, and where inside
    the key's value ("vgg8b.sweep[1].val_accuracy")."""

    study: str | None
    key: str
    path: str = ""
    system: bool = False

    def at(self, part: str | int) -> Stored:
        step = f"[{part}]" if isinstance(part, int) else f".{part}" if self.path else part
        return replace(self, path=self.path + step)

    def where(self) -> str:
        who = "" if self.study is None else f"study {self.study!r}: "
        inside = f" ({self.path})" if self.path else ""
        kind = "system attribute" if self.system else "attribute"
        return f"{who}stored {kind} {self.key!r}{inside}"

    def refuse(self, value: Any, expected: str) -> NoReturn:
        raise BadStoredValue(f"{self.where()} is {excerpt(value)}; expected {expected}; "
                             "nothing was changed")


def obj(at: Stored, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        at.refuse(value, f"an object ({what})")
    return value


def items(at: Stored, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        at.refuse(value, f"a list ({what})")
    return value


def text(at: Stored, value: Any) -> str:
    if not isinstance(value, str):
        at.refuse(value, "text")
    return value


def number(at: Stored, value: Any, expected: str = "a number",
           ok: Callable[[float], bool] = lambda x: True) -> float:
    """A finite JSON number (not true/false) that passes ``ok``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        at.refuse(value, expected)
    try:
        f = float(value)  # an integer of 400 digits overflows here
    except OverflowError:
        at.refuse(value, expected)
    if not (math.isfinite(f) and ok(f)):
        at.refuse(value, expected)
    return f


def positive(at: Stored, value: Any) -> float:
    return number(at, value, "a number > 0", lambda x: x > 0)


def accuracy(at: Stored, value: Any) -> float:
    return number(at, value, "an accuracy in [0, 1]", lambda x: 0 <= x <= 1)


def count(at: Stored, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        at.refuse(value, f"a whole number >= {least}")
    return value


def one_of(values: tuple[str, ...]) -> Callable[[Stored, Any], str]:
    """A reader of one of ``values``."""
    def read(at: Stored, value: Any) -> str:
        if value not in values:
            at.refuse(value, " or ".join(repr(v) for v in values))
        return str(value)
    return read


def optional(read: Callable[[Stored, Any], Any]) -> Callable[[Stored, Any], Any]:
    """``read``, passing None (a value an older version stored as unknown)."""
    return lambda at, value: None if value is None else read(at, value)


def names(at: Stored, value: Any) -> list[str]:
    return [text(at.at(i), v) for i, v in enumerate(items(at, value, "names"))]


def accuracies(at: Stored, value: Any) -> list[float]:
    return [accuracy(at.at(i), v) for i, v in enumerate(items(at, value, "accuracies"))]


# ---------------------------------------------------------------- reading the storage
def user_attrs(study: optuna.Study) -> dict[str, Any]:
    """``study.user_attrs``, an attribute that is not JSON refused."""
    try:
        return study.user_attrs
    except ValueError as e:  # json.JSONDecodeError, from the storage's own load
        _refuse_not_json(optuna_api.storage_of(study), study.study_name, e)


def system_attrs(storage: BaseStorage, study_id: int, name: str) -> dict[str, Any]:
    try:
        return storage.get_study_system_attrs(study_id)
    except ValueError as e:
        _refuse_not_json(storage, name, e)


def study_names(storage: BaseStorage) -> list[str]:
    """The names of the storage's studies (Optuna loads every study's attributes with them:
    one that is not JSON is refused, naming its study and key)."""
    try:
        return [s.study_name for s in storage.get_all_studies()]
    except ValueError as e:
        _refuse_not_json(storage, None, e)


def step_times(storage: BaseStorage, study_id: int) -> dict[str, float]:
    """A study's measured step times, piece -> seconds (a finite number >= 0)."""
    name = storage.get_study_name_from_id(study_id)
    return {k[len(STEP_SECONDS):]: number(Stored(name, k, system=True), v,
                                          "a step time in seconds (a number >= 0)",
                                          lambda x: x >= 0)
            for k, v in system_attrs(storage, study_id, name).items()
            if k.startswith(STEP_SECONDS)}


def _refuse_not_json(storage: BaseStorage, study: str | None, e: ValueError) -> NoReturn:
    """Names the attribute that is not JSON where the storage is a database this process can
    read directly (Optuna's error names neither study nor key), else the value alone."""
    found = _not_json(storage, study)
    if found is not None:
        at, value = found
        at.refuse(value, "a JSON value")
    doc = getattr(e, "doc", None)  # the text that failed, without its key
    where = "a stored attribute" if study is None else f"study {study!r}: a stored attribute"
    raise BadStoredValue(f"{where} is {excerpt(doc)}; expected a JSON value; nothing was "
                         "changed") from None


def _not_json(storage: BaseStorage, study: str | None) -> tuple[Stored, str] | None:
    """(where, the stored text) of the first attribute that is not JSON, read from Optuna's
    tables (its schema, not its Python API); None for a storage without them: a journal
    file holds JSON lines only, the storage of a loaded study is wrapped in Optuna's cache."""
    engine = getattr(storage, "engine", None)  # RDBStorage's
    if engine is None:
        return None
    import sqlalchemy

    with engine.connect() as conn:
        for table, system in (("study_user_attributes", False),
                              ("study_system_attributes", True)):
            rows = conn.execute(sqlalchemy.text(
                f"SELECT s.study_name, a.key, a.value_json FROM {table} a JOIN studies s "
                "ON s.study_id = a.study_id ORDER BY a.study_id, a.key"))
            for name, key, raw in rows:
                if study is not None and name != study:
                    continue
                try:
                    json.loads(raw)
                except ValueError:
                    return Stored(str(name), str(key), system=system), str(raw)
    return None
