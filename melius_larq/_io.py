"""Small file utilities shared by the package, the deploy tools and the zoo."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Writes ``data`` to ``path`` through a temporary file and ``os.replace``.

    A reader sees either the old file or the complete new one, never a partial write.

    Raises:
        OSError: naming the path when its directory does not exist.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OSError(f"Cannot write {str(path)!r}: directory {str(directory)!r} does not exist.")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
