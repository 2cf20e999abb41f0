"""Files only this user may read, written so that a crash leaves the old content or the new, never a mix.

:func:`write_private` writes a temporary file beside the target (created with ``O_EXCL``, its mode set to 0600 with
``fchmod`` so the umask cannot widen or narrow it), fsyncs it, renames it over the target and fsyncs the directory,
so the rename itself survives a crash. :func:`make_private` creates an empty file, or narrows an existing one, to
0600. Both raise ``OSError`` as the system reports it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a crash's leftover, whatever its mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def make_private(path: Path) -> None:
    """Create ``path`` empty if it does not exist; either way leave it with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)
    finally:
        os.close(fd)
