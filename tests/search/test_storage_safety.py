"""Storages: passwords never shown or stored, reading commands never create a storage, a
refused run stores nothing, storages this user may not write are one line (exit 2)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
import sqlalchemy

from bwbpf.search.study.storage import check_storage_url, open_storage, redact
from bwbpf.spaces import UserError

from .conftest import FAST, Runner

pytestmark = pytest.mark.integration  # starts the command in processes, under limits

SECRET = "s3cret-pw"  # tests/pgserver.py's password


REDACTED = [
    ("postgresql+psycopg://alice:Pa@ssW0rd@host/db", "postgresql+psycopg://alice:***@host/db"),
    ("postgresql+psycopg://alice:pw@host:5432/db", "postgresql+psycopg://alice:***@host:5432/db"),
    ("postgresql+psycopg://bob@host/db?password=Secret",
     "postgresql+psycopg://bob@host/db?password=***"),
    ("postgresql://bob@host/db?sslmode=require&PASSWORD=Secret&application_name=x",
     "postgresql://bob@host/db?sslmode=require&PASSWORD=***&application_name=x"),
    ("postgresql://bob@host/db?sslpassword=Secret", "postgresql://bob@host/db?sslpassword=***"),
    ("mysql+pymysql://bob@host/db?passwd=Secret", "mysql+pymysql://bob@host/db?passwd=***"),
    ("mssql+pyodbc://bob@dsn?PWD=Secret", "mssql+pyodbc://bob@dsn?PWD=***"),
    ("postgresql://bob@host/db?pass%77ord=Secret", "postgresql://bob@host/db?pass%77ord=***"),
    ("postgresql://bob@host/db?options=-c%20password%3DSecret",
     "postgresql://bob@host/db?options=***"),
    ("postgresql://bob@host/db?password=Se;cret&x=1", "postgresql://bob@host/db?password=***&x=1"),
    ("postgresql://u:Se/cr?et@host/db", "postgresql://u:***@host/db"),
    ("postgresql://bob@corp:Secret@host/db", "postgresql://bob@corp:***@host/db"),
    ("mysql+pymysql://u:p%40Secret@h/db", "mysql+pymysql://u:***@h/db"),
    ("cannot open storage postgresql://a:Secret@h/db: refused",
     "cannot open storage postgresql://a:***@h/db: refused"),
    # Nothing to hide: unchanged.
    ("postgresql://bob@host:5432/db?sslmode=require",
     "postgresql://bob@host:5432/db?sslmode=require"),
    ("sqlite:///study.db", "sqlite:///study.db"),
    ("sqlite:////abs/path/study.db", "sqlite:////abs/path/study.db"),
    ("journal:study.log", "journal:study.log"),
]


@pytest.mark.parametrize(("url", "shown"), REDACTED, ids=[u for u, _ in REDACTED])
def test_redact_hides_every_credential_form(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "Secret" not in redact(url) and "ssW0rd" not in redact(url)


def test_a_raw_at_in_a_password_is_refused_before_connecting() -> None:
    # SQLAlchemy would take 'ssW0rd@host' for the host, and the error would quote it.
    with pytest.raises(UserError, match="password holds a raw '@'; write it as %40") as e:
        check_storage_url("postgresql+psycopg://alice:Pa@ssW0rd@host/db")
    assert "ssW0rd" not in str(e.value)


# --- reading commands never create a storage ---------------------------------------------

READERS = [["studies"], ["export", "--study", "s", "-o", "x.json"],
           ["report", "--study", "s", "-o", "r.html"]]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
@pytest.mark.parametrize("argv", READERS, ids=[a[0] for a in READERS])
def test_reading_commands_never_create_a_storage(cli: Runner, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 kind: str, argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "stdy.db"
    url = f"sqlite:///{typo}" if kind == "sqlite" else f"journal:{typo}"
    rc, out, err = cli(*argv, "--storage", url)
    assert rc == 2
    assert err == f"bwbpf-search: error: --storage {url}: {typo} does not exist (this command " \
                  "creates nothing)\n"
    assert list(tmp_path.iterdir()) == []  # no storage, no lock file, no output


def test_reading_commands_never_add_tables_to_a_database(cli: Runner, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as con:  # an SQLite database, but not Optuna's
        con.execute("CREATE TABLE notes (x TEXT)")
    con.close()
    before = path.read_bytes()
    for argv in READERS:
        rc, _, err = cli(*argv, "--storage", f"sqlite:///{path}")
        assert rc == 2 and "no Optuna storage in this database" in err, err
        assert err.count("\n") == 1
    assert path.read_bytes() == before
    with pytest.raises(UserError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    assert not (tmp_path / "x.db").exists()


def test_reading_commands_never_add_tables_to_postgresql(cli: Runner, postgres: Any) -> None:
    url = fresh_database(postgres, "reading")
    for argv in READERS[:1]:
        rc, _, err = cli(*argv, "--storage", url)
        assert rc == 2 and "no Optuna storage in this database" in err, err
    assert tables(url) == set()


# --- a refused run stores nothing; names ---------------------------------------------------

def test_a_refused_run_stores_no_study(cli: Runner, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["-q", "run", "--storage", db, "--study", "bs", "--n-trials", "1",
              "--no-baselines", *FAST]
    rc, _, refused = cli(*common, "--batch-size", "1")
    assert rc == 2 and refused.count("\n") == 1
    assert not (tmp_path / "study.db").exists() or "bs" not in optuna.get_all_study_names(db)
    rc, _, err = cli(*common, "--batch-size", "32")
    assert rc == 0, err
    assert "--batch-size: 1 must be >= 2 (BatchNorm needs two samples)" in refused
    assert optuna.load_study(study_name="bs", storage=db).user_attrs["settings"][
        "batch_size"] == 32


@pytest.mark.parametrize("name", ["   ", "", "\t "])
@pytest.mark.parametrize("command", ["run", "export", "report", "studies"])
def test_a_name_of_only_spaces_is_refused(cli: Runner, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, command: str,
                                          name: str) -> None:
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name=name or "x", storage=f"sqlite:///{tmp_path / 'keep.db'}")
    before = (tmp_path / "keep.db").read_bytes()
    extra = {"run": [*FAST, "--n-trials", "1"], "export": ["-o", "x.json"],
             "report": ["-o", "r.html"], "studies": []}[command]
    rc, out, err = cli(command, "--storage", f"sqlite:///{tmp_path / 'keep.db'}", "--study",
                       name, *extra)
    assert rc == 2
    if name == "" and command == "run":
        assert "--study: a name of 1..512 printable characters" in err
    elif "\t" in name and command == "run":
        assert "printable" in err
    else:
        assert f"--study {name!r}: a name needs a visible character, not only spaces" in err
    assert err.count("\n") == 1 and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.db"]
    assert (tmp_path / "keep.db").read_bytes() == before


# --- storages this user may not write -------------------------------------------------------

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2  # linux/capability.h
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4  # linux/prctl.h
CAP_V3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3


def _drop_file_overrides() -> None:
    """In the child, before exec: root keeps its uid but loses the two capabilities that let
    it pass permission bits, so a folder of mode 555 refuses it as it refuses anyone. Its own
    files stay readable (it owns them), so the clone and its .venv may sit in a folder no one
    else may enter (a home folder of mode 700). At exec root's capabilities become its
    bounding set plus its inheritable and ambient ones: all three lose them."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise OSError(ctypes.get_errno(), what)

    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "prctl(PR_CAPBSET_DROP)")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")
    header = (ctypes.c_uint32 * 2)(CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
    check(libc.capget(header, data), "capget")
    data[2] &= ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))  # inheritable, word 0
    check(libc.capset(header, data), "capset")


