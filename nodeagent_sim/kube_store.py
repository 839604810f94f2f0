"""The simulator's object store: resourceVersions, indexes, a watch log, watchers, a timer thread.

One re-entrant lock guards everything; callers that need a read-modify-write (an eviction that
checks a PDB and then deletes) hold `store.lock` across it. Stored objects are never mutated in
place: an update stores a new dict, so a reader may serialise an object after releasing the lock.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

Key = Tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Predicate = Callable[[dict], bool]

RESOURCES = ("nodes", "pods", "events", "poddisruptionbudgets", "daemonsets")


def key_of(obj: dict) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class Gone(Exception):
    """A watch asked to resume from a resourceVersion that has been compacted away."""

    def __init__(self, requested: int, oldest: int):
        super().__init__("too old resource version: %d (%d)" % (requested, oldest))
        self.requested = requested
        self.oldest = oldest


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    obj: dict
    old: Optional[dict]


class Watcher:
    """One open watch: a queue of (type, obj) that the HTTP thread drains."""

    CLOSED = object()

    def __init__(self, resource: str, pred: Predicate):
        self.resource = resource
        self.pred = pred
        self.queue: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        self.closed = False
        self.abrupt = False
        self.last_rv = 0

    def offer(self, change: Change) -> None:
        """Queue the change as this watcher sees it through its selector."""
        was = change.old is not None and self.pred(change.old)
        now = self.pred(change.obj)
        if change.type == "DELETED":
            kind = "DELETED" if (now or was) else None
        elif was and now:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif was:
            kind = "DELETED"  # moved out of the selector: the watch cache reports a deletion
        else:
            kind = None
        if kind is not None:
            self.queue.put((kind, change.obj))

    def close(self, abrupt: bool = False) -> None:
        self.closed = True
        self.abrupt = self.abrupt or abrupt
        self.queue.put(self.CLOSED)


class Store:
    def __init__(self, log_size: int = 20000, first_rv: int = 1000):
        self.lock = threading.RLock()
        self._rv = first_rv
        self._objs: Dict[str, Dict[Key, dict]] = {r: {} for r in RESOURCES}
        self._pods_by_node: Dict[str, Set[Key]] = {}
        self._log: Dict[str, Deque[Change]] = {r: deque() for r in RESOURCES}
        self._log_size = log_size
        self._floor: Dict[str, int] = {r: first_rv for r in RESOURCES}  # all changes after this are logged
        self._watchers: Dict[str, Set[Watcher]] = {r: set() for r in RESOURCES}

    # -- reads ------------------------------------------------------------------------------

    @property
    def rv(self) -> int:
        return self._rv

    def get(self, resource: str, namespace: str, name: str) -> Optional[dict]:
        return self._objs[resource].get((namespace, name))

    def values(self, resource: str, namespace: Optional[str] = None) -> List[dict]:
        objs = self._objs[resource]
        if namespace is None:
            return list(objs.values())
        return [o for k, o in objs.items() if k[0] == namespace]

    def pods_on_node(self, node: str) -> List[dict]:
        pods = self._objs["pods"]
        return [pods[k] for k in self._pods_by_node.get(node, ()) if k in pods]

    # -- writes -----------------------------------------------------------------------------

    def put(self, resource: str, obj: dict) -> dict:
        """Create or replace; stamps a new resourceVersion and notifies watchers."""
        with self.lock:
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            key = key_of(obj)
            old = self._objs[resource].get(key)
            self._objs[resource][key] = obj
            if resource == "pods":
                self._index_pod(key, old, obj)
            self._record(resource, Change(self._rv, "MODIFIED" if old is not None else "ADDED", obj, old))
            return obj

    def remove(self, resource: str, namespace: str, name: str) -> Optional[dict]:
        """Delete; the DELETED event carries the object at a new resourceVersion."""
        with self.lock:
            old = self._objs[resource].pop((namespace, name), None)
            if old is None:
                return None
            self._rv += 1
            gone = dict(old)
            gone["metadata"] = dict(old["metadata"], resourceVersion=str(self._rv))
            if resource == "pods":
                self._index_pod((namespace, name), old, None)
            self._record(resource, Change(self._rv, "DELETED", gone, old))
            return gone

    def _index_pod(self, key: Key, old: Optional[dict], new: Optional[dict]) -> None:
        old_node = (old or {}).get("spec", {}).get("nodeName", "") if old else None
        new_node = new.get("spec", {}).get("nodeName", "") if new else None
        if old_node is not None and old_node != new_node:
            members = self._pods_by_node.get(old_node)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._pods_by_node[old_node]
        if new_node is not None:
            self._pods_by_node.setdefault(new_node, set()).add(key)

    def _record(self, resource: str, change: Change) -> None:
        log = self._log[resource]
        if len(log) >= self._log_size:
            self._floor[resource] = log.popleft().rv
        log.append(change)
        for w in list(self._watchers[resource]):
            if w.closed:
                self._watchers[resource].discard(w)
            else:
                w.offer(change)

    # -- watch ------------------------------------------------------------------------------

    def watch(self, resource: str, pred: Predicate, since: Optional[int],
              initial: Iterable[dict] = ()) -> Watcher:
        """Open a watch. With `since`, replay logged changes after it (Gone if compacted);
        otherwise queue ADDED for `initial` (the caller's snapshot, taken under the lock)."""
        with self.lock:
            w = Watcher(resource, pred)
            if since is not None:
                if since < self._floor[resource]:
                    raise Gone(since, self._floor[resource] + 1)
                for change in self._log[resource]:
                    if change.rv > since:
                        w.offer(change)
            else:
                for obj in initial:
                    w.queue.put(("ADDED", obj))
            w.last_rv = self._rv
            self._watchers[resource].add(w)
            return w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self._watchers[w.resource].discard(w)

    def close_watchers(self, abrupt: bool) -> int:
        with self.lock:
            ws = [w for group in self._watchers.values() for w in group]
            for group in self._watchers.values():
                group.clear()
        for w in ws:
            w.close(abrupt)
        return len(ws)

    def open_watches(self) -> int:
        with self.lock:
            return sum(1 for group in self._watchers.values() for w in group if not w.closed)

    def compact(self) -> None:
        """Forget the change log, as etcd compaction does: older resourceVersions become Gone."""
        with self.lock:
            for r in RESOURCES:
                self._log[r].clear()
                self._floor[r] = self._rv


class Scheduler:
    """A single timer thread for the simulator's delayed work (grace periods, replacements)."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="kubesim-timers", daemon=True)
        self._thread.start()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay_s), next(self._seq), fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._heap.clear()
            self._cv.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # a failing timer must not kill the others
                import traceback
                traceback.print_exc()
