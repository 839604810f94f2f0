"""The interfaces between the agent and the parts it drives: responders and reporters."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Protocol

from nodeagent.clock import iso
from nodeagent.config import Settings
from nodeagent.decide_terms import NodeNotice, Plan
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.notices import Notice
from nodeagent.state import NoticeRecord

if TYPE_CHECKING:
    from nodeagent.kube.client import KubeApi

log = logging.getLogger("nodeagent.agent")


class StepHooks(Protocol):
    def checkpoint(self) -> None:
        """Save the working record's progress."""

    def progress(self, gone: int, total: int, deadline: datetime) -> None: ...

    def should_stop(self) -> bool:
        """True once the response is cancelled or superseded, or the agent is stopping."""

    def step(self, record: NoticeRecord, reason: str, message: str) -> None: ...


class Notifier(Protocol):
    """Where the agent reports its lifecycle: systemd's sd_notify, or the drill's timeline."""

    last_status: str

    def ready(self) -> None: ...

    def status(self, text: str) -> None: ...

    def watchdog(self) -> None: ...

    def stopping(self) -> None: ...

    def reloading(self) -> None: ...


class Responder(Protocol):
    """Carries out plans. Decides nothing."""

    def startup(self, identity: InstanceIdentity | None) -> str | None:
        """None once ready to act; otherwise a STATUS text saying what it waits for."""

    def describe(self) -> str: ...

    def node_name(self) -> str | None:
        """The Kubernetes node's name once startup has found it; None before (or without one)."""

    def reload(self, settings: Settings) -> None:
        """A SIGHUP brought new settings (keys read once stay as they were)."""

    def spot_label(self) -> bool | None:
        """True/False when the node's lifecycle=Ec2Spot label is known, None when it is not."""

    def notice_on_node(self) -> NodeNotice | None:
        """The notice the node's labels named when the agent started (to rebuild lost state)."""

    def execute(self, plan: Plan, record: NoticeRecord, hooks: StepHooks) -> None:
        """Carry the plan out on `record`, a working copy: progress goes back through hooks."""

    def undo(self, record: NoticeRecord, reason: str) -> None: ...

    def agent_state_changed(self, agent_state: str, timeout_s: float | None = None) -> None: ...

    def close(self) -> None: ...


class KubeLink(Protocol):
    """A responder's link to the Kubernetes API, for the reporters that use it: Events are written
    through its client on its node, and the metrics count its failed requests. The log-only
    responder has none."""

    def api_and_node(self) -> tuple[KubeApi, str] | None:
        """(the API client, this node's name) once startup has found both; None before."""

    def listen_api_failures(self, listener: Callable[[], None]) -> None:
        """Call `listener` once per failed API request (a later call replaces it)."""


class Reporter(Protocol):
    """Events, webhook, metrics. Must never raise into the agent."""

    def notice_received(self, notice: Notice, record: NoticeRecord, plan: Plan | None) -> None: ...

    def step(self, record: NoticeRecord, reason: str, message: str) -> None:
        """reason: Cordoned, DrainStarted, DrainFinished, DrainFailed, Uncordoned; with ASG_LIFECYCLE_HOOK
        also LifecycleHeartbeat, LifecycleCompleted, LifecycleFailed, LifecycleHeartbeatFailed."""

    def finished(self, record: NoticeRecord) -> None: ...

    def cancelled(self, record: NoticeRecord) -> None: ...

    def forgotten(self, notice_ids: tuple[str, ...]) -> None:
        """The agent no longer keeps these notices' records: nothing more is reported about them,
        so whatever the reporter keeps per notice goes too (what it keeps stays bounded)."""

    def polled(self, ok: bool, errors: dict[str, str]) -> None: ...

    def flush(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for queued messages to go out; True when none is left."""

    def close(self) -> None: ...


class LoggingResponder:
    """A responder that only logs: `nodeagent run --log-only`, and the watcher without Kubernetes."""

    def startup(self, identity: InstanceIdentity | None) -> str | None:
        return None

    def describe(self) -> str:
        return "log-only"

    def node_name(self) -> str | None:
        return None

    def reload(self, settings: Settings) -> None:
        pass

    def spot_label(self) -> bool | None:
        return None

    def notice_on_node(self) -> NodeNotice | None:
        return None

    def execute(self, plan: Plan, record: NoticeRecord, hooks: StepHooks) -> None:
        log.info(
            "would %s for %s (%s) by %s [log-only: no Kubernetes actions]",
            plan.response,
            plan.notice_id,
            plan.action,
            iso(plan.deadline),
        )
        record.outcome = f"logged ({plan.response})"

    def undo(self, record: NoticeRecord, reason: str) -> None:
        log.info("would undo %s for %s: %s [log-only]", record.response, record.id, reason)

    def agent_state_changed(self, agent_state: str, timeout_s: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def quietly(function: Callable[..., object], *args: object) -> None:
    """Call a reporter (or a best-effort write) so that its failure never reaches the agent."""
    try:
        function(*args)
    except Exception as error:
        log.warning("reporter %s failed: %s", getattr(function, "__qualname__", function), error)
