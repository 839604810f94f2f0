"""Instance-role credentials from IMDS, refreshed before they expire.

    GET meta-data/iam/security-credentials/          -> the role name
    GET meta-data/iam/security-credentials/<role>    -> {"Code": "Success", "AccessKeyId": ...,
                                                         "SecretAccessKey": ..., "Token": ...,
                                                         "Expiration": "2026-12-04T20:00:00Z"}

Fetched through the agent's IMDSv2 client (nodeagent/imds.py). `InstanceRoleCredentials` has the
shape requests-aws4auth asks of `refreshable_credentials`: get_frozen_credentials() returns an
object with access_key, secret_key and token, read afresh for every request it signs. IMDS serves
new credentials well before the old ones expire; they are fetched again once fewer than
REFRESH_MARGIN_S remain, or at once after AWS said the key or token was no longer good.
Secrets never appear in reprs, logs or exception messages.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from nodeagent.clock import utcnow
from nodeagent.imds import ImdsClient, ImdsError
from nodeagent.timefmt import parse_rfc3339_utc

CREDENTIALS_PATH = "iam/security-credentials/"
REFRESH_MARGIN_S = 300.0  # the SDKs refresh IMDS credentials 5 to 15 minutes before expiry


class CredentialsError(Exception):
    """No usable instance-role credentials; str() is meant for the operator."""


@dataclass(frozen=True)
class FrozenCredentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str = field(repr=False)
    expiration: datetime


def parse_credentials(body: str, role: str) -> FrozenCredentials:
    try:
        doc = json.loads(body)
    except ValueError:
        raise CredentialsError(f"IMDS credentials for role {role!r} are not JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"IMDS credentials for role {role!r} are not a JSON object")
    if doc.get("Code", "Success") != "Success":
        raise CredentialsError(f"IMDS credentials for role {role!r}: Code {str(doc.get('Code'))[:64]!r}")
    missing = [
        key
        for key in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
        if not isinstance(doc.get(key), str) or not doc.get(key)
    ]
    if missing:
        raise CredentialsError(f"IMDS credentials for role {role!r} lack {', '.join(missing)}")
    try:
        expiration = parse_rfc3339_utc(doc["Expiration"])
    except ValueError:
        raise CredentialsError(f"IMDS credentials for role {role!r}: Expiration is not a time") from None
    return FrozenCredentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc["Token"], expiration)


class InstanceRoleCredentials:
    def __init__(
        self,
        imds: ImdsClient,
        *,
        now: Callable[[], datetime] = utcnow,
        refresh_margin_s: float = REFRESH_MARGIN_S,
    ):
        self.imds = imds
        self.now = now
        self.refresh_margin_s = refresh_margin_s
        self.role: str | None = None
        self.fetches = 0
        self._current: FrozenCredentials | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InstanceRoleCredentials(role={self.role!r})"

    def get_frozen_credentials(self) -> FrozenCredentials:
        with self._lock:
            current = self._current
            if current is None or current.expiration - self.now() <= timedelta(seconds=self.refresh_margin_s):
                current = self._current = self._fetch()
            return current

    def invalidate(self) -> None:
        """AWS refused the key or token: fetch again before the next call (the role may have changed)."""
        with self._lock:
            self._current = None
            self.role = None

    def _fetch(self) -> FrozenCredentials:
        try:
            if self.role is None:
                listing = self.imds.get(CREDENTIALS_PATH)
                roles = [line.strip() for line in (listing or "").splitlines() if line.strip()]
                if not roles:
                    raise CredentialsError(
                        "no instance profile role in IMDS (iam/security-credentials/ is "
                        "empty): attach an instance profile to the node"
                    )
                self.role = roles[0]
            body = self.imds.get(CREDENTIALS_PATH + self.role)
        except ImdsError as error:
            raise CredentialsError(f"cannot read instance-role credentials from IMDS: {error}") from None
        if body is None:
            role, self.role = self.role, None
            raise CredentialsError(f"IMDS has no credentials for role {role!r}")
        self.fetches += 1
        return parse_credentials(body, self.role)