def as_unprivileged(argv: list[str]) -> tuple[int, str, str]:
    """Runs the CLI in a new process that permission bits bind. Tests may run as root, who
    writes anywhere; as root the child drops the capabilities that override permission bits
    (its capability bounding set, so exec gives them back no more), as anyone else it has that
    user's own rights already."""
    drop = _drop_file_overrides if os.geteuid() == 0 else None
    r = subprocess.run([sys.executable, "-m", "bwbpf.search", *argv], capture_output=True,
                       text=True, timeout=300, preexec_fn=drop)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def locked() -> Iterator[Path]:
    """A folder anyone may enter, holding: ro/ (not writable, with an Optuna SQLite file
    not writable either) and hidden/ (mode 000: no one may enter)."""
    root = Path(tempfile.mkdtemp(prefix="bwbpf-locked-"))
    root.chmod(0o755)
    ro, hidden = root / "ro", root / "hidden"
    ro.mkdir()
    hidden.mkdir()
    optuna.create_study(study_name="old", storage=f"sqlite:///{ro / 'study.db'}")
    (ro / "study.db").chmod(0o444)
    ro.chmod(0o555)
    hidden.chmod(0o000)  # root without its overrides may not enter it either
    try:
        yield root
    finally:
        for p in (ro, hidden):
            p.chmod(0o755)
        subprocess.run(["rm", "-rf", str(root)], check=True)


