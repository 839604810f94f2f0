"""The durable record of what has been done, as atomic JSON under STATE_DIR.

The file is the truth across restarts. Writes are write + fsync + rename (+ fsync of the
directory). A corrupt file is quarantined, never silently overwritten. A state directory that
cannot be written leaves the agent running from memory, and `writable` says so.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nodeagent.atomic_file import replace_file
from nodeagent.jsontypes import JsonObject
from nodeagent.notices import NoticeKind
from nodeagent.untrusted_file import UnsafeFileError, read_untrusted_file

log = logging.getLogger("nodeagent.state")

STATE_FILE = "state.json"
# The unit's StateDirectory=: where the packaged daemon keeps its state, whatever a caller's
# environment or config says (the drill's busy check always reads it).
UNIT_STATE_DIR = "/var/lib/nodeagent"
# Far above any real file (a notice record is about 1 KB); the bound is for a hostile one.
MAX_STATE_BYTES = 16 * 1024 * 1024
SCHEMA = 1


class Phase(str, enum.Enum):
    """Where one notice's record stands. Only the notice store (notice_store.py) moves a record
    from one phase to another. The values are what the state file holds."""

    SEEN = "seen"
    ACTING = "acting"  # the response has started and must be finished on restart
    DONE = "done"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # another notice's response took over the node

    def __str__(self) -> str:
        return self.value


SEEN, ACTING, DONE, CANCELLED = Phase.SEEN, Phase.ACTING, Phase.DONE, Phase.CANCELLED
SKIPPED, EXPIRED, SUPERSEDED = Phase.SKIPPED, Phase.EXPIRED, Phase.SUPERSEDED
OPEN_PHASES = (SEEN, ACTING)
TERMINAL_PHASES = (DONE, CANCELLED, SKIPPED, EXPIRED, SUPERSEDED)


@dataclass
class NoticeRecord:
    id: str
    kind: NoticeKind
    action: str
    deadline: str  # ISO 8601 UTC, fixed at first sight
    first_seen: str
    response: str  # drain | cordon | ignore | gated
    phase: Phase = SEEN
    cordoned: bool = False
    labelled: bool = False
    drain_started: str | None = None
    drain_finished: str | None = None
    evicted: int = 0
    forced: int = 0
    failed: int = 0
    left: list[str] = field(default_factory=list)
    outcome: str = ""
    handled_at: float | None = None  # wall-clock seconds; with the boot time tells "before a reboot"
    total: int = 0  # pods the drain set out to evict
    not_after: str | None = None  # scheduled events: the end of the maintenance window
    superseded_by: str | None = None
    uncordon_pending: bool = False  # an uncordon was decided and is not done yet (survives a restart)
    # ASG termination lifecycle hook (ASG_LIFECYCLE_HOOK): what was said to Auto Scaling, so that a
    # restart neither repeats nor forgets the completion. See nodeagent/lifecycle.py.
    lifecycle_heartbeats: int = 0
    lifecycle_heartbeat_at: str | None = None  # the last accepted heartbeat
    lifecycle_completed_at: str | None = None  # CompleteLifecycleAction accepted (or no longer needed)
    lifecycle_outcome: str = ""  # completed | not waiting | failed: <why>; empty while pending

    def __post_init__(self) -> None:
        # The state file holds the values as strings; a bad one makes the file corrupt (ValueError).
        self.kind = NoticeKind(self.kind)
        self.phase = Phase(self.phase)


@dataclass
class AgentState:
    notices: dict[str, NoticeRecord] = field(default_factory=dict)
    last_notice: str | None = None
    status: str = "starting"  # what STATUS= says, for `nodeagent status`
    agent_state: str = "watching"  # watching | draining | drained | cordoned
    drain_progress: JsonObject | None = None
    updated_at: float = 0.0
    pid: int = 0

    @property
    def busy(self) -> bool:
        return any(record.phase == ACTING for record in self.notices.values())

    def to_json(self) -> JsonObject:
        return {
            "schema": SCHEMA,
            "busy": self.busy,
            "last_notice": self.last_notice,
            "status": self.status,
            "agent_state": self.agent_state,
            "drain_progress": self.drain_progress,
            "updated_at": self.updated_at,
            "pid": self.pid,
            "notices": {key: asdict(record) for key, record in self.notices.items()},
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> AgentState:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError("not a nodeagent state file (schema mismatch)")
        raw_notices = data.get("notices") or {}
        if not isinstance(raw_notices, dict):
            raise ValueError("notices is not an object")
        notices = {key: NoticeRecord(**value) for key, value in raw_notices.items()}
        return cls(
            notices=notices,
            last_notice=data.get("last_notice"),
            status=str(data.get("status", "")),
            agent_state=str(data.get("agent_state", "watching")),
            drain_progress=data.get("drain_progress"),
            updated_at=float(data.get("updated_at", 0.0)),
            pid=int(data.get("pid", 0)),
        )


class StateStore:
    def __init__(self, state_dir: str):
        self.path = Path(state_dir) / STATE_FILE
        self.writable = True
        self.last_error: str | None = None

    def load(self) -> LoadResult:
        read = read_daemon_state(str(self.path.parent))
        if read.missing:
            return LoadResult(AgentState(), quarantined=None, missing=True)
        problem = read.corrupt
        if read.data is not None:
            try:
                return LoadResult(AgentState.from_json(read.data), quarantined=None)
            except (ValueError, TypeError, OverflowError, RecursionError) as error:
                problem = str(error) or type(error).__name__
        if problem is None:  # unreadable, not corrupt: leave it for a later start to read
            return LoadResult(AgentState(), quarantined=None, error=read.error)
        return LoadResult(
            AgentState(), quarantined=self._quarantine(), error=f"corrupt state file: {problem}"
        )

    def _quarantine(self) -> str | None:
        target = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
        try:
            os.replace(self.path, target)
            return str(target)
        except OSError:
            return None

    def save(self, state: AgentState) -> bool:
        state.updated_at = time.time()
        # No indent: with one, json encodes in pure Python, slower, and every write leaves
        # reference cycles (its nested encoder functions) for the collector.
        payload = json.dumps(state.to_json(), sort_keys=True).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(str(self.path), payload, 0o644, prefix=".state.")
        except OSError as error:
            message = f"cannot write {self.path} ({error.strerror}); carrying on from memory"
            if self.writable or message != self.last_error:
                log.warning("%s", message)
            self.writable = False
            self.last_error = message
            return False
        if not self.writable:
            log.info("state directory is writable again: %s", self.path)
        self.writable = True
        self.last_error = None
        return True


@dataclass
class LoadResult:
    state: AgentState
    quarantined: str | None
    error: str | None = None
    missing: bool = False  # a first start, or a state directory that was wiped


@dataclass(frozen=True)
class StateRead:
    path: str
    data: JsonObject | None
    error: str | None  # None when read; else why not (missing, permission, corrupt)
    missing: bool = False
    corrupt: str | None = None  # what is wrong with the content, when it is not JSON or not an object


def read_daemon_state(state_dir: str) -> StateRead:
    """Read state.json without side effects: the one reader (the daemon's StateStore.load,
    `nodeagent status` and the drill's busy check). Quarantining is StateStore's business.

    The directory belongs to the service user and root reads from it, so the file is read as
    untrusted (nodeagent/untrusted_file.py): a symlink is not followed, a FIFO cannot hang the
    read, it must be a regular file of at most MAX_STATE_BYTES, and every parse error, a nesting
    too deep for the parser included, is a "corrupt" answer rather than an exception."""
    path = Path(state_dir) / STATE_FILE
    try:
        raw = read_untrusted_file(str(path), MAX_STATE_BYTES)
    except FileNotFoundError:
        return StateRead(
            str(path),
            None,
            f"no state file at {path} (the daemon has not run here, or STATE_DIR differs)",
            missing=True,
        )
    except PermissionError:
        return StateRead(
            str(path), None, f"cannot read {path}: permission denied (run as root, or with sudo)"
        )
    except UnsafeFileError as error:
        return StateRead(str(path), None, f"{error}; the daemon moves it aside at start", corrupt=str(error))
    except OSError as error:
        return StateRead(str(path), None, f"cannot read {path}: {error.strerror}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        problem = "nested too deeply to parse"
        return StateRead(
            str(path),
            None,
            f"{path} is not valid JSON ({problem}); the daemon moves it aside at start",
            corrupt=problem,
        )
    except (UnicodeDecodeError, ValueError) as error:
        return StateRead(
            str(path),
            None,
            f"{path} is not valid JSON ({error}); the daemon moves it aside at start",
            corrupt=str(error),
        )
    if not isinstance(data, dict):
        return StateRead(
            str(path), None, f"{path} is not a nodeagent state file", corrupt="not a nodeagent state file"
        )
    return StateRead(str(path), data, None)
