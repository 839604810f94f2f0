"""IMDS client: the IMDSv2 token protocol, bounded retries, clear errors. It fetches; it never decides.

    client = ImdsClient(ImdsOptions())
    body = client.get("spot/instance-action")     # str, or None on 404 ("nothing pending")

Behaviour:
- The HTTP is imds_transport.py's: one kept-alive http.client connection (never through a proxy),
  short timeouts (0.5 s connect / 1 s read, for the token PUT as well as GETs: a PUT that is never
  answered, a container behind hop limit 1, fails within about a second instead of wedging).
- IMDSv2: PUT /latest/api/token (TTL header), then the token on every GET. The token is
  refreshed when <= 15 s of it remain; the remaining TTL is re-read from the
  X-aws-ec2-metadata-token-ttl-seconds header of each GET response. A 401 on a GET refreshes the
  token once and retries once.
- Each get/get_bytes call (token PUT, GETs, the 401 retry, retries and their waits) has one
  wall-clock deadline (`deadline_s`, 4 s) that every socket read and write honours; past it ->
  ImdsUnreachable, not retried.
- 5xx, 429, connection errors and timeouts are retried with short exponential backoff
  (`retry_attempts` attempts, waits capped at `retry_max_wait_s`), then ImdsUnavailable.
  A token PUT that times out on reading is not retried: that is the hop-limit signature, and
  waiting longer never helps.
- 404 -> None. Bodies are read with a cap (`max_body_bytes`; over it -> ImdsBodyTooLarge).
- Decoding: `get` decodes UTF-8 and raises ImdsBodyNotText (an ImdsError) on invalid bytes;
  `get_bytes` returns the raw bytes for callers that prefer to let notices.py reject them.
- IMDSv1 (GETs without a token) only when allow_v1 is on and the token PUT is refused with
  403/404/405 or goes unanswered. With allow_v1 off such an endpoint raises ImdsV1Only. In v1
  mode a 401 means the endpoint now requires v2: the client fetches a token and retries once.
- The token never appears in logs, exception messages or reprs.

Errors: everything raised by get/get_bytes/identity is an ImdsError subclass.

Thread safety: one lock serialises requests (one HTTP connection carries one request at a time);
the agent polls from a single loop anyway. `stats` never waits for that lock.

Why one module of this size: the token protocol, its v1 fallback and the retries decide together
what one answer means (a 401 refreshes the token, a PUT that times out is the hop limit), so they
stay in one class; the HTTP under them is imds_transport.py.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from nodeagent.cycles import CycleCollector
from nodeagent.imds_transport import (
    BodyTooLarge,
    DeadlineExceeded,
    ReadTimeout,
    Reply,
    Transport,
    TransportError,
)
from nodeagent.instance_identity import InstanceIdentity, read_identity
from nodeagent.retry import Failure, retry

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL_S = 21600
# Same margin as NTH: refresh when this many seconds or fewer remain.
TOKEN_REFRESH_MARGIN_S = 15
# PUT answers that mean "this endpoint does not do IMDSv2".
V1_ONLY_STATUSES = frozenset({403, 404, 405})
_READ_CHUNK = 8192


class ImdsError(Exception):
    """Base class; str() is a message meant for the operator."""


class ImdsUnavailable(ImdsError):
    """IMDS did not answer usefully (refused, timed out, 5xx, 429) after the retries."""


class ImdsUnreachable(ImdsUnavailable):
    """No answer at all (no connection, a timeout): the next request will not fare better. A 5xx
    or 429 is an answer about one path, and says nothing about the others."""


class ImdsV1Only(ImdsError):
    """The endpoint refused the IMDSv2 token request and IMDSv1 fallback is disabled."""


class ImdsBodyTooLarge(ImdsError):
    """A response body exceeded ImdsOptions.max_body_bytes."""


class ImdsBodyNotText(ImdsError):
    """A response body was not valid UTF-8 (only raised by `get`, not `get_bytes`)."""


@dataclass(frozen=True)
class ImdsOptions:
    base_url: str = "http://169.254.169.254"
    allow_v1: bool = False
    token_ttl_s: int = MAX_TOKEN_TTL_S
    connect_timeout_s: float = 0.5
    read_timeout_s: float = 1.0
    max_body_bytes: int = 65536
    retry_attempts: int = 3
    retry_max_wait_s: float = 0.5
    # One call's whole budget: three attempts at the read timeout and the waits between them fit.
    deadline_s: float = 4.0

    def __post_init__(self) -> None:
        if not 1 <= self.token_ttl_s <= MAX_TOKEN_TTL_S:
            raise ValueError(f"token_ttl_s must be 1..{MAX_TOKEN_TTL_S}, got {self.token_ttl_s}")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("IMDS timeouts must be positive")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if self.retry_attempts < 1:
            raise ValueError("retry_attempts must be >= 1")
        if self.retry_max_wait_s < 0:
            raise ValueError("retry_max_wait_s must be >= 0")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        if not self.base_url.lower().startswith("http://"):
            # IMDS speaks plain HTTP only; a TLS socket would also bypass the deadline socket.
            raise ValueError(f"base_url must be an http:// URL, got {self.base_url!r}")


@dataclass
class ImdsStats:
    """Counters exported as metrics. `requests` counts HTTP requests sent (PUTs and retries too)."""

    requests: int = 0
    errors: int = 0  # calls of get/get_bytes that raised
    retries: int = 0
    token_refreshes: int = 0  # tokens fetched (the first one included)
    last_status: int | None = None  # HTTP status of the last response; None if none arrived
    mode: str = "unknown"  # "v2", "v1" or "unknown" (no token negotiated yet)


_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _is_retry_status(reply: Reply) -> bool:
    return reply.status in _RETRY_STATUSES or reply.status >= 500


def _retry_transport(error: BaseException) -> bool:
    """Connection errors and timeouts; never the deadline (nothing is left to retry with)."""
    return isinstance(error, TransportError) and not isinstance(error, DeadlineExceeded)


def _retry_transport_not_read_timeout(error: BaseException) -> bool:
    return _retry_transport(error) and not isinstance(error, ReadTimeout)


class ImdsClient:
    def __init__(
        self,
        options: ImdsOptions,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """`clock` drives the token's lifetime (tests fake it); the I/O deadline always uses the
        real monotonic clock, because it bounds real waiting on real sockets."""
        self.options = options
        parts = urlsplit(options.base_url)
        self._transport = Transport(
            parts.hostname or "",
            parts.port,
            options.connect_timeout_s,
            options.read_timeout_s,
            options.max_body_bytes,
        )
        self._deadline = float("inf")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._v1_mode = False
        self._stats = ImdsStats()
        self.cycles = CycleCollector(time.monotonic)
        self._base = options.base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")  # request targets are paths on the one connection

    def __repr__(self) -> str:  # never show the token
        return f"ImdsClient(base_url={self._base!r}, mode={self._stats.mode!r})"

    def __enter__(self) -> ImdsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stats(self) -> ImdsStats:
        """A snapshot copy of the counters. Lock-free on purpose: a metrics reader must not wait
        behind a request that is sitting out its timeouts."""
        transport = self._transport
        return dataclasses.replace(
            self._stats, requests=transport.requests, last_status=transport.last_status
        )

    def close(self) -> None:
        with self._lock:
            self._transport.close()

    # --- public API ---------------------------------------------------------------------------

    def get(self, path: str) -> str | None:
        """GET /latest/meta-data/<path> as text; None on 404."""
        body = self.get_bytes(path)
        if body is None:
            return None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            with self._lock:
                self._stats.errors += 1
            raise ImdsBodyNotText(
                f"IMDS returned a body for {path} that is not valid UTF-8 "
                f"({exc.reason} at byte {exc.start} of {len(body)})"
            ) from None

    def get_bytes(self, path: str) -> bytes | None:
        """GET /latest/meta-data/<path> as raw bytes; None on 404."""
        path = path.lstrip("/")
        with self._lock:
            self.cycles.before_request()
            self._deadline = time.monotonic() + self.options.deadline_s
            try:
                return self._get_locked(path)
            except ImdsError:
                self._stats.errors += 1
                self.cycles.failed()
                raise

    def identity(self) -> InstanceIdentity:
        """The instance facts the agent needs; a path IMDS does not have (404) gives None."""

        return read_identity(self.get)

    # --- internals (called with self._lock held) ------------------------------------------------

    def _get_locked(self, path: str) -> bytes | None:
        url = self._prefix + METADATA_PREFIX + path
        what = f"GET {path}"
        self._ensure_auth()
        reply = self._exchange("GET", url, self._auth_headers(), what)
        if reply.status == 401:
            # v2: the token expired or was revoked. v1: the endpoint now insists on v2.
            # Either way: a fresh token, one retry.
            self._drop_token()
            self._v1_mode = False
            self._ensure_auth()
            reply = self._exchange("GET", url, self._auth_headers(), what)
            if reply.status == 401:
                self._drop_token()
                if self._v1_mode:
                    raise ImdsError(
                        f"IMDS answered HTTP 401 to {what} without a token, yet refuses to "
                        "issue IMDSv2 tokens"
                    )
                raise ImdsError(f"IMDS answered HTTP 401 to {what} even with a freshly issued token")
        if reply.status == 404:
            self._note_ttl(reply)
            return None
        self._require_ok(reply, what)
        self._note_ttl(reply)
        return reply.body

    def _require_ok(self, reply: Reply, what: str) -> None:
        """Anything but 200 here is an error; retryable statuses mean the retries ran out."""
        if reply.status in _RETRY_STATUSES or reply.status >= 500:
            raise ImdsUnavailable(
                f"IMDS answered HTTP {reply.status} to {what} after {self.options.retry_attempts} attempt(s)"
            )
        if reply.status != 200:
            raise ImdsError(f"IMDS answered HTTP {reply.status} to {what}")

    def _auth_headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self._token} if self._token else {}

    def _drop_token(self) -> None:
        self._token = None
        self._token_expires_at = 0.0

    def _note_ttl(self, reply: Reply) -> None:
        """Trust the remaining TTL that IMDS reports on GET responses."""
        if not self._token:
            return
        ttl = _parse_ttl(reply.headers.get(TTL_HEADER))
        if ttl is not None:
            self._token_expires_at = self._clock() + ttl

    def _ensure_auth(self) -> None:
        if self._v1_mode:
            return
        if self._token and self._token_expires_at - self._clock() > TOKEN_REFRESH_MARGIN_S:
            return
        self._drop_token()
        self._fetch_token()

    def _fetch_token(self) -> None:
        opts = self.options
        what = "PUT /latest/api/token"
        try:
            reply = self._exchange(
                "PUT",
                self._prefix + TOKEN_PATH,
                {TTL_HEADER: str(opts.token_ttl_s)},
                what,
                retry_read_timeouts=False,
            )
        except ImdsUnavailable as exc:
            if not isinstance(exc.__cause__, ReadTimeout):
                raise
            if opts.allow_v1:
                self._enter_v1_mode("the IMDSv2 token request went unanswered")
                return
            raise ImdsUnreachable(
                f"IMDS did not answer the IMDSv2 token request within {opts.read_timeout_s:g}s. "
                "If nodeagent runs in a container, the instance's metadata hop limit must be at "
                "least 2 (HttpPutResponseHopLimit); IMDSv1 fallback is disabled "
                "(set IMDS_ALLOW_V1=true to allow it)"
            ) from exc.__cause__
        if reply.status in V1_ONLY_STATUSES:
            if opts.allow_v1:
                self._enter_v1_mode(f"IMDS refused the IMDSv2 token request (HTTP {reply.status})")
                return
            raise ImdsV1Only(
                f"IMDS refused the IMDSv2 token request (HTTP {reply.status}); IMDSv1 fallback "
                "is disabled (set IMDS_ALLOW_V1=true to allow it)"
            )
        self._require_ok(reply, what)
        token = reply.body.decode("ascii", "replace").strip()
        # A token goes into a header: refuse anything a header cannot carry (and never echo it).
        if not token or not token.isprintable() or not token.isascii() or len(token) > 4096:
            raise ImdsError("IMDS answered the IMDSv2 token request with an unusable token")
        ttl = _parse_ttl(reply.headers.get(TTL_HEADER))
        self._token = token
        self._token_expires_at = self._clock() + (ttl if ttl is not None else opts.token_ttl_s)
        self._v1_mode = False
        self._stats.token_refreshes += 1
        self._stats.mode = "v2"

    def _enter_v1_mode(self, why: str) -> None:
        if not self._v1_mode:
            log.warning("%s; falling back to IMDSv1 because IMDS_ALLOW_V1 is on", why)
        self._v1_mode = True
        self._drop_token()
        self._stats.mode = "v1"

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        what: str,
        retry_read_timeouts: bool = True,
    ) -> Reply:
        """One request with bounded retries; returns the final reply (possibly a 5xx/429).

        Raises ImdsUnavailable (cause chained) when no reply arrived at all, and
        ImdsBodyTooLarge, which is not retried.
        """
        opts = self.options
        try:
            return retry(
                lambda: self._transport.send(method, url, headers, self._deadline),
                schedule=self._backoff,
                transient=_retry_transport if retry_read_timeouts else _retry_transport_not_read_timeout,
                retry_result=_is_retry_status,
                stop=lambda failure: failure.attempts >= opts.retry_attempts,
                sleep=self._sleep,
                before_sleep=self._count_retry,
            )
        except BodyTooLarge:
            raise ImdsBodyTooLarge(
                f"IMDS response to {method} {url[len(self._prefix) :]} exceeds "
                f"{opts.max_body_bytes} bytes; refusing to read more"
            ) from None
        except DeadlineExceeded as exc:
            raise ImdsUnreachable(
                f"IMDS at {self._base} did not finish answering within the {opts.deadline_s:g}s "
                f"deadline ({what})"
            ) from exc
        except TransportError as exc:
            raise ImdsUnreachable(
                f"IMDS at {self._base} {exc} ({what}, {opts.retry_attempts} attempt(s))"
            ) from exc

    def _backoff(self, failure: Failure[Reply]) -> float:
        """Short exponential backoff with a little jitter, never sleeping past the deadline (the
        next attempt then fails at once, unretried)."""
        cap = self.options.retry_max_wait_s
        wait = min(cap, 0.05 * 2 ** (failure.attempts - 1)) + random.uniform(0, min(0.05, cap))
        return max(0.0, min(wait, self._deadline - time.monotonic()))

    def _count_retry(self, failure: Failure[Reply]) -> None:
        self._stats.retries += 1
        self.cycles.failed()


def _parse_ttl(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        ttl = int(value.strip())
    except ValueError:
        return None
    return ttl if 0 <= ttl <= MAX_TOKEN_TTL_S else None
