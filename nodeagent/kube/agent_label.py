"""The node's `nodeagent.io/agent` label (watching, draining, drained, ...), written until it holds.

The fleet view (`kubectl get nodes -L nodeagent.io/agent`) is only as good as this label, and on
the day a capacity pool is reclaimed the API server throttles: one lost write would leave a
draining node saying `watching`. So the wanted value is handed to one background thread that
writes it through the gate at node priority (behind the drain's requests) and retries with
jittered backoff until it holds or a newer value replaces it. Only the newest value is written.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Callable

from nodeagent.kube.errors import KubeError
from nodeagent.retry import Backoff, Failure

log = logging.getLogger("nodeagent.kube")

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0


class AgentLabel:
    def __init__(
        self, write: Callable[[str], None], written: str | None = None, rng: random.Random | None = None
    ):
        self._write = write  # one merge patch of the label
        self._wanted: str | None = written
        self._written = written
        self._cond = threading.Condition()
        self._closed = False
        self._retry = Backoff(RETRY_FIRST_S, RETRY_MAX_S, rng=rng or random.Random())
        self._thread: threading.Thread | None = None
        self.failures = 0

    @property
    def written(self) -> str | None:
        with self._cond:
            return self._written

    def want(self, state: str) -> None:
        """Ask for `state`; returns at once. The keeper writes it as soon as the gate allows."""
        with self._cond:
            if self._closed:
                return
            self._wanted = state
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep, name="agent-label", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
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
            try:
                self._write(state)
            except KubeError as error:
                attempts += 1
                self.failures += 1
                if attempts == 1:
                    log.warning(
                        "could not set nodeagent.io/agent=%s (%s); retrying until it holds", state, error
                    )
                with self._cond:
                    wait_s = self._retry(Failure(attempts, error, None, 0.0))
                    if not self._closed and self._wanted == state:
                        self._cond.wait(wait_s)
                continue
            if attempts:
                log.info("nodeagent.io/agent=%s set after %d failed attempts", state, attempts)
            attempts = 0
            with self._cond:
                self._written = state