CASES = {  # storage below ``locked`` -> what the one line names
    "read-only SQLite file": ("sqlite:///{root}/ro/study.db", "{root}/ro"),
    "new SQLite file in a read-only folder": ("sqlite:///{root}/ro/new.db", "{root}/ro"),
    "SQLite file in a folder one may not enter": ("sqlite:///{root}/hidden/study.db",
                                                  "{root}/hidden"),
    "journal in a read-only folder": ("journal:{root}/ro/study.log", "{root}/ro"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_storage_one_may_not_write_is_one_line(locked: Path, case: str) -> None:
    url, named = (s.format(root=locked) for s in CASES[case])
    before = {p: p.read_bytes() for p in (locked / "ro").iterdir()}
    rc, out, err = as_unprivileged(["-q", "run", "--storage", url, "--study", "new",
                                    "--n-trials", "1", "--no-baselines", *FAST])
    assert rc == 2, err
    assert err.startswith("bwbpf-search: error: --storage ") and err.count("\n") == 1, err
    assert named in err and ("not writable" in err or "Permission denied" in err), err
    assert {p: p.read_bytes() for p in (locked / "ro").iterdir()} == before


# --- passwords against a live PostgreSQL ------------------------------------------------------

def fresh_database(postgres: Any, name: str) -> str:
    """A new, empty database on the test server; its URL with the password in the query."""
    import psycopg

    admin = postgres.url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://bwbpf@127.0.0.1:{postgres.port}/{name}?password={SECRET}"


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def everything_stored(url: str) -> str:
    """Every row of every table, as text: what any reader (the dashboard too) can see."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            return "\n".join(str(con.execute(sqlalchemy.text(f'SELECT * FROM "{t}"')).all())
                             for t in sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def bwbpf(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bwbpf.search", *argv], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.integration
def test_a_password_in_the_query_is_never_shown_or_stored(postgres: Any, tmp_path: Path,
                                                          free_port: int) -> None:
    url = fresh_database(postgres, "leak")
    study = ["--storage", url, "--study", "leak"]
    shown = [bwbpf("run", *study, "--n-trials", "2", "--no-baselines", "--pruner", "none",
                   *FAST)]
    assert shown[0].returncode == 0, shown[0].stderr
    shown.append(bwbpf("export", *study, "--top", "2", "-o", str(tmp_path / "front")))
    shown.append(bwbpf("report", *study, "-o", str(tmp_path / "r.html"), "--csv",
                       str(tmp_path / "t.csv")))
    shown.append(bwbpf("studies", "--storage", url))
    unreachable = url.replace(f":{postgres.port}/", ":1/")  # an error that quotes the URL
    shown.append(bwbpf("studies", "--storage", unreachable))
    assert [r.returncode for r in shown] == [0, 0, 0, 0, 2]
    assert shown[3].stdout.startswith("leak: 2 complete")
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 4  # two documents, the report, the CSV
    for p in files:
        assert SECRET not in p.read_text(), p
    doc = json.loads(next((tmp_path / "front").iterdir()).read_text())
    assert doc["provenance"]["storage"] == redact(url) and "password=***" in redact(url)
    loaded = optuna.load_study(study_name="leak", storage=url)
    assert SECRET not in json.dumps(loaded.user_attrs)
    assert all(SECRET not in json.dumps(t.user_attrs) for t in loaded.trials)
    assert SECRET not in everything_stored(url)
    for r in shown:
        assert SECRET not in r.stdout + r.stderr
    assert "cannot open storage postgresql+psycopg://bwbpf@127.0.0.1:1/leak?password=***" \
        in shown[4].stderr
    assert SECRET not in dashboard_line(url, free_port)


def dashboard_line(url: str, port: int) -> str:
    """The first line `dashboard` prints (then it is stopped)."""
    proc = subprocess.Popen([sys.executable, "-m", "bwbpf.search", "dashboard", "--storage",
                             url, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        end, line = time.time() + 120, ""
        while not line and time.time() < end:
            line = proc.stdout.readline()
        assert line.startswith("optuna-dashboard for postgresql+psycopg://bwbpf@"), line
        return line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
