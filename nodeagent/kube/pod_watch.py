"""Which of the drain's pods are still on the node, kept current by one watch.

A broken watch is re-listed (paged) and resumed; a watch the server ends is resumed at once. Each
change wakes the drain (`on_change`), so it never has to look on its own.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable

from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import KubeApi
from nodeagent.kube.errors import ApiError, KubeError, RequestAbandoned
from nodeagent.kube.pod_rules import FINISHED_PHASES
from nodeagent.retry import Backoff, Failure, retry

log = logging.getLogger("nodeagent.kube.drain")


class PodWatch:
    """Which of our pods are still on the node, kept current by one watch (re-listed on breaks)."""

    def __init__(
        self,
        api: KubeApi,
        node: str,
        uids: set[str],
        resource_version: str,
        on_change: Callable[[], None] = lambda: None,
    ):
        self.api = api
        self.node = node
        self.on_change = on_change  # wakes the drain
        self.present: set[str] = set(uids)
        self._rv = resource_version
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self.breaks = 0
        self.changes = 0  # bumped on every change to `present`
        self._failing = False  # the API is failing us: one warning per outage, not one per retry

    def start(self) -> PodWatch:
        self._thread.start()
        return self

    def gone(self, uid: str) -> bool:
        with self._cond:
            return uid not in self.present

    def mark_gone(self, uid: str) -> None:
        with self._cond:
            self.present.discard(uid)
            self.changes += 1
            self._cond.notify_all()
        self.on_change()

    def wait(self, timeout_s: float, since: int | None = None) -> None:
        """Wait for a change; `since` (a `changes` value read before looking): not if one came
        already, so a pod that leaves between the look and the wait is not noticed a second late."""
        with self._cond:
            if since is None or self.changes == since:
                self._cond.wait(timeout=max(0.0, timeout_s))

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        # One pass per stream: a stream the server ends is resumed at once (the backoff starts
        # over); a broken one is retried after a backoff, re-listing first, until the stop.
        while not self._stop.is_set():
            retry(
                self._watch_pass(),
                schedule=Backoff(0.2, 2.0),
                transient=lambda error: isinstance(error, (KubeError, ValueError)),
                stop=lambda failure: self._stop.is_set(),
                sleep=lambda seconds: not self._stop.wait(seconds),
                before_sleep=self._watch_broke,
                gave_up=lambda failure: None,
            )
            if not self._stop.is_set():
                log.debug(
                    "pod watch ended by the server; resuming from resourceVersion %s", self._rv or "(none)"
                )

    def _watch_pass(self) -> Callable[[], None]:
        attempts = itertools.count()

        def watch() -> None:
            try:
                if next(attempts):  # after a break: catch up on what the broken stream missed
                    self._relist()
                self._watch_once()
            except RequestAbandoned:
                return  # the drain is over (close() came while the request waited at the gate)

        return watch

    def _watch_broke(self, failure: Failure[None]) -> None:
        self.breaks += 1
        log.log(
            logging.DEBUG if self._failing else logging.WARNING,
            "pod watch broke (%s); re-listing",
            failure.error,
        )

    def _watch_once(self) -> None:
        query = [
            ("fieldSelector", f"spec.nodeName={self.node}"),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", "300"),
        ]
        if self._rv:
            query.append(("resourceVersion", self._rv))
        for event in self.api.stream_lines(
            "/api/v1/pods", query, read_timeout_s=330, give_up=self._stop.is_set
        ):
            if self._stop.is_set():
                return
            kind = event.get("type")
            obj = event.get("object") or {}
            metadata = obj.get("metadata") or {}
            if kind == "ERROR":
                self._rv = ""
                raise ApiError(
                    int(obj.get("code", 500)),
                    str(obj.get("reason", "")),
                    str(obj.get("message", "")),
                    "WATCH",
                    "/api/v1/pods",
                )
            self._rv = str(metadata.get("resourceVersion") or self._rv)
            if kind == "DELETED" or (
                kind == "MODIFIED" and (obj.get("status") or {}).get("phase") in FINISHED_PHASES
            ):
                self.mark_gone(str(metadata.get("uid")))

    def _relist(self) -> None:
        try:
            items, resource_version = self.api.list_all(
                "/api/v1/pods", [("fieldSelector", f"spec.nodeName={self.node}")], give_up=self._stop.is_set
            )
        except RequestAbandoned:
            return
        except KubeError as error:
            log.log(
                logging.DEBUG if self._failing else logging.WARNING,
                "re-list of pods failed: %s (retrying quietly until it works)",
                error,
            )
            self._failing = True
            return
        if self._failing:
            log.info("pod watch: the API answers again; re-listed the node's pods")
            self._failing = False
        still_here = {_pod_uid(pod) for pod in items}
        with self._cond:
            self.present &= still_here
            self.changes += 1
            self._cond.notify_all()
        self.on_change()
        self._rv = resource_version


def _pod_uid(pod: JsonObject) -> str:
    metadata = pod.get("metadata")
    return str(metadata.get("uid")) if isinstance(metadata, dict) else ""
