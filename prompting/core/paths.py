"""Safe file names from user text, checked output folders, and whole-file writes that readers never
see half done.

    >>> slug("../../../escape")
    'escape'
    >>> inside("runs/demo/plots", slug("../x") + "_by_method.png")   # doctest: +SKIP
    PosixPath('runs/demo/plots/x_by_method.png')
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["slug", "inside", "check_output_dir", "check_text_file", "atomic_write", "atomic_path",
           "os_error_message", "naming"]

MAX_SLUG = 100  # file systems allow 255 bytes; room is left for the prefixes and suffixes added around it
# mkstemp makes a file only its owner can read; a finished file gets the usual mode (0666 less the umask)
_UMASK = os.umask(0)
os.umask(_UMASK)


def slug(text, fallback: str = "unnamed") -> str:
    """``text`` as one safe file-name part: every run of characters other than ASCII letters, digits,
    ``_``, ``.`` and ``-`` becomes ``-``, and leading/trailing dots and dashes go, so the result is
    never ``..``, a hidden name or a path. A very long name is cut and ends with a digest of the whole,
    so two long names that share a start stay apart; an empty result is ``fallback``."""
    text = str(text)
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    if len(out) > MAX_SLUG:
        out = out[:MAX_SLUG - 9].rstrip("-.") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return out or fallback


def inside(folder: str | Path, name: str) -> Path:
    """``folder / name``, refused (ValueError) unless it stays inside ``folder`` once resolved: the
    last guard before writing a file whose name came from user text."""
    folder = Path(folder)
    path = folder / name
    root = folder.resolve()
    if path.resolve().parent != root and root not in path.resolve().parents:
        raise ValueError(f"file name {name!r} would leave the folder {str(folder)!r}; names built from "
                         "task, config or study names must be plain file names")
    return path


def os_error_message(err: OSError) -> str:
    """One line for a failed file operation: the path, what went wrong, and what to do."""
    path = err.filename if err.filename is not None else "a file"
    shown = f"{str(path)!r}"
    code = err.errno
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = "read-only file system" if code == errno.EROFS else "permission denied"
        return (f"cannot write or read {shown} ({what}); give a folder you can write to (--output-dir) "
                "or fix its permissions")
    if code == errno.ENOTDIR:
        return f"{shown}: a part of this path is a file, not a folder; give a folder path"
    if code == errno.EISDIR:
        return f"{shown} is a folder; give the path of a file"
    if code == errno.ENOENT:
        return f"{shown} does not exist; check the path"
    if code == errno.ENOSPC:
        return f"no space left on the device holding {shown}; free some space and run the same command again"
    return f"{shown}: {err.strerror or err}; check the path and its permissions"


@contextmanager
def naming(path: str | Path, replacing: str | Path | None = None):
    """Give ``path`` to an OSError raised in the block that names no file (a write to an open file or
    descriptor: a full disk, an I/O error), or names ``replacing`` (the temporary file written for it), so
    that :func:`os_error_message` says which file failed."""
    try:
        yield
    except OSError as err:
        if err.filename is None or (replacing is not None and str(err.filename) == str(replacing)):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def check_output_dir(path: str | Path, option: str = "--output-dir") -> Path:
    """Check, before any work, that ``path`` is (or can become) a folder this process can write to.

    Nothing is created: a folder that does not exist yet is checked through its nearest existing
    parent. Raises ValueError naming ``option``, the path and what to do."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{option} {str(path)!r} is a file, not a folder; give a folder "
                             "(it is created if missing)")
        _check_writable(path, option, path)
        return path
    parent = path
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a link to nothing: no folder can be made there
            where = "" if parent == path else f" (its part {str(parent)!r})"
            raise ValueError(f"{option} {str(path)!r}{where} is a symbolic link to {os.readlink(parent)!r}, which "
                             "does not exist; create the folder it points to, or give another folder")
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    _check_writable(parent, option, path)
    return path


def _check_writable(folder: Path, option: str, shown: Path) -> None:
    # os.access misreads some mounts (root in a container, ACLs): a real file proves it
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as err:
        why = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err)).lower()
        where = "" if folder == shown else f" (its parent {str(folder)!r})"
        raise ValueError(f"{option} {str(shown)!r}{where} is not writable ({why}); give a folder you can "
                         "write to, or fix its permissions") from None
    os.close(fd)
    os.unlink(probe)


def check_text_file(path: str | Path, what: str) -> Path:
    """Check that ``path`` is a readable UTF-8 text file; ValueError naming ``what`` and the path."""
    path = Path(path)
    if not path.exists():
        return path  # the loader's own "does not exist" error says more (e.g. which names it tried)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give the path of a YAML file")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}: "
                         f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    except OSError as err:
        raise ValueError(f"{what}: {os_error_message(err)}") from None
    return path


@contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside ``path`` to write to; on success it replaces ``path`` in one rename,
    so a reader (or a second process writing the same file) sees the old or the new file, never a
    part. The temporary name is unique per writer; it is removed if the write fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with naming(path, replacing=tmp):  # a failed write (a full disk) names the file, not the temporary one
            yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | Path, text: str, encoding: str = "utf-8", sync: bool = False) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path` (``sync``: flushed to disk first)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    return path
