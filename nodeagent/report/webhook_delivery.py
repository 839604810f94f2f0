"""How a webhook message goes out: a POST with retries until its give-up time, nothing secret logged.

Delivery runs on the reporter's background thread: a timeout per attempt, and a deadline for the
whole attempt (connect + read timeout, never past the give-up time) that a server trickling its
answer cannot stretch; retries with exponential backoff on connection errors, timeouts,
408/425/429 and 5xx until the give-up time, no retry on other answers. `requests` honours
HTTPS_PROXY/HTTP_PROXY/NO_PROXY.

Secrecy: the URL and the WEBHOOK_HEADERS values are never logged and never put in exception
messages that we log; logs say e.g. "webhook failed: HTTP 500 from <redacted>".
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import requests

from nodeagent import __version__
from nodeagent.http_deadline import DEADLINES, deadline_session, too_slow
from nodeagent.report.worker import Worker
from nodeagent.retry import Backoff, Failure, retry

log = logging.getLogger("nodeagent.report.webhook")

REDACTED = "<redacted>"
RETRY_STATUSES = frozenset({408, 425, 429})


def parse_headers(text: str) -> tuple[dict[str, str], list[str]]:
    """'Name: value; Name2: value2' -> ({name: value}, problems). Problems never quote a value."""
    headers: dict[str, str] = {}
    problems: list[str] = []
    for index, entry in enumerate((e for e in text.split(";") if e.strip()), start=1):
        name, sep, value = entry.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            problems.append(f"WEBHOOK_HEADERS entry {index} ignored: expected 'Name: value'")
            continue
        if "\r" in value or "\n" in value:
            problems.append(f"WEBHOOK_HEADERS entry {index} ({name}) ignored: line break in the value")
            continue
        headers[name] = value.strip()
    return headers, problems


class Redactor:
    """Removes the URL (and its parts) and header values from any text before it is logged."""

    def __init__(self, url: str, header_values: list[str]):

        parts = urlsplit(url)
        secrets = [url, parts.netloc, parts.path, parts.query, parts.hostname or ""]
        secrets += [v for v in header_values if v]
        # Longest first, so the URL goes as a whole before its pieces; very short pieces ("/")
        # are not secrets and would mangle the text.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


@dataclass(frozen=True)
class DeliveryPolicy:
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    # Retry at least this long even when the deadline is nearer (the end-of-drain message).
    min_window_s: float = 20.0


def describe_failure(error: BaseException) -> str:
    """A short cause that never includes the exception text (requests puts the URL in it)."""
    if isinstance(error, requests.exceptions.ProxyError):
        return "proxy error"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(error, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection failed"
    return type(error).__name__


@dataclass
class Delivery:
    delivered: bool
    attempts: int
    problem: str = ""


class _AttemptFailed(Exception):
    def __init__(self, problem: str, attempt: int, retryable: bool, retry_after: float | None):
        super().__init__(problem)
        self.attempt = attempt
        self.retryable = retryable
        self.retry_after = retry_after


class WebhookSender:
    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        policy: DeliveryPolicy,
        worker: Worker,
        session: requests.Session | None = None,
        sleep: Callable[[float], bool] | None = None,
    ):
        self._url = url
        self._headers = {"Content-Type": "application/json", "User-Agent": f"nodeagent/{__version__}"}
        self._headers.update(headers)
        self.policy = policy
        self.worker = worker
        self._session = session or deadline_session()  # trust_env: the standard proxy variables
        self._sleep = sleep or worker.sleep
        self.redact = Redactor(url, list(headers.values()))

    def __repr__(self) -> str:
        return f"WebhookSender({REDACTED})"

    def send(self, body: bytes, give_up_at: float, what: str) -> Delivery:
        """POST with retries until give_up_at (monotonic). Logs without the URL or header values."""
        backoff = Backoff(self.policy.first_backoff_s, self.policy.max_backoff_s)

        def attempt() -> Delivery:
            number = next(numbers)
            left = give_up_at - time.monotonic()
            timeout = (
                min(self.policy.connect_timeout_s, max(0.5, left)),
                min(self.policy.read_timeout_s, max(0.5, left)),
            )
            # The whole attempt, body included: per-read timeouts alone let a trickle run for ever.
            whole_s = min(sum(timeout), max(0.5, left))
            retry_after: float | None = None
            try:
                with DEADLINES.limit(whole_s) as limit:
                    try:
                        response = self._session.post(
                            self._url,
                            data=body,
                            headers=self._headers,
                            timeout=timeout,
                            allow_redirects=False,
                        )
                    except requests.RequestException:
                        if limit.expired:
                            raise _AttemptFailed(
                                f"{too_slow(round(whole_s, 1))} ({REDACTED})", number, True, None
                            ) from None
                        raise
                status = response.status_code
                response.close()
                if 200 <= status < 300:
                    log.info("webhook delivered (%s, attempt %d)", what, number)
                    return Delivery(True, number)
                problem = f"HTTP {status} from {REDACTED}"
                retryable = status in RETRY_STATUSES or status >= 500
                retry_after = _retry_after(response.headers.get("Retry-After"))
            except _AttemptFailed:
                raise
            except requests.RequestException as error:
                problem = f"{describe_failure(error)} ({REDACTED})"
                retryable = True
            except Exception as error:  # e.g. a malformed URL slipping past config
                problem = describe_failure(error)
                retryable = False
            raise _AttemptFailed(self.redact(problem), number, retryable, retry_after)

        def wait(failure: Failure[Delivery]) -> float:
            assert isinstance(failure.error, _AttemptFailed)
            return min(self.policy.max_backoff_s, max(backoff(failure), failure.error.retry_after or 0.0))

        def retrying(failure: Failure[Delivery]) -> None:
            if failure.attempts == 1:
                log.warning(
                    "webhook attempt 1 failed (%s): %s; retrying with backoff for up to %.0fs",
                    what,
                    failure.error,
                    give_up_at - time.monotonic(),
                )
            else:
                log.debug("webhook attempt %d failed (%s): %s", failure.attempts, what, failure.error)

        def gave_up(failure: Failure[Delivery]) -> Delivery:
            n = failure.attempts
            if failure.interrupted:
                log.error("webhook failed (%s) after %d attempts: %s (shutting down)", what, n, failure.error)
            else:
                log.error(
                    "webhook failed (%s) after %d attempt%s: %s",
                    what,
                    n,
                    "" if n == 1 else "s",
                    failure.error,
                )
            return Delivery(False, n, str(failure.error))

        numbers = itertools.count(1)
        try:
            return retry(
                attempt,
                schedule=wait,
                transient=lambda error: isinstance(error, _AttemptFailed) and error.retryable,
                stop=lambda failure: (
                    self.worker.closing.is_set() or time.monotonic() + failure.wait_s >= give_up_at
                ),
                sleep=self._sleep,  # False: the reporter is shutting down
                before_sleep=retrying,
                gave_up=gave_up,
            )
        except _AttemptFailed as failed:  # an answer no retry can change
            log.error("webhook failed (%s): %s; not retrying", what, failed)
            return Delivery(False, failed.attempt, str(failed))

    def close(self) -> None:
        self._session.close()


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
