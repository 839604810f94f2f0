"""Fake ports for the fast tier: a clock that jumps, IMDS bodies from a dict, a responder that
records what it was asked to do, and state files kept in memory. No sockets, no subprocesses."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

from nodeagent.decide import NodeNotice, Plan
from nodeagent.imds import InstanceIdentity
from nodeagent.state import AgentState, LoadResult, NoticeRecord

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self, start: datetime = T0):
        self.current = start
        self.mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self.current

    def monotonic(self) -> float:
        with self._lock:
            return self.mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.current += timedelta(seconds=seconds)
            self.mono += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(max(0.0, seconds))
        return event.is_set()


class FakeImds:
    """Bodies by path; None = 404. `identity()` answers like an EC2 spot instance."""

    def __init__(self) -> None:
        self.bodies: Dict[str, Optional[str]] = {}
        self.gets: List[str] = []

    def get(self, path: str) -> Optional[str]:
        self.gets.append(path)
        return self.bodies.get(path)

    def identity(self) -> InstanceIdentity:
        return InstanceIdentity(instance_id="i-0123456789abcdef0", instance_type="m5.large",
                                life_cycle="spot", local_hostname="ip-10-0-1-2.ec2.internal",
                                availability_zone="us-east-1a", region="us-east-1")

    def close(self) -> None:
        pass


class MemoryFiles:
    """StateStore's interface, in memory."""

    def __init__(self, state: Optional[AgentState] = None, missing: bool = True):
        self.state = state
        self.missing = missing and state is None
        self.saves = 0

    def load(self) -> LoadResult:
        return LoadResult(self.state or AgentState(), quarantined=None, missing=self.missing)

    def save(self, state: AgentState) -> bool:
        self.saves += 1
        self.state = state
        return True


class NullNotifier:
    def __init__(self) -> None:
        self.statuses: List[str] = []

    def ready(self) -> None: ...

    def reloading(self) -> None: ...

    def stopping(self) -> None: ...

    def watchdog(self) -> None: ...

    def status(self, text: str) -> None:
        self.statuses.append(text)


@dataclass
class FakeResponder:
    """Records every Kubernetes write it would make as (what, notice id). A drain "evicts" its
    pods one by one, asking should_stop() before each, and can be held at a pod (`hold_at`)."""

    pods: int = 3
    hold_at: Optional[int] = None
    calls: List[Tuple[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)
    node_notice: Optional[NodeNotice] = None
    undo_failures: int = 0  # the first so many undos fail as if the API were down

    def startup(self, identity: Optional[InstanceIdentity]) -> Optional[str]:
        return None

    def describe(self) -> str:
        return "node fake"

    def reload(self, settings) -> None: ...

    def spot_label(self) -> Optional[bool]:
        return True

    def notice_on_node(self) -> Optional[NodeNotice]:
        return self.node_notice

    def execute(self, plan: Plan, record: NoticeRecord, hooks) -> None:
        if hooks.should_stop():
            return
        if not record.cordoned:
            self.calls.append(("cordon", plan.notice_id))
            record.cordoned = True
            hooks.checkpoint()
        if hooks.should_stop():
            return
        if not record.labelled:
            self.calls.append(("label", plan.notice_id))
            record.labelled = True
            hooks.checkpoint()
        if plan.response != "drain":
            record.outcome = "cordoned"
            return
        record.total = self.pods
        for index in range(record.evicted, self.pods):
            if index == self.hold_at:
                self.holding.set()
                self.released.wait(5)
            if hooks.should_stop():
                return
            self.calls.append(("evict", plan.notice_id))
            record.evicted += 1
            hooks.checkpoint()
        record.drain_finished = "done"
        record.outcome = f"drained: {record.evicted} evicted"

    def undo(self, record: NoticeRecord, reason: str) -> None:
        if self.undo_failures > 0:
            self.undo_failures -= 1
            self.calls.append(("uncordon failed", record.id))
            raise ConnectionError("the API did not answer")
        self.calls.append(("uncordon", record.id))

    def agent_state_changed(self, agent_state: str, timeout_s: Optional[float] = None) -> None:
        self.calls.append(("agent-state", agent_state))

    def close(self) -> None: ...

    def writes_for(self, notice_id: str) -> List[str]:
        return [what for what, who in self.calls if who == notice_id]
