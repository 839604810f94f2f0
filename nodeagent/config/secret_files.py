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
(nodeagent, or whoever runs the command), and open to nobody else (no group or other bits): the
rules of nodeagent.config.trusted_file. Errors name the file, never its content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
from collections.abc import Mapping
from typing import Any

from nodeagent.config.errors import ConfigError
from nodeagent.config.keys import KEYS_BY_NAME
from nodeagent.config.layers import hide_secret
from nodeagent.config.settings import Settings
from nodeagent.config.trusted_file import TrustRules, read_trusted_file

MAX_SECRET_BYTES = 64 * 1024
SERVICE_USER = "nodeagent"  # User= of nodeagent.service, created by the package
# key -> (the key naming its file, the credential name)
SECRET_FILES: tuple[tuple[str, str, str], ...] = (
    ("WEBHOOK_URL", "WEBHOOK_URL_FILE", "webhook-url"),
    ("WEBHOOK_HEADERS", "WEBHOOK_HEADERS_FILE", "webhook-headers"),
)
KUBECONFIG_CREDENTIAL = "kubeconfig"


def secret_file_rules(euid: int, service_uid: int | None) -> TrustRules:
    """Root, whoever runs this (the agent), and the service user (check-config run by root)."""
    owners = {0, euid} | ({service_uid} if service_uid is not None else set())
    return TrustRules(
        what="secret",
        owners=frozenset(owners),
        owner_names=f"root or the agent's own user ({SERVICE_USER})",
        owner_only=True,
        max_bytes=MAX_SECRET_BYTES,
        fix=f"make it owned by root or {SERVICE_USER}, and owner-only: chmod 0600",
        content="a file holding the secret",
        permission_hint=" (pass a root-only file as a credential: LoadCredential=)",
        missing_ok=False,
    )


def _service_uid() -> int | None:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER).pw_uid
    return None


def read_secret_file(path: str, key: str) -> str:
    """The file's text without surrounding blanks (a trailing newline is not part of a URL)."""
    text = read_trusted_file(path, secret_file_rules(os.geteuid(), _service_uid()), key)
    return (text or "").strip()


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
        spec, file_spec = KEYS_BY_NAME[key], KEYS_BY_NAME[file_key]
        path = str(settings.value(file_spec))
        origin = sources.get(file_key, "default")
        if not path:
            path = _credential(environ, credential)
            origin = f"credential {credential}"
        if not path:
            continue
        if settings.value(spec):
            raise ConfigError(
                key,
                f"set both directly ({sources.get(key)}) and in a file ({file_key}, from {origin}); keep one",
            )
        text = read_secret_file(path, file_key)
        try:
            changes[spec.field] = spec.parse(text)
        except ValueError as error:  # the parsers quote what they reject: never a secret
            raise ConfigError(key, f"{hide_secret(str(error), text)} (from {path})") from None
        sources[key] = f"{origin}: {path}" if origin.startswith("credential") else f"file {path}"
    kubeconfig = _credential(environ, KUBECONFIG_CREDENTIAL)
    if kubeconfig and sources.get("KUBECONFIG", "default") == "default":
        changes["kubeconfig"] = kubeconfig
        sources["KUBECONFIG"] = f"credential {KUBECONFIG_CREDENTIAL}"
    if not changes:
        return settings
    return dataclasses.replace(settings, sources=sources, **changes)
