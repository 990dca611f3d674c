"""File helpers shared by saving, checkpoints and dataset caches."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    An interrupted or failed write leaves whatever ``path`` held before untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def cache_dir() -> Path:
    """Where datasets are cached: ``$VAEBENCH_CACHE`` if set, else ``~/.cache/vaebench``."""
    env = os.environ.get("VAEBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vaebench"
