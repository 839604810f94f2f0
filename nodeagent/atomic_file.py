"""Replace a file atomically in a directory someone else may control.

The temporary file is created with O_EXCL|O_NOFOLLOW under a random name and given its mode
through its descriptor (fchmod), never by name: whoever owns the directory could swap a symlink
in at that name between creation and a chmod, and a chmod by name would follow it. Then write,
fsync, rename, fsync the directory: readers see the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def replace_file(
    path: str, data: bytes, mode: int, prefix: str = ".nodeagent.", suffix: str = ".tmp"
) -> None:
    directory = os.path.dirname(path) or "."
    for _ in range(100):
        tmp_name = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(tmp_name, _FLAGS, 0o600)
            break
        except FileExistsError:  # a name already taken (or planted): pick another
            continue
    else:
        raise FileExistsError(f"no free temporary name in {directory}")
    try:
        try:
            os.fchmod(fd, mode)  # the descriptor, not the name; and not narrowed by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_directory(Path(directory))


def fsync_directory(directory: Path) -> None:
    """Make the rename durable; a directory that cannot be opened or synced is left as it is."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
