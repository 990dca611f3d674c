"""File helpers shared by saving, checkpoints, results and dataset caches.

Every write that replaces something is atomic as a whole: a file is written beside its
target and renamed onto it; a folder (a saved model, a checkpoint) is written as a new
folder beside its target and swapped with it in one step. After a kill at any moment, the
old or the new complete version is in place; leftovers of a killed write are removed by
the next write of the same target. Files and folders get the permissions the user's umask
gives (as ``open`` and ``mkdir`` would), not the private ones of :mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_FILE_TEMP = ".tmp"
_FOLDER_TEMP = ".partial"
_FOLDER_OLD = ".old"


def _umask_at_import() -> int:
    """The umask, set and restored once while this module is imported."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def current_umask() -> int:
    """The process's umask, read without changing it: from ``/proc/self/status`` on Linux,
    else the umask this module was imported under."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return _UMASK_AT_IMPORT


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``
    (with the permissions the umask gives a new file).

    An interrupted or failed write leaves whatever ``path`` held before untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path.parent, f".{glob.escape(path.name)}.*{_FILE_TEMP}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_FILE_TEMP)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def read_json_object(path: str | Path, what: str,
                     fields: dict[str, tuple[type | tuple[type, ...], str]]) -> dict[str, Any]:
    """The JSON object in ``path`` (a ``what``), checked to have each of ``fields`` with its
    type: ``{name: (type, what the value must be)}``. Errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}: not a {what}")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt (not valid JSON): {err}") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not a {what}: it holds a JSON {type(payload).__name__}, "
                         "not an object")
    for name, (kind, meaning) in fields.items():
        if name not in payload:
            raise ValueError(f"{path} is not a {what}: it has no field {name!r}")
        if not isinstance(payload[name], kind):
            shown = json.dumps(payload[name])[:60]
            raise ValueError(f"{path}: field {name!r} must be {meaning}, got {shown}")
    return payload


@contextlib.contextmanager
def replacing_folder(path: str | Path, owns: Callable[[str], bool]) -> Iterator[Path]:
    """Yield a new empty folder (with the permissions the umask gives a new folder); when the
    block succeeds it replaces ``path`` as a whole.

    ``owns(name)`` says which entries of an existing ``path`` a save writes: a folder that
    holds anything else (say, a user's files) is refused rather than replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    _remove_leftovers(path.parent, f".{glob.escape(path.name)}.*{_FOLDER_TEMP}")
    if path.exists():
        _check_replaceable(path, owns)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=_FOLDER_TEMP))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        _sync_folder(tmp)
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_folder(path: str | Path) -> None:
    """Finish a folder replacement that was killed half-way (portable fallback only): put
    the old complete version back if the new one never arrived, else drop it."""
    path = Path(path)
    old = path.parent / f".{path.name}{_FOLDER_OLD}"
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, path)


def _check_replaceable(path: Path, owns: Callable[[str], bool]) -> None:
    if not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder: refusing to replace it")
    foreign = sorted(entry.name for entry in path.iterdir() if not owns(entry.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ValueError(f"{path} holds files that a save does not write ({shown}); "
                         "saving there would replace them: choose an empty or new folder")


def _remove_leftovers(folder: Path, pattern: str) -> None:
    for stale in folder.glob(pattern):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Flush the folder's files and its entries to disk before it is swapped in."""
    for entry in folder.iterdir():
        if entry.is_file():
            _fsync(entry)
    _fsync(folder)


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):  # some systems cannot open folders for syncing
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap_in(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``; ``new`` then holds the old version, if any."""
    if not path.exists():
        os.rename(new, path)
    elif not _exchange(new, path):
        # No atomic exchange on this system: move the old version aside, then the new one
        # in; recover_folder() completes the step if a kill falls between the two renames.
        old = path.parent / f".{path.name}{_FOLDER_OLD}"
        os.rename(path, old)
        os.rename(new, path)
        os.rename(old, new)
    _fsync(path.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False when
    the system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def cache_dir() -> Path:
    """Where datasets are cached: ``$VAEBENCH_CACHE`` if set, else ``~/.cache/vaebench``."""
    env = os.environ.get("VAEBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vaebench"
