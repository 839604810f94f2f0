"""One background thread per reporter, so network I/O never runs on the agent's threads.

Jobs run in the order they were submitted. A job that raises is logged and dropped; the worker
itself never dies. `close` stops taking jobs, lets the queue finish for a bounded time, and tells
jobs that are still retrying (through `closing`) to make their last attempt now.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

log = logging.getLogger("nodeagent.report")

Job = Callable[[], None]


class Worker:
    def __init__(self, name: str):
        self.name = name
        self.closing = threading.Event()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self.closing.is_set():
            return
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._jobs.put(job)

    def sleep(self, seconds: float) -> bool:
        """Sleep between retries; returns False (at once) when the worker is closing."""
        return not self.closing.wait(max(0.0, seconds))

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every submitted job has run (used by `drill` before it prints its summary)."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Finish queued jobs for up to timeout_s; retries are cut short while closing."""
        deadline = time.monotonic() + timeout_s
        # Let queued jobs run normally for most of the budget, then ask them to hurry.
        self._idle.wait(timeout_s * 0.6)
        self.closing.set()
        self._jobs.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception as error:  # a reporter bug must not kill its thread
                log.warning("%s: job failed: %s", self.name, type(error).__name__)
            finally:
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()


class WorkerReporter:
    """The lifecycle the network reporters share: one Worker, flushed and closed with a bound."""

    def __init__(self, name: str, close_timeout_s: float):
        self.worker = Worker(name)
        self.close_timeout_s = close_timeout_s

    def polled(self, ok: bool, errors) -> None:
        pass

    def forgotten(self, notice_ids: tuple[str, ...]) -> None:
        pass  # a reporter that keeps something per notice drops it here

    def flush(self, timeout_s: float) -> bool:
        return self.worker.wait_idle(timeout_s)

    def close(self) -> None:
        self.worker.close(self.close_timeout_s)
