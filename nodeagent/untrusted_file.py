"""Read a small file from a directory that someone less trusted can write.

The agent's state directory belongs to the service user, and root reads from it (`nodeagent status`
run with sudo, the package scripts' upgrade helper). Whoever owns the directory can put a symlink,
a FIFO or a huge file where state.json should be. So the file is opened without following a
symlink (O_NOFOLLOW), without blocking on a FIFO (O_NONBLOCK: the open returns at once, and the
descriptor is then refused), checked on the descriptor to be a regular file (fstat), and read up
to a bound. packaging/upgrade-restart carries the same few lines (it runs on the bare standard
library).
"""

from __future__ import annotations

import errno
import os
import stat

_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class UnsafeFileError(Exception):
    """The path exists but is not a regular file of bounded size; the message says what it is."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_untrusted_file(path: str, max_bytes: int) -> bytes:
    """The file's bytes. Raises FileNotFoundError, PermissionError and other OSErrors as open()
    does, and UnsafeFileError for a symlink, anything but a regular file, or more than max_bytes."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink as the last component
            raise UnsafeFileError(f"{path} is a symbolic link; not followed") from None
        raise
    try:
        info = os.fstat(fd)  # the file that was opened, not whatever the name points to now
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise UnsafeFileError(f"{path} is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:  # it grew after the fstat
        raise UnsafeFileError(f"{path} is larger than {max_bytes} bytes")
    return b"".join(chunks)
