"""IMDS client: IMDSv2 token lifecycle, short timeouts, bounded retries. It fetches; it never decides.

    client = ImdsClient(ImdsOptions())
    body = client.get("spot/instance-action")     # str, or None on 404 ("nothing pending")

Behaviour (see DESIGN.md B "IMDS"):
- One requests.Session, so polls reuse one keep-alive connection. The session ignores proxy
  environment variables (trust_env=False): IMDS must never be reached through a proxy, and a
  proxied token PUT would carry X-Forwarded-For and be refused.
- IMDSv2: PUT /latest/api/token (TTL header), then the token on every GET. The token is
  refreshed when <= 15 s of it remain; the remaining TTL is re-read from the
  X-aws-ec2-metadata-token-ttl-seconds header of each GET response. A 401 on a GET refreshes the
  token once and retries once.
- Timeouts are short for the PUT as well as GETs (0.5 s connect / 1 s read): a PUT that is never
  answered (a container behind hop limit 1) fails within about a second instead of wedging.
- 5xx, 429, connection errors and timeouts are retried with short exponential backoff
  (tenacity, `retry_attempts` attempts, waits capped at `retry_max_wait_s`), then ImdsUnavailable.
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

Thread safety: one lock serialises requests (a requests.Session is not safe to share freely);
the agent polls from a single loop anyway. `stats` never waits for that lock.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from nodeagent import notices

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
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")


@dataclass
class ImdsStats:
    """Counters exported as metrics. `requests` counts HTTP requests sent (PUTs and retries too)."""

    requests: int = 0
    errors: int = 0  # calls of get/get_bytes that raised
    retries: int = 0
    token_refreshes: int = 0  # tokens fetched (the first one included)
    last_status: Optional[int] = None  # HTTP status of the last response; None if none arrived
    mode: str = "unknown"  # "v2", "v1" or "unknown" (no token negotiated yet)


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: Optional[str]
    availability_zone: Optional[str]
    region: Optional[str]
    instance_type: Optional[str]
    life_cycle: Optional[str]
    local_hostname: Optional[str]


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _is_retry_status(reply: object) -> bool:
    return isinstance(reply, _Reply) and (reply.status in _RETRY_STATUSES or reply.status >= 500)


class ImdsClient:
    def __init__(
        self,
        options: ImdsOptions,
        session: Optional[requests.Session] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.options = options
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            session.trust_env = False
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._token_expires_at = 0.0
        self._v1_mode = False
        self._stats = ImdsStats()
        self._base = options.base_url.rstrip("/")
        self._retrying = {flag: self._build_retrying(flag) for flag in (True, False)}
        self._prepared_cache: Dict[Tuple[str, str, Tuple[Tuple[str, str], ...]], requests.PreparedRequest] = {}

    def __repr__(self) -> str:  # never show the token
        return f"ImdsClient(base_url={self._base!r}, mode={self._stats.mode!r})"

    def __enter__(self) -> "ImdsClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stats(self) -> ImdsStats:
        """A snapshot copy of the counters. Lock-free on purpose: a metrics reader must not wait
        behind a request that is sitting out its timeouts."""
        return dataclasses.replace(self._stats)

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    # --- public API ---------------------------------------------------------------------------

    def get(self, path: str) -> Optional[str]:
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

    def get_bytes(self, path: str) -> Optional[bytes]:
        """GET /latest/meta-data/<path> as raw bytes; None on 404."""
        path = path.lstrip("/")
        with self._lock:
            try:
                return self._get_locked(path)
            except ImdsError:
                self._stats.errors += 1
                raise

    def identity(self) -> InstanceIdentity:
        """The instance facts the agent needs; a path IMDS does not have (404) gives None."""

        def field(path: str) -> Optional[str]:
            value = self.get(path)
            value = value.strip() if value is not None else None
            return value or None

        return InstanceIdentity(
            instance_id=field(notices.INSTANCE_ID_PATH),
            availability_zone=field(notices.AVAILABILITY_ZONE_PATH),
            region=field(notices.REGION_PATH),
            instance_type=field(notices.INSTANCE_TYPE_PATH),
            life_cycle=field(notices.INSTANCE_LIFE_CYCLE_PATH),
            local_hostname=field(notices.LOCAL_HOSTNAME_PATH),
        )

    # --- internals (called with self._lock held) ------------------------------------------------

    def _get_locked(self, path: str) -> Optional[bytes]:
        url = self._base + METADATA_PREFIX + path
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

    def _require_ok(self, reply: _Reply, what: str) -> None:
        """Anything but 200 here is an error; retryable statuses mean the retries ran out."""
        if reply.status in _RETRY_STATUSES or reply.status >= 500:
            raise ImdsUnavailable(
                f"IMDS answered HTTP {reply.status} to {what} "
                f"after {self.options.retry_attempts} attempt(s)"
            )
        if reply.status != 200:
            raise ImdsError(f"IMDS answered HTTP {reply.status} to {what}")

    def _auth_headers(self) -> Dict[str, str]:
        return {TOKEN_HEADER: self._token} if self._token else {}

    def _drop_token(self) -> None:
        self._token = None
        self._token_expires_at = 0.0

    def _note_ttl(self, reply: _Reply) -> None:
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
                "PUT", self._base + TOKEN_PATH, {TTL_HEADER: str(opts.token_ttl_s)}, what,
                retry_read_timeouts=False,
            )
        except ImdsUnavailable as exc:
            if not exc.__cause__ or not isinstance(exc.__cause__, requests.ReadTimeout):
                raise
            if opts.allow_v1:
                self._enter_v1_mode("the IMDSv2 token request went unanswered")
                return
            raise ImdsUnavailable(
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
        headers: Dict[str, str],
        what: str,
        retry_read_timeouts: bool = True,
    ) -> _Reply:
        """One request with bounded retries; returns the final reply (possibly a 5xx/429).

        Raises ImdsUnavailable (cause chained) when no reply arrived at all, and
        ImdsBodyTooLarge, which is not retried.
        """
        opts = self.options
        retrying = self._retrying[retry_read_timeouts]
        try:
            return retrying(self._send_once, method, url, headers)
        except _TRANSIENT_ERRORS as exc:
            raise ImdsUnavailable(
                f"IMDS at {self._base} {_describe_failure(exc, opts)} ({what}, "
                f"{opts.retry_attempts} attempt(s))"
            ) from exc
        except requests.RequestException as exc:
            # Anything else requests can raise (bad URL, undecodable content-encoding, ...):
            # callers only ever need to catch ImdsError.
            raise ImdsError(
                f"IMDS request failed ({what}): {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc

    def _build_retrying(self, retry_read_timeouts: bool) -> Retrying:
        """Built once and reused: Retrying resets itself on each call, so there is no need to pay
        for building one on every poll."""
        opts = self.options
        transient = retry_if_exception_type(_TRANSIENT_ERRORS)
        if not retry_read_timeouts:
            transient = transient & retry_if_not_exception_type(requests.ReadTimeout)
        return Retrying(
            stop=stop_after_attempt(opts.retry_attempts),
            wait=wait_exponential(multiplier=0.05, max=opts.retry_max_wait_s)
            + wait_random(0, min(0.05, opts.retry_max_wait_s)),
            retry=transient | retry_if_result(_is_retry_status),
            before_sleep=self._count_retry,
            retry_error_callback=_last_outcome,
            sleep=self._sleep,
            reraise=True,
        )

    def _count_retry(self, state: RetryCallState) -> None:
        self._stats.retries += 1

    def _prepared(self, method: str, url: str, headers: Dict[str, str]) -> requests.PreparedRequest:
        """Session.prepare_request once per (method, url, headers), then reused for every poll.

        Preparing (URL parsing, settings and cookie merging) was most of the CPU the poll loop spent
        per GET: four GETs a second, forever, on every node. The token header is part of the key,
        so a new token gets a new prepared request; the cache is bounded by the paths polled.
        """
        key = (method, url, tuple(sorted(headers.items())))
        prepared = self._prepared_cache.get(key)
        if prepared is None:
            if len(self._prepared_cache) >= 64:
                self._prepared_cache.clear()
            prepared = self._session.prepare_request(requests.Request(method, url, headers=headers))
            self._prepared_cache[key] = prepared
        return prepared.copy()

    def _send_once(self, method: str, url: str, headers: Dict[str, str]) -> _Reply:
        opts = self.options
        self._stats.requests += 1
        self._stats.last_status = None
        # The session's adapter (and its keep-alive pool) directly: Session.send adds cookie, hook
        # and redirect handling IMDS never needs, about a tenth of each poll's CPU.
        response = self._session.get_adapter(url).send(
            self._prepared(method, url, headers),
            timeout=(opts.connect_timeout_s, opts.read_timeout_s),
            stream=True,
        )
        try:
            self._stats.last_status = response.status_code
            body = bytearray()
            for chunk in response.iter_content(_READ_CHUNK):
                body += chunk
                if len(body) > opts.max_body_bytes:
                    raise ImdsBodyTooLarge(
                        f"IMDS response to {method} {url[len(self._base):]} exceeds "
                        f"{opts.max_body_bytes} bytes; refusing to read more"
                    )
            return _Reply(response.status_code, dict(response.headers), bytes(body))
        finally:
            # Fully read -> the connection goes back to the pool; otherwise it is discarded.
            response.close()


def _last_outcome(state: RetryCallState) -> object:
    """After the last attempt: return its reply, or re-raise its exception."""
    assert state.outcome is not None
    return state.outcome.result()


def _parse_ttl(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    try:
        ttl = int(value.strip())
    except ValueError:
        return None
    return ttl if 0 <= ttl <= MAX_TOKEN_TTL_S else None


def _describe_failure(exc: BaseException, opts: ImdsOptions) -> str:
    """A short, operator-facing phrase instead of urllib3's nested repr."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"did not accept a connection within {opts.connect_timeout_s:g}s"
    text = str(exc)
    if isinstance(exc, requests.ReadTimeout) or "timed out" in text.lower():
        return f"did not answer within {opts.read_timeout_s:g}s"
    if "refused" in text.lower():
        return "refused the connection"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "broke off the response"
    if "reset" in text.lower() or "aborted" in text.lower() or "RemoteDisconnected" in text:
        return "dropped the connection"
    return f"is unreachable ({type(exc).__name__}: {text[:160]})"
