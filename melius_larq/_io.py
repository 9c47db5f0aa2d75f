"""Atomic file writes shared by the package, the deploy tools and the zoo.

Everything is written under a temporary name next to the destination and moved into place with
``os.replace``, so a reader sees either the old file or the complete new one, and a failed
write leaves neither a partial file nor the temporary one behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from melius_larq._optional import import_optional

__all__ = ["atomic_path", "save_figure", "write_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path`` through; moved onto ``path`` when the block succeeds.

    The temporary path has the same file name (hence the same suffix, which e.g. Keras'
    ``model.save`` needs) inside a fresh hidden directory next to ``path``; that directory is
    removed in every case, so an exception in the block leaves nothing behind and ``path``
    unchanged.

    Example:
        >>> with atomic_path("model.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)

    Raises:
        OSError: naming the path when its directory does not exist, or when the block wrote
            nothing to the temporary path.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OSError(f"Cannot write {str(path)!r}: directory {str(directory)!r} does not exist.")
    scratch = tempfile.mkdtemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        tmp = Path(scratch) / path.name
        yield tmp
        if not tmp.exists():
            raise OSError(f"Nothing was written to {str(path)!r}.")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Writes ``data`` to ``path`` atomically (through :func:`atomic_path`), synced to disk.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: naming the path when its directory does not exist.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_text_atomic(text: str, path: str | os.PathLike, *, encoding: str = "utf-8") -> Path:
    """Writes ``text`` to ``path`` atomically, encoded with ``encoding`` (UTF-8)."""
    return write_atomic(text.encode(encoding), path)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Saves a matplotlib figure to ``path`` atomically and closes it, also when saving fails.

    The format follows the suffix of ``path`` (PNG for ``.png``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: naming the path when its directory does not exist.
    """
    plt = import_optional("matplotlib.pyplot", "Saving a figure")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return path
