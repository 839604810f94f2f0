"""`nodeagent drill`: rehearse a notice on this node through the real pipeline.

    nodeagent drill [--kind spot-itn|rebalance|scheduled|asg] [--in 120s] [--dry-run] [--yes] [--undo]

The real Agent and KubeResponder, the real kubeconfig and cluster, and the reporters the config
asks for (Events, webhook: marked "[drill]"), against a one-shot IMDS responder on 127.0.0.1
(nodeagent.drill_imds) that presents this instance's real identity (read first from IMDS_URL, so
the providerID check passes) and serves the chosen notice. It has no control API: nothing outside
this process can change what it serves. Like an AWS FIS spot interruption, but local and instant.

Safety:
- The drill's state lives in a temporary STATE_DIR; the daemon's state file is only read.
- It refuses while the daemon's state file says `busy` (a real notice is being handled). The file
  it reads is always the unit's, /var/lib/nodeagent/state.json (StateDirectory=), plus STATE_DIR's
  when the config names another directory: pointing NODEAGENT_STATE_DIR, NODEAGENT_CONFIG_DIR or
  `--set STATE_DIR=` elsewhere adds a place to look, never removes the real one. A user who may
  not read it (the directory is the service user's, 0750) is refused (exit 75): run it as root.
- `--dry-run` turns on DRY_RUN: every write is server-side dryRun=All, so nothing changes.
  Without `--dry-run` (or DRY_RUN=true in the config) it refuses unless `--yes` is given.
- `--undo` puts the node back as the drill found it at the end: schedulability, and our labels
  and annotations (nodeagent.io/*, exclude-from-external-load-balancers). Unless a real notice
  took the node over during the drill: the daemon's state is read again (busy, or a notice it had
  not seen when the drill started) and so is the Node (a nodeagent.io/notice-id label naming
  another notice than the drill's); then the node is left as it is, and the drill says why.
- Metrics go to `<drill dir>/nodeagent.prom`, not to the daemon's METRICS_TEXTFILE, unless
  `--set METRICS_TEXTFILE=...` names a file for the drill.

Exit status: 0 when the response finished as configured (a drain with no evictable pod left, or
a cordon); 1 when it did not, or the drill could not start; 2 refused (no --yes, bad --in);
75 refused because the daemon is handling a real notice; 78 bad config.

Why one module of this size: it has one job, running one rehearsal from start to end (settings,
the pre-flight read of the node, the agent and reporters, --undo, the summary), and a third of it
is this text. What it checks and reads before anything runs is drill_checks.py; the one-shot IMDS
responder is drill_imds.py.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nodeagent import config, decide, terminal
from nodeagent.agent import Agent
from nodeagent.clock import utcnow
from nodeagent.drill_checks import (
    DaemonAtStart,
    DrillError,
    NodeSnapshot,
    check_daemons_not_busy,
    daemon_state_dirs,
    identity_from_node,
    read_identity,
    real_notice_holding_node,
    snapshot,
)
from nodeagent.drill_imds import DrillIdentity, DrillImds, DrillNotice
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.errors import KubeError
from nodeagent.kube.identity import find_node
from nodeagent.kube.node import NodeActions, parse_taint
from nodeagent.kube.pod_rules import DrainOptions, select_pods
from nodeagent.kube.responder import KubeResponder
from nodeagent.ports import Reporter, quietly
from nodeagent.report import build_reporters, flush_reporters
from nodeagent.report.events import EventsReporter
from nodeagent.state import read_daemon_state
from nodeagent.timeline import NullNotifier, Timeline, TimelineHandler, wait_until

EX_USAGE = 2
KINDS = ("spot-itn", "rebalance", "scheduled", "asg")
RESPONSE_KEY = {
    "spot-itn": "ON_SPOT_INTERRUPTION",
    "rebalance": "ON_REBALANCE",
    "scheduled": "ON_SCHEDULED_EVENT",
    "asg": "ON_ASG_TERMINATION",
}
TERMINAL_PHASES = ("done", "expired", "cancelled", "skipped")
READY_TIMEOUT_S = 45.0


def _say(text: str = "") -> None:
    terminal.say(text)


# ------------------------------------------------------------------ the drill


@dataclass
class DrillPlan:
    kind: str
    in_s: float
    dry_run: bool
    undo: bool
    workdir: str


def drill_settings(base, flags: dict[str, str], plan: DrillPlan, imds_url: str, node_name: str):
    """The daemon's config with the drill's overrides (CLI flags still win for what they name)."""
    overrides = {
        "IMDS_URL": imds_url,
        "STATE_DIR": os.path.join(plan.workdir, "state"),
        "NODE_NAME": node_name,
        "POLL_INTERVAL": "0.5s",
        # A rehearsal never answers the real Auto Scaling group: completing its lifecycle action
        # would release this instance.
        "ASG_LIFECYCLE_HOOK": "",
    }
    if plan.dry_run:
        overrides["DRY_RUN"] = "true"
    if plan.kind in ("rebalance", "asg"):
        overrides["DRAIN_WINDOW"] = f"{plan.in_s:g}s"
    if base.sources.get("METRICS_TEXTFILE") != "flag":
        overrides["METRICS_TEXTFILE"] = os.path.join(plan.workdir, "nodeagent.prom")
    merged = dict(flags)
    merged.update(overrides)
    return config.load(os.environ, merged)


def main_drill(args) -> int:
    flags = config.parse_set_flags(args.set)
    base = config.load(os.environ, flags)
    try:
        return run_drill(args, base, flags)
    except DrillError as error:
        terminal.say(str(error), sys.stderr)
        return error.code


def run_drill(args, base, flags: dict[str, str]) -> int:
    kind = args.kind
    try:
        in_s = config.parse_duration(args.in_)
    except ValueError as error:
        raise DrillError(f"drill: --in: {error}", EX_USAGE) from None
    if in_s < 1:
        raise DrillError("drill: --in must be at least 1s", EX_USAGE)
    dry_run = bool(args.dry_run or base.dry_run)
    if not dry_run and not args.yes:
        raise DrillError(
            "drill refused: without --dry-run this really cordons and drains this node "
            "(pods are evicted). Re-run with --yes to do it, or with --dry-run to rehearse without "
            "changing anything.",
            EX_USAGE,
        )
    if decide.response_for(base, kind) == "ignore":
        raise DrillError(
            f"drill: {RESPONSE_KEY[kind]}=ignore, so the agent would ignore a {kind} notice; "
            f"nothing to rehearse",
            EX_USAGE,
        )
    daemon = check_daemons_not_busy(daemon_state_dirs(base.state_dir))

    workdir = tempfile.mkdtemp(prefix="nodeagent-drill-")
    plan = DrillPlan(kind=kind, in_s=in_s, dry_run=dry_run, undo=bool(args.undo), workdir=workdir)
    timeline = Timeline(time.monotonic())
    identity, imds_problem = read_identity(base)
    preflight = _Preflight(base, identity, imds_problem)
    try:
        preflight.find_node()
        return _run(plan, base, flags, preflight, timeline, daemon, TimelineHandler)
    finally:
        preflight.close()


class _Preflight:
    """The node, found and checked before the agent starts; its API client also does --undo."""

    def __init__(self, base, identity, imds_problem: str):
        self.base = base
        self.identity = identity
        self.imds_problem = imds_problem
        self._api: KubeApi | None = None
        self.node_name = ""
        self.node_how = ""
        self.before: NodeSnapshot | None = None

    @property
    def api(self) -> KubeApi:
        """The API client find_node made (everything after it uses that one)."""
        assert self._api is not None, "find_node() first"
        return self._api

    def find_node(self) -> None:

        if self.identity is None and not self.base.node_name:
            raise DrillError(
                f"drill: IMDS at {self.base.imds_url} is unreachable ({self.imds_problem}), so this "
                "instance's identity is unknown. Set NODE_NAME (e.g. --set NODE_NAME=<this node>) to drill "
                "with the identity the Node's providerID claims."
            )
        try:
            self._api = KubeApi(
                KubeOptions(
                    kubeconfig=self.base.kubeconfig, exec_timeout_s=self.base.exec_plugin_timeout, pool_size=4
                )
            )
            self.api.warm_up()
            node = find_node(
                self.api,
                self.base.node_name,
                self.identity.instance_id if self.identity else None,
                self.identity.availability_zone if self.identity else None,
            )
            raw = self.api.request("GET", f"/api/v1/nodes/{node.name}")
        except KubeError as error:
            raise DrillError(
                f"drill: cannot reach this node through {self.base.kubeconfig}: {error}"
            ) from None
        self.node_name, self.node_how = node.name, node.how
        self.before = snapshot(raw)
        if self.identity is None:
            self.identity = identity_from_node(raw, node.name)

    def pods(self) -> list[JsonObject]:
        listing = self.api.request(
            "GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={self.node_name}")]
        )
        return list(listing.get("items") or [])

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _evictable(pods: list[JsonObject], settings) -> list[str]:

    options = DrainOptions(
        deadline=utcnow(),
        margin_s=0,
        force_at_deadline=False,
        evict_local_storage=settings.evict_local_storage,
        evict_unmanaged=settings.evict_unmanaged,
        last_tier_classes=settings.last_tier(),
    )
    return [pod.key for pod in select_pods(pods, options).evict]


def _run(
    plan: DrillPlan, base, flags, preflight: _Preflight, timeline, daemon: DaemonAtStart, handler_class
) -> int:

    ident = preflight.identity
    sim = DrillImds(
        DrillIdentity(
            instance_id=ident.instance_id or "i-unknown",
            availability_zone=ident.availability_zone or "unknown",
            region=ident.region or "unknown",
            instance_type=ident.instance_type or "unknown",
            life_cycle=ident.life_cycle
            if ident.life_cycle in ("spot", "on-demand", "scheduled")
            else "on-demand",
            local_hostname=ident.local_hostname or preflight.node_name,
        ),
        DrillNotice(plan.kind, plan.in_s),
    ).start()
    try:
        settings = drill_settings(base, flags, plan, sim.url, preflight.node_name)
        pods_before = preflight.pods()
        evictable_before = _evictable(pods_before, settings)
        response = decide.response_for(settings, plan.kind)
        _say(
            f"nodeagent drill: {plan.kind} notice, deadline in {plan.in_s:g}s, on node {preflight.node_name}"
            f" (from {preflight.node_how})"
        )
        mode = (
            "DRY RUN: server-side dryRun=All, nothing changes"
            if plan.dry_run
            else "REAL: the node is cordoned and drained"
        )
        _say(
            f"  mode: {mode}"
            f"; response: {response} ({RESPONSE_KEY[plan.kind]}){'; --undo at the end' if plan.undo else ''}"
        )
        where = (
            f"from IMDS {base.imds_url}"
            if not preflight.imds_problem
            else f"from the Node's providerID (IMDS unreachable: {preflight.imds_problem})"
        )
        _say(
            f"  instance {ident.instance_id} in {ident.availability_zone}, {ident.life_cycle} ({where});"
            f" drill IMDS {sim.url}"
        )
        _say(
            f"  API {preflight.api.host}; {len(pods_before)} pods on the node, "
            f"{len(evictable_before)} evictable"
        )
        _say(f"  drill state {settings.state_dir}; {'; '.join(daemon.notes)} (untouched)")
        _say()

        handler = handler_class(timeline)
        root = logging.getLogger("nodeagent")
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        root.propagate = False
        responder = KubeResponder(settings)
        reporters = build_reporters(settings, responder, kube=responder, drill=True)
        agent = Agent(settings, responder, notifier=NullNotifier(timeline), reporters=reporters)
        runner = threading.Thread(target=agent.run, name="agent", daemon=True)
        runner.start()
        record = None
        try:
            if not wait_until(lambda: agent.responder_ready, READY_TIMEOUT_S):
                timeline.say("drill", f"the agent did not reach Kubernetes within {READY_TIMEOUT_S:g}s")
                return 1
            timeline.say("imds", f"{plan.kind} notice posted (deadline in {plan.in_s:g}s)")
            sim.arm()
            if not wait_until(lambda: _record(agent) is not None, 15):
                timeline.say("drill", "the agent did not see the notice")
                return 1
            wait_until(lambda: _record(agent).phase in TERMINAL_PHASES, plan.in_s + 15)
            record = _record(agent)
            timeline.say("drill", f"response ended: phase {record.phase}; {record.outcome or 'no outcome'}")
            flush_reporters(reporters, 30)
            if plan.undo:
                _undo(preflight, settings, record, reporters, timeline, daemon)
        finally:
            agent.request_stop()
            runner.join(timeout=40)
        return _summary(plan, settings, preflight, record, reporters)
    finally:
        sim.stop()


def _record(agent):
    return next((r for r in list(agent.state.notices.values())), None)


def _undo(
    preflight: _Preflight, settings, record, reporters: Sequence[Reporter], timeline, daemon: DaemonAtStart
) -> None:
    """Put the node back as the drill found it: schedulability, our labels and annotations; but
    never a node that a real notice took over while the drill ran (the daemon cordoned it)."""

    before = preflight.before
    assert before is not None
    try:
        node = preflight.api.request("GET", f"/api/v1/nodes/{preflight.node_name}")
    except KubeError as error:
        timeline.say("drill", f"--undo skipped: cannot read node {preflight.node_name} ({error})")
        return
    reads = [read_daemon_state(os.path.dirname(path)) for path in daemon.last_notices]
    held = real_notice_holding_node(daemon, reads, node, record.id)
    if held:
        timeline.say("drill", f"--undo skipped: {held}; the node is left as it is")
        return
    actions = NodeActions(preflight.api, preflight.node_name, dry_run=settings.dry_run)
    try:
        changed = actions.set_unschedulable(before.unschedulable)
        actions.label(dict(before.labels), dict(before.annotations))
        taint = parse_taint(settings.taint, record.kind, record.id)
        if taint:
            actions.remove_taint(taint[0])  # only a privileged kubeconfig could have set it
    except KubeError as error:
        timeline.say(
            "drill",
            f"--undo failed: {error}; the node may stay cordoned (kubectl uncordon {preflight.node_name})",
        )
        return
    if settings.dry_run:
        text = "nothing to undo (dry run); the restore requests were sent with dryRun=All too"
    elif before.unschedulable:
        text = "left cordoned: it was cordoned before the drill; our labels restored"
    else:
        text = "uncordoned; our labels restored" if changed else "our labels restored (it was not cordoned)"
    timeline.say("drill", f"--undo: {text}")
    if not before.unschedulable:
        for reporter in reporters:
            quietly(reporter.step, record, "Uncordoned", "uncordoned: drill undone")

        flush_reporters(reporters, 10)


def _summary(plan: DrillPlan, settings, preflight: _Preflight, record, reporters: Sequence[Reporter]) -> int:
    _say()
    _say("drill result")
    if record is None:
        _say("  no notice was handled")
        return 1
    try:
        pods_after = preflight.pods()
        node = preflight.api.request("GET", f"/api/v1/nodes/{preflight.node_name}")
    except Exception as error:
        _say(f"  could not read the node afterwards: {error}")
        return 1
    # Only a real drain is expected to empty the node; a cordon or a dry run leaves the pods.
    left = _evictable(pods_after, settings) if record.response == "drain" and not plan.dry_run else []
    labels = (node.get("metadata") or {}).get("labels") or {}
    ours = ", ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k.startswith("nodeagent.io/") or "exclude-from" in k
    )
    _say(f"  notice {record.id}: response {record.response}, phase {record.phase}")
    _say(f"  outcome: {record.outcome or '-'}")
    _say(
        f"  node {preflight.node_name}: unschedulable={bool((node.get('spec') or {}).get('unschedulable'))}; "
        f"labels: {ours or 'none of ours'}"
    )
    if record.response == "cordon":
        left_text = "not drained (the response is a cordon)"
    elif record.response != "drain":
        left_text = "not drained"
    elif plan.dry_run:
        left_text = "not evicted (dry run)"
    else:
        left_text = f"evictable pods left: {len(left)}{' -> ' + ', '.join(left[:10]) if left else ''}"
    _say(f"  pods on the node now: {len(pods_after)}; {left_text}")

    events = next((r for r in reporters if isinstance(r, EventsReporter)), None)
    if events is not None:
        _say(
            f"  Events: {events.sent} written{' (dryRun=All)' if plan.dry_run else ''}; "
            f"kubectl get events --field-selector involvedObject.name={preflight.node_name}"
        )
    _say(f"  state: {os.path.join(settings.state_dir, 'state.json')}")
    if settings.metrics_textfile:
        _say(f"  metrics: {settings.metrics_textfile}")
    ok = record.phase == "done" and not record.failed and not record.left and not left
    if record.response == "drain":
        ok = ok and record.drain_finished is not None
    elif record.response == "cordon":
        ok = ok and (record.outcome == "cordoned")
    else:
        ok = False
        _say(f"  the agent did not act: {record.outcome}")
        if record.response == "gated":
            _say(
                "  (that is what a real notice would get here; "
                "--set SPOT_GATE=off rehearses the drain anyway)"
            )
    _say(f"  drill {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1
