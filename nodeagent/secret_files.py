"""Secrets and the kubeconfig from files instead of config lines: WEBHOOK_URL_FILE,
WEBHOOK_HEADERS_FILE and systemd credentials.

The agent runs as its own user and cannot read root's files, and user-data (where conf.d lines
come from) is readable by any local process through IMDS. So a secret can live in a file of its
own: one the agent's user owns (WEBHOOK_URL_FILE=), or a root-only one that systemd hands over
as a credential (LoadCredential=webhook-url:PATH in a unit drop-in, which systemd copies to
$CREDENTIALS_DIRECTORY/webhook-url, mode 0400, owned by the service user). Credentials are
picked up by name, with nothing to configure:

  webhook-url      -> WEBHOOK_URL      (when WEBHOOK_URL_FILE is not set)
  webhook-headers  -> WEBHOOK_HEADERS  (when WEBHOOK_HEADERS_FILE is not set)
  kubeconfig       -> KUBECONFIG       (when KUBECONFIG is left at its default)

A secret file must be a regular file of at most 64 KiB, owned by root or by the agent's user
(nodeagent, or whoever runs the command), and open to nobody else (no group or other bits).
Errors name the file, never its content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import stat
from collections.abc import Mapping
from typing import Any

from nodeagent.config import KEYS_BY_NAME, ConfigError, Settings

MAX_BYTES = 64 * 1024
SERVICE_USER = "nodeagent"  # User= of nodeagent.service, created by the package
# key -> (the key naming its file, the credential name)
SECRET_FILES: tuple[tuple[str, str, str], ...] = (
    ("WEBHOOK_URL", "WEBHOOK_URL_FILE", "webhook-url"),
    ("WEBHOOK_HEADERS", "WEBHOOK_HEADERS_FILE", "webhook-headers"),
)
KUBECONFIG_CREDENTIAL = "kubeconfig"


def _trusted_owners() -> set[int]:
    """Root, whoever runs this (the agent), and the service user (check-config run by root)."""
    owners = {0, os.geteuid()}
    with contextlib.suppress(KeyError):
        owners.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    return owners


def read_secret_file(path: str, key: str) -> str:
    """The file's text without surrounding blanks (a trailing newline is not part of a URL).
    Checks are made on the opened file (fstat), so a swap between check and read cannot win."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as error:
        hint = " (pass a root-only file as a credential: LoadCredential=)" if error.errno == 13 else ""
        raise ConfigError(key, f"cannot read {path}: {error.strerror}{hint}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(key, f"{path} is not a regular file")
        if info.st_uid not in _trusted_owners():
            raise ConfigError(
                key,
                f"{path} belongs to uid {info.st_uid}: only root or the agent's own "
                f"user ({SERVICE_USER}) may own a secret file",
            )
        if info.st_mode & 0o077:
            raise ConfigError(
                key,
                f"{path} is open to group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); make it owner-only: chmod 0600",
            )
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ConfigError(key, f"{path} is larger than {MAX_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError as error:
        raise ConfigError(key, f"{path} is not UTF-8 (byte {error.start})") from None


def _credential(environ: Mapping[str, str], name: str) -> str:
    directory = environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return ""
    path = os.path.join(directory, name)
    return path if os.path.lexists(path) else ""


def resolve(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Settings with WEBHOOK_URL/WEBHOOK_HEADERS read from their files or credentials, and
    KUBECONFIG pointed at a kubeconfig credential. Raises ConfigError naming the key."""
    changes: dict[str, Any] = {}  # Settings field -> its parsed value
    sources = dict(settings.sources)
    for key, file_key, credential in SECRET_FILES:
        path = getattr(settings, file_key.lower())
        origin = sources.get(file_key, "default")
        if not path:
            path = _credential(environ, credential)
            origin = f"credential {credential}"
        if not path:
            continue
        if getattr(settings, key.lower()):
            raise ConfigError(
                key,
                f"set both directly ({sources.get(key)}) and in a file ({file_key}, from {origin}); keep one",
            )
        text = read_secret_file(path, file_key)
        try:
            changes[key.lower()] = KEYS_BY_NAME[key].parse(text)
        except ValueError as error:
            message = str(error)
            if text:  # the parsers quote what they reject: never a secret
                message = message.replace(repr(text), "<hidden>").replace(text, "<hidden>")
            raise ConfigError(key, f"{message} (from {path})") from None
        sources[key] = f"{origin}: {path}" if origin.startswith("credential") else f"file {path}"
    kubeconfig = _credential(environ, KUBECONFIG_CREDENTIAL)
    if kubeconfig and sources.get("KUBECONFIG", "default") == "default":
        changes["kubeconfig"] = kubeconfig
        sources["KUBECONFIG"] = f"credential {KUBECONFIG_CREDENTIAL}"
    if not changes:
        return settings
    return dataclasses.replace(settings, sources=sources, **changes)
