"""The notice store: the only place where a record changes, each change saved at once.

Named operations move a record between phases (accept, start, mark done, supersede, cancel,
expire, stop on shutdown) or record what a response did so far (progress). Readers get copies,
so the decision core can never change a record by accident.

One writer: the poll loop calls every verb that decides something about a record, applying what
the decision core (decide.py) made of a poll or of a report from the worker or the lifecycle hook.
The one exception is `checkpoint`: the worker saves how far a running response got before its
next Kubernetes write (a kill then resumes from there), and it writes counts, never a phase or
an outcome. Other threads read, hence the lock.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import replace

from nodeagent.state import (
    ACTING,
    CANCELLED,
    DONE,
    EXPIRED,
    OPEN_PHASES,
    SEEN,
    SUPERSEDED,
    AgentState,
    NoticeRecord,
    StateStore,
)

# What a response may write back: how far it got. Never the phase.
PROGRESS_FIELDS = (
    "cordoned",
    "labelled",
    "drain_started",
    "drain_finished",
    "evicted",
    "forced",
    "failed",
    "left",
    "total",
    "outcome",
)


# What a running response saves as it goes: its progress without an outcome (the loop writes that).
CHECKPOINT_FIELDS = tuple(name for name in PROGRESS_FIELDS if name != "outcome")


class UnknownNotice(KeyError):
    pass


class NoticeStore:
    def __init__(self, files: StateStore, state: AgentState | None = None):
        self.files = files
        self._state = state or AgentState()
        self._lock = threading.RLock()

    # ------------------------------------------------------------ reading

    def records(self) -> dict[str, NoticeRecord]:
        with self._lock:
            return {key: copy.deepcopy(record) for key, record in self._state.notices.items()}

    def get(self, notice_id: str) -> NoticeRecord:
        with self._lock:
            return copy.deepcopy(self._record(notice_id))

    def snapshot(self) -> AgentState:
        with self._lock:
            return copy.deepcopy(self._state)

    @property
    def agent_state(self) -> str:
        return self._state.agent_state

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._state.busy

    # ------------------------------------------------------------ phases

    def load(self, state: AgentState) -> None:
        with self._lock:
            self._state = state
            self._save()

    def accept(self, record: NoticeRecord) -> None:
        """A notice seen for the first time (or rebuilt from the node): its record as decided."""
        with self._lock:
            self._state.notices[record.id] = copy.deepcopy(record)
            self._state.last_notice = record.id
            self._save()

    def start(self, notice_id: str) -> bool:
        """The worker begins (or resumes) the response. False when it is no longer open."""
        with self._lock:
            record = self._record(notice_id)
            if record.phase not in OPEN_PHASES:
                return False
            record.phase = ACTING
            self._save()
            return True

    def progress(self, working: NoticeRecord) -> None:
        """What the response has done so far, from the worker's working copy."""
        with self._lock:
            record = self._record(working.id)
            for name in PROGRESS_FIELDS:
                setattr(record, name, copy.deepcopy(getattr(working, name)))
            self._save()

    def checkpoint(self, working: NoticeRecord) -> None:
        """A running response's progress so far (the worker's thread, before its next write)."""
        with self._lock:
            record = self._record(working.id)
            for name in CHECKPOINT_FIELDS:
                setattr(record, name, copy.deepcopy(getattr(working, name)))
            self._save()

    def mark_done(self, notice_id: str, outcome: str, handled_at: float) -> NoticeRecord:
        with self._lock:
            record = self._record(notice_id)
            if record.phase == ACTING or record.phase == SEEN:
                record.phase = DONE
            record.outcome = outcome
            record.handled_at = handled_at
            self._save()
            return copy.deepcopy(record)

    def supersede(self, notice_id: str, by: str) -> bool:
        with self._lock:
            record = self._record(notice_id)
            if record.phase not in OPEN_PHASES:
                return False
            record.phase = SUPERSEDED
            record.superseded_by = by
            record.outcome = f"superseded by {by}"
            self._save()
            return True

    def reopen(self, notice_id: str) -> bool:
        """A superseded response whose superseding notice was cancelled: open again."""
        with self._lock:
            record = self._record(notice_id)
            if record.phase != SUPERSEDED:
                return False
            record.phase = SEEN
            record.outcome = f"resumed: {record.superseded_by} was cancelled"
            record.superseded_by = None
            self._save()
            return True

    def cancel(self, notice_id: str, reason: str) -> NoticeRecord:
        with self._lock:
            record = self._record(notice_id)
            record.phase = CANCELLED
            record.outcome = reason
            self._save()
            return copy.deepcopy(record)

    def stopped_early(self, notice_id: str, working: NoticeRecord) -> NoticeRecord:
        """A cancelled or superseded response has stopped: say truthfully how far it got."""
        with self._lock:
            record = self._record(notice_id)
            for name in CHECKPOINT_FIELDS:
                setattr(record, name, copy.deepcopy(getattr(working, name)))
            gone = working.evicted + working.forced
            what = f"{gone} of {working.total} pods had gone" if working.total else "no pod had been evicted"
            record.outcome = f"{record.outcome}; stopped after {what}"
            self._save()
            return copy.deepcopy(record)

    def expire(self, notice_id: str, reason: str) -> None:
        with self._lock:
            record = self._record(notice_id)
            record.phase = EXPIRED
            record.outcome = reason
            self._save()

    def interrupted(self, working: NoticeRecord) -> None:
        """The agent is stopping mid-response: progress kept, phase stays acting for the next start."""
        self.progress(working)

    def forget(self, notice_ids: Sequence[str]) -> None:
        """Drop closed records that nothing needs any more (decide.forgettable): one save."""
        with self._lock:
            for notice_id in notice_ids:
                record = self._state.notices.get(notice_id)
                if record is not None and record.phase in OPEN_PHASES:
                    raise ValueError(f"notice {notice_id} is open: not forgotten")
            for notice_id in notice_ids:
                self._state.notices.pop(notice_id, None)
            self._save()

    # ------------------------------------------------------------ the lifecycle hook

    def lifecycle(self, notice_id: str, **fields: object) -> NoticeRecord:
        """What Auto Scaling was told (lifecycle_* fields only): saved at once, a restart reads it."""
        with self._lock:
            record = self._record(notice_id)
            for name, value in fields.items():
                if not name.startswith("lifecycle_"):
                    raise ValueError(f"not a lifecycle field: {name}")
                setattr(record, name, value)
            self._save()
            return copy.deepcopy(record)

    # ------------------------------------------------------------ the cordon

    def request_uncordon(self, notice_id: str) -> None:
        with self._lock:
            self._record(notice_id).uncordon_pending = True
            self._save()

    def uncordoned(self, notice_id: str, reason: str, done: bool) -> None:
        """The worker lifted the cordon (or, `done` False, only released the record)."""
        with self._lock:
            record = self._record(notice_id)
            record.uncordon_pending = False
            record.cordoned = False
            record.labelled = False
            if done and record.phase == CANCELLED:
                record.outcome = f"{record.outcome}; node uncordoned"
            elif done:
                record.outcome = f"undone: {reason}"
            self._save()

    # ------------------------------------------------------------ the agent's own fields

    def set_agent_state(self, agent_state: str) -> bool:
        """True when it changed."""
        with self._lock:
            if self._state.agent_state == agent_state:
                return False
            self._state.agent_state = agent_state
            self._save()
            return True

    def set_status(self, status: str) -> None:
        with self._lock:
            if self._state.status != status:
                self._state.status = status
                self._save()

    def set_drain_progress(self, progress: dict[str, object] | None) -> None:
        with self._lock:  # not saved on its own: it rides on the next save
            self._state.drain_progress = progress

    def set_pid(self, pid: int) -> None:
        with self._lock:
            self._state.pid = pid

    def save(self) -> None:
        with self._lock:
            self._save()

    # ------------------------------------------------------------ internals

    def _record(self, notice_id: str) -> NoticeRecord:
        record = self._state.notices.get(notice_id)
        if record is None:
            raise UnknownNotice(notice_id)
        return record

    def _save(self) -> None:
        self.files.save(self._state)


def working_copy(record: NoticeRecord) -> NoticeRecord:
    return replace(record, left=list(record.left))
