"""Atomic file writes for every output of the project (reports, exports, runs, checkpoints).

A temporary file in the target's folder, then a rename: a reader sees the old file or the new
one, never a part. Written files get the mode of a plain file (0666 less the umask).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from bwbpf.spaces.errors import UserError


def shown(path: Path | str) -> str:
    """A path as a message shows it: as given, or quoted where it holds a newline or another
    unprintable character, so the message stays one line."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def refuse_stdout(path: Path, flag: str) -> None:
    """Every output is a file (or folder): ``-`` is refused, not written as a file named '-'
    (a path naming such a file, e.g. ``./-``, reads the same once parsed, so it is refused
    too)."""
    if str(path) == "-":
        raise UserError(f"{flag} -: outputs are written to files, not to standard output; "
                        "give a path")


def check_output(path: Path, flag: str, *, force: bool) -> None:
    """The one overwrite rule for every output file: an existing regular file is replaced only
    with --force; a folder, a link, a device or a FIFO never is; ``-`` is refused. Raises a
    UserError naming the flag and path."""
    refuse_stdout(path, flag)
    if path.is_dir():
        raise UserError(f"{flag} {shown(path)} is a folder; give a file")
    refuse_special(path, flag)
    if os.path.lexists(path) and not force:
        raise UserError(f"{flag} {shown(path)} exists; pass --force to overwrite it")


def refuse_special(path: Path, flag: str = "") -> None:
    """A rename would replace whatever ``path`` names: a symbolic link, a device (/dev/null)
    or a FIFO is refused, with or without --force; only a regular file is ever replaced."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"cannot write {shown(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        where = f"{flag} " if flag else ""
        raise UserError(f"{where}{shown(path)} is {kind}; refusing to replace it "
                        "(give the path of a regular file)")


_KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFDIR: "a folder"}


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Calls ``write(tmp)`` on a temporary path beside ``path``, then renames it over ``path``.
    A path that cannot be written is a UserError naming it; nothing is left behind."""
    refuse_special(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain file is 0666 - umask
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Indented JSON (``dumps``), creating the folder when needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {path.parent}: {e.strerror or e}") from None
    write_text_atomic(path, dumps(payload))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps(doc: Any) -> str:
    """Indented JSON with short lists of numbers kept on one line (diff- and eye-friendly)."""
    inline: dict[str, str] = {}

    def fold(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fold(x) for k, x in v.items()}
        if isinstance(v, list):
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                key = f"@@{len(inline)}@@"
                inline[key] = json.dumps(v)
                return key
            return [fold(x) for x in v]
        return v

    text = json.dumps(fold(doc), indent=2)
    for key, value in inline.items():
        text = text.replace(f'"{key}"', value)
    return text + "\n"
