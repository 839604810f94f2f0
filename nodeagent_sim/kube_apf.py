"""API Priority and Fairness for the simulated API server, as one priority level: a number of
seats (non-watch requests executing at once) and one queue of limited places in front of them.

A request that finds every seat taken waits in the queue, first come first served, for at most
`queue_wait_s`; when the queue is full, or the wait runs out, the server answers 429 with
`Retry-After`. kube-apiserver writes that answer with Go's http.Error (filters/maxinflight.go,
tooManyRequests): the plain text "Too many requests, please try again later.", not a Status
object; clients (client-go) build the Status themselves. `status_body=True` answers with the
Status object instead, for a client that must cope with either.

Where the model departs from the real filter, on purpose: one queue instead of shuffle-sharded
queues per flow; a fixed Retry-After instead of the one the dropped-requests tracker grows (1 s up
to 32 s); every executing request holds its seat for at least `service_time_s`, so that a few
seats bind on a simulator that otherwise answers in well under a millisecond. As in the real
server, watches hold a seat only while they are set up, and system:masters is exempt.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Optional, Tuple

from .kube_objects import dumps, status_body

REJECT_MESSAGE = "Too many requests, please try again later."
EXEMPT_GROUP = "system:masters"
RETRY_AFTER_FORMS = ("seconds", "date", "absent")


@dataclass(frozen=True)
class ApfConfig:
    seats: int = 2
    queue: int = 8
    queue_wait_s: float = 15.0  # kube-apiserver: a quarter of --request-timeout (60 s)
    retry_after_s: int = 1
    service_time_s: float = 0.005
    status_body: bool = False

    def __post_init__(self) -> None:
        if self.seats < 1:
            raise ValueError("seats must be at least 1")
        if self.queue < 0:
            raise ValueError("queue must be 0 or more")
        if self.queue_wait_s < 0 or self.service_time_s < 0:
            raise ValueError("queue_wait_s and service_time_s must be 0 or more")
        if self.retry_after_s < 1:
            raise ValueError("retry_after_s must be at least 1 (the real server never sends 0)")


@dataclass
class ApfStats:
    executing: int = 0
    queued: int = 0
    peak_executing: int = 0
    peak_queued: int = 0
    admitted: int = 0
    rejected: int = 0


class SeatGate:
    """Seats and a first-come-first-served queue of limited places. Thread-safe."""

    def __init__(self, config: ApfConfig):
        self.config = config
        self._cond = threading.Condition()
        self._waiting: Deque[object] = deque()
        self._stats = ApfStats()

    def acquire(self) -> Optional[float]:
        """Take a seat, waiting in the queue when all are taken. Returns the seconds spent queued,
        or None when the request is rejected (the queue is full or the wait ran out)."""
        cfg, st = self.config, self._stats
        with self._cond:
            if st.executing < cfg.seats and not self._waiting:
                self._seat_locked()
                return 0.0
            if len(self._waiting) >= cfg.queue:
                st.rejected += 1
                return None
            ticket = object()
            self._waiting.append(ticket)
            st.queued = len(self._waiting)
            st.peak_queued = max(st.peak_queued, st.queued)
            start = time.monotonic()
            deadline = start + cfg.queue_wait_s
            while not (self._waiting[0] is ticket and st.executing < cfg.seats):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._waiting.remove(ticket)
                    st.queued = len(self._waiting)
                    st.rejected += 1
                    self._cond.notify_all()  # the next in line may be at the head now
                    return None
                self._cond.wait(left)
            self._waiting.popleft()
            st.queued = len(self._waiting)
            self._seat_locked()
            self._cond.notify_all()
            return time.monotonic() - start

    def _seat_locked(self) -> None:
        st = self._stats
        st.executing += 1
        st.admitted += 1
        st.peak_executing = max(st.peak_executing, st.executing)

    def release(self) -> None:
        with self._cond:
            self._stats.executing -= 1
            self._cond.notify_all()

    def stats(self) -> ApfStats:
        with self._cond:
            return ApfStats(**vars(self._stats))


def is_exempt(groups: tuple) -> bool:
    return EXEMPT_GROUP in groups


def retry_after_header(seconds: int, form: str, now: Optional[float] = None) -> Optional[str]:
    """Retry-After as delta-seconds, as an HTTP date that many seconds ahead, or absent (None)."""
    if form == "absent":
        return None
    if form == "date":
        return email.utils.formatdate((time.time() if now is None else now) + seconds, usegmt=True)
    if form == "seconds":
        return str(seconds)
    raise ValueError("Retry-After form must be one of %s" % ", ".join(RETRY_AFTER_FORMS))


def plain_text_429() -> bytes:
    """The body http.Error writes: the message and a newline."""
    return (REJECT_MESSAGE + "\n").encode()


PLAIN_TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}


def rejection(config: ApfConfig) -> Tuple[int, bytes, Dict[str, str]]:
    """(status, body, headers) of the answer to a request the gate turned away."""
    headers = {"Retry-After": str(config.retry_after_s), "Cache-Control": "no-cache, private"}
    if config.status_body:
        body = status_body(429, "TooManyRequests", REJECT_MESSAGE, {"retryAfterSeconds": config.retry_after_s})
        headers["Content-Type"] = "application/json"
        return 429, dumps(body), headers
    headers.update(PLAIN_TEXT_HEADERS)
    return 429, plain_text_429(), headers
