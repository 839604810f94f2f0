"""The node's `nodeagent.io/agent` label (watching, draining, drained, ...), written until it holds.

The fleet view (`kubectl get nodes -L nodeagent.io/agent`) is only as good as this label, and on
the day a capacity pool is reclaimed the API server throttles: one lost write would leave a
draining node saying `watching`. So a new value is first written at once, on the caller's thread
(the worker writes "drained" before the notice's record is closed, so a kill in between leaves
the notice open rather than the label stale), for at most `SYNC_WAIT_S` of waiting at the gate.
If that fails, one background thread takes it over and retries with jittered backoff until it
holds or a newer value replaces it. Writes never overlap, and only the newest value is written.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional

from nodeagent.kube.errors import KubeError
from nodeagent.retry import Backoff, Failure

log = logging.getLogger("nodeagent.kube")

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
SYNC_WAIT_S = 5.0  # how long the caller's own attempt may wait for its turn at the gate

# write(state, give_up): one merge patch of the label; give_up ends a wait at the gate.
Write = Callable[[str, Optional[Callable[[], bool]]], None]


class AgentLabel:
    def __init__(self, write: Write, written: str | None = None, retry: Backoff | None = None):
        self._write = write
        self._wanted: str | None = written
        self._written = written
        self._cond = threading.Condition()
        self._writing = threading.Lock()  # one write at a time: an older value never lands last
        self._closed = False
        self._retry = retry or Backoff(RETRY_FIRST_S, RETRY_MAX_S, rng=random.Random())
        self._thread: threading.Thread | None = None
        self.failures = 0

    @property
    def written(self) -> str | None:
        with self._cond:
            return self._written

    def set(self, state: str) -> bool:
        """Write `state` now; on failure the keeper retries it. True when it holds on return."""
        with self._cond:
            if self._closed:
                return False
            self._wanted = state
        with self._writing:
            with self._cond:
                if self._written == state or self._wanted != state:
                    return self._written == state
            until = time.monotonic() + SYNC_WAIT_S
            try:
                self._write(state, lambda: time.monotonic() >= until)
            except KubeError as error:
                self.failures += 1
                log.warning("could not set nodeagent.io/agent=%s (%s); retrying until it holds", state, error)
                self._keep_trying()
                return False
            with self._cond:
                self._written = state
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _keep_trying(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep, name="agent-label", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _keep(self) -> None:
        attempts = 0
        while True:
            with self._cond:
                while not self._closed and self._wanted == self._written:
                    self._cond.wait()
                if self._closed:
                    return
                state = self._wanted
            assert state is not None
            failed: KubeError | None = None
            with self._writing:
                with self._cond:
                    if self._wanted != state or self._written == state:
                        continue  # a newer value came, or the caller wrote it meanwhile
                try:
                    self._write(state, lambda: self._closed)
                except KubeError as error:
                    attempts += 1
                    self.failures += 1
                    log.debug("nodeagent.io/agent=%s: attempt %d failed (%s)", state, attempts, error)
                    failed = error
                else:
                    with self._cond:
                        self._written = state
            if failed is None:
                if attempts:
                    log.info("nodeagent.io/agent=%s set after %d more attempts", state, attempts)
                attempts = 0
                continue
            with self._cond:
                if not self._closed and self._wanted == state:
                    self._cond.wait(self._retry(Failure(attempts, failed, None, 0.0)))
