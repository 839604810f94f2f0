"""`nodeagent drill`: what it checks and reads before anything runs.

Whether the daemon is busy with a real notice (refused, exit 75), whether a real notice took the
node over during the drill (then --undo leaves it alone), this instance's identity (from IMDS, or
from the Node when IMDS cannot be reached) and the node as the drill found it (what --undo puts
back). Only reads: the daemon's state file, IMDS, nothing written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from nodeagent.imds import ImdsClient, ImdsError, ImdsOptions
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.jsontypes import JsonObject
from nodeagent.kube import node as keys
from nodeagent.state import UNIT_STATE_DIR, StateRead, read_daemon_state
from nodeagent.status_state import process_is_nodeagent

EX_BUSY = 75


class DrillError(Exception):
    """The drill cannot start; the message says why. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class NodeSnapshot:
    """What --undo restores: the node as the drill found it."""

    name: str
    unschedulable: bool
    labels: dict[str, str | None]
    annotations: dict[str, str | None]


def daemon_state_dirs(configured: str) -> list[str]:
    """Where the daemon's state may be: the unit's own directory always, and the configured
    STATE_DIR when it names another (a daemon started by hand, the tests)."""
    dirs = [UNIT_STATE_DIR]
    if os.path.abspath(configured) != UNIT_STATE_DIR:
        dirs.append(configured)
    return dirs


@dataclass(frozen=True)
class DaemonAtStart:
    """What the drill saw of the daemon before it started: the header's notes, and each state
    file's last notice (to tell, at --undo, a notice that came during the drill)."""

    notes: list[str]
    last_notices: dict[str, str | None]


def check_daemons_not_busy(state_dirs: Sequence[str]) -> DaemonAtStart:
    notes = []
    last: dict[str, str | None] = {}
    for state_dir in state_dirs:
        read = read_daemon_state(state_dir)
        notes.append(check_daemon_not_busy(read))
        last[read.path] = _last_notice(read)
    return DaemonAtStart(notes, last)


def _last_notice(read: StateRead) -> str | None:
    if read.data is None:
        return None
    return str(read.data.get("last_notice") or "") or None


def _pid(value: object) -> int:
    """The state file's pid; 0 for anything that is not one (the file is the service user's)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31 else 0


def real_notice_holding_node(
    at_start: DaemonAtStart, reads: Sequence[StateRead], node: JsonObject, drill_notice: str
) -> str | None:
    """Why --undo must leave the node alone (a real notice took it over during the drill), or None."""
    for read in reads:
        if read.missing:
            continue
        if read.data is None:
            return f"the daemon's state cannot be checked ({read.error})"
        last = _last_notice(read)
        if read.data.get("busy"):
            return f"the daemon's state file {read.path} says a real notice is being handled ({last or '?'})"
        if last is not None and last != at_start.last_notices.get(read.path):
            return f"the daemon handled notice {last} during the drill ({read.path})"
    labels = (node.get("metadata") or {}).get("labels") or {}
    on_node = labels.get(keys.LABEL_NOTICE)
    if on_node and on_node != drill_notice:
        return f"the node's {keys.LABEL_NOTICE} label names notice {on_node}, not the drill's {drill_notice}"
    return None


def check_daemon_not_busy(read: StateRead) -> str:
    """Refuse while the daemon handles a real notice. Returns a note for the header."""

    if read.missing:
        return f"no daemon state at {read.path}"
    if read.data is None:
        raise DrillError(f"drill refused: cannot check that the daemon is idle: {read.error}", EX_BUSY)
    if read.data.get("busy"):
        last = read.data.get("last_notice") or "?"
        pid = _pid(read.data.get("pid"))
        alive = process_is_nodeagent(pid)
        note = (
            ""
            if alive is not False
            else f" (daemon pid {pid} is not running; it resumes that notice when it starts)"
        )
        raise DrillError(
            f"drill refused: the daemon's state file {read.path} says a real notice is being handled "
            f"(last notice {last}){note}. Wait until it is done (`nodeagent status`).",
            EX_BUSY,
        )
    return f"daemon state {read.path}: idle ({read.data.get('agent_state', '?')})"


def read_identity(settings):
    """This instance's identity from the configured IMDS; None when IMDS is unreachable."""

    options = ImdsOptions(base_url=settings.imds_url, allow_v1=settings.imds_allow_v1, retry_attempts=2)
    try:
        with ImdsClient(options) as client:
            return client.identity(), ""
    except ImdsError as error:
        return None, str(error)


def identity_from_node(node: JsonObject, name: str):
    """When IMDS is unreachable: the identity the Node itself claims (providerID aws:///<az>/<id>)."""

    spec = node.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    provider = str(spec.get("providerID") or "")
    parts = provider[len("aws:///") :].split("/") if provider.startswith("aws:///") else []
    spot = (
        labels.get("lifecycle") == "Ec2Spot"
        or labels.get("eks.amazonaws.com/capacityType") == "SPOT"
        or labels.get("karpenter.sh/capacity-type") == "spot"
    )
    return InstanceIdentity(
        instance_id=parts[1] if len(parts) == 2 else "i-unknown",
        availability_zone=parts[0] if len(parts) == 2 else "unknown",
        region=None,
        instance_type=labels.get("node.kubernetes.io/instance-type"),
        life_cycle="spot" if spot else "on-demand",
        local_hostname=name,
    )


def snapshot(node: JsonObject) -> NodeSnapshot:

    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    ours = (*keys.OUR_LABELS, keys.LABEL_AGENT, keys.LABEL_VERSION)
    return NodeSnapshot(
        name=str(metadata.get("name", "")),
        unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        labels={key: labels.get(key) for key in ours},
        annotations={key: annotations.get(key) for key in keys.OUR_ANNOTATIONS},
    )
