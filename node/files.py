"""Files that hold customer data: readable by the shop's own user only, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700; tighten it if this program created it."""
    path = Path(path)
    if not path.exists():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; chmod is not.
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure `path` exists as a 0600 file (SQLite then gives -wal and -shm the same mode)."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, newline: str | None = "", errors: str = "strict") -> IO[str]:
    """Open `path` for writing UTF-8 text as a 0600 file, truncating what was there."""
    private_file(path)
    return open(path, "w", newline=newline, encoding="utf-8", errors=errors)


def tighten(path: Path) -> None:
    """0600 for a file SQLite or another library created (a -wal or -shm, a backup)."""
    if Path(path).exists():
        os.chmod(path, FILE_MODE)


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a file renamed into it is still there after a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
