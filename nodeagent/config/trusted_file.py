"""The one reader for files whose content the agent trusts: config files and secret files.

A config file decides which kubeconfig (and so which exec plugin) runs with the node's identity,
where the state goes and where the webhook posts; a secret file holds the webhook's URL or
headers. So such a file is read only when it is:

  - a regular file (a FIFO or a device must not hang the read; O_NONBLOCK for the open itself),
  - owned by one of the owners its rules name (root, the user running the command, ...),
  - not writable by group or others (config), or not open to them at all (secrets),
  - at most its rules' size, and UTF-8 (a leading BOM is dropped).

Every check is made on the opened file (fstat), so a swap between check and read cannot win.
Errors name the file and the rule it breaks, never its content. `trust_problem` is the pure rule.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from nodeagent.config.errors import ConfigError


@dataclass(frozen=True)
class TrustRules:
    """What a file must be for its content to be trusted, and how errors about it read."""

    what: str  # "config", "secret": "refusing config file ..."
    owners: frozenset[int]  # uids that may own it
    owner_names: str  # those owners in words: "root"
    owner_only: bool  # no group or other bits at all, not just no write bits
    max_bytes: int
    fix: str  # how to make a refused file acceptable
    content: str  # what a directory at the path was expected to be: "a KEY=value file"
    permission_hint: str  # appended to "permission denied"
    missing_ok: bool  # a missing file is no file (None), not an error


def trust_problem(st: os.stat_result, rules: TrustRules) -> str | None:
    """Why a file or directory with this stat cannot be trusted under these rules, or None. Pure."""
    if st.st_uid not in rules.owners:
        return f"owned by uid {st.st_uid}, not {rules.owner_names}"
    if rules.owner_only and st.st_mode & 0o077:
        return f"open to group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_mode & 0o002:
        return "writable by everyone"
    if st.st_mode & 0o020:
        return f"writable by group {st.st_gid}"
    return None


def _size(count: int) -> str:
    if count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count % 1024 == 0:
        return f"{count // 1024} KiB"
    return f"{count} bytes"


def _why(error: OSError, rules: TrustRules) -> str:
    if isinstance(error, PermissionError):
        return "permission denied" + rules.permission_hint
    return str(error.strerror or error)


def _refuse_untrusted(path: str, st: os.stat_result, rules: TrustRules, key: str) -> None:
    problem = trust_problem(st, rules)
    if problem:
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        raise ConfigError(key, f"refusing {rules.what} {kind} {path}: {problem} ({rules.fix})")


def check_trusted_directory(path: str, rules: TrustRules, key: str) -> bool:
    """True when the directory exists and may be trusted; False when there is no directory there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ConfigError(key, f"cannot read directory {path}: {_why(error, rules)}") from None
    if not stat.S_ISDIR(st.st_mode):
        return False
    _refuse_untrusted(path, st, rules, key)
    return True


def list_trusted_directory(path: str, rules: TrustRules, key: str) -> list[str] | None:
    """The directory's entry names, sorted; None when there is no directory there."""
    if not check_trusted_directory(path, rules, key):
        return None
    try:
        return sorted(os.listdir(path))
    except OSError as error:
        raise ConfigError(key, f"cannot read directory {path}: {_why(error, rules)}") from None


def _read_bounded(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_trusted_file(path: str, rules: TrustRules, key: str) -> str | None:
    """The file's text, or None for a missing file when the rules allow it.
    Raises ConfigError(key, ...) naming the file and what is wrong with it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError as error:
        if rules.missing_ok:
            return None
        raise ConfigError(key, f"cannot read {path}: {_why(error, rules)}") from None
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {_why(error, rules)}") from None
    try:
        st = os.fstat(fd)  # the file that was opened, not whatever the name points to now
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(key, f"{path} is a directory, expected {rules.content}")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(key, f"{path} is not a regular file")
        _refuse_untrusted(path, st, rules, key)
        data = _read_bounded(fd, rules.max_bytes + 1)
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {_why(error, rules)}") from None
    finally:
        os.close(fd)
    if len(data) > rules.max_bytes:
        raise ConfigError(key, f"{path} is larger than {_size(rules.max_bytes)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(key, f"{path} is not UTF-8 (byte {error.start})") from None
    return text.lstrip("\ufeff")
