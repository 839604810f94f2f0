"""The test harness: one node's world (the IMDS and Kubernetes API simulators on loopback, a
kubeconfig with the node's own credentials) and the real daemon run against it.

Every end-to-end tier uses it: tests/daemon, tests/faults, tests/packaging. `Cluster` starts the
simulators, puts pods on the node, starts daemons (`python -m nodeagent`, a subprocess), reads the
API server's request log, and checks what a handled notice must leave behind (`check`).

Negative checks ("nothing more happens") wait for the daemon's next IMDS polls (`wait_polls`),
not for a fixed time: the IMDS simulator logs every request, so the wait ends as soon as the
daemon has looked again, however busy the machine is.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional

from nodeagent.clock import utcnow
from nodeagent.notices import parse_spot_action
from nodeagent.timefmt import parse_rfc3339_utc
from nodeagent_sim.imds import ImdsSim
from nodeagent_sim.kube import Fault, KubeSim
from tests.helpers import Daemon, daemon_env, wait_for

NODE = "ip-10-0-1-2.ec2.internal"
OTHER = "ip-10-0-9-9.ec2.internal"
INSTANCE_ID = "i-0123456789abcdef0"
ZONE = "us-east-1a"
PROVIDER = f"aws:///{ZONE}/{INSTANCE_ID}"
WRITES = ("POST", "PATCH", "PUT", "DELETE")
READY = r"acting on node"
METADATA = "/latest/meta-data/"
SPOT = "spot/instance-action"
REBALANCE = "events/recommendations/rebalance"
SCHEDULED = "events/maintenance/scheduled"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
                   "ALL_PROXY", "all_proxy")

_live_lock = threading.Lock()
_live: List["Cluster"] = []


def live_clusters() -> List["Cluster"]:
    """Clusters made and not finished yet (a session teardown finishes them)."""
    with _live_lock:
        return list(_live)


def to_monotonic(moment: datetime) -> float:
    """A wall-clock moment on the monotonic clock the simulators stamp requests with."""
    return time.monotonic() + (moment - utcnow()).total_seconds()


def imds_polls(imds: ImdsSim, path: str = SPOT) -> int:
    """How many times a daemon has polled this IMDS path (one GET per poll; spot notices by default)."""
    full = METADATA + path
    return sum(1 for _, method, logged, _ in imds.request_log if method == "GET" and logged == full)


def wait_polls(imds: ImdsSim, count: int = 3, timeout_s: float = 20.0, path: str = SPOT,
               message: Callable[[], str] = lambda: "") -> None:
    """Wait until the daemon has polled `path` `count` more times: the wait of every "nothing more
    happens" check. A daemon that acts on what it polled acts before its next poll."""
    start = imds_polls(imds, path)
    wait_for(lambda: imds_polls(imds, path) >= start + count, timeout_s,
             message=lambda: f"IMDS {path} polled {imds_polls(imds, path) - start} of {count} more times; "
                             f"{message()}")


def node_labels(kube: KubeSim, node: str = NODE) -> Dict[str, str]:
    return dict(((kube.node(node) or {}).get("metadata") or {}).get("labels") or {})


@dataclass(frozen=True)
class NoticeRef:
    id: str
    deadline: datetime  # as the notice states it
    deadline_mono: float


class Cluster:
    """One node's world: IMDS, the API server with this node and another, a kubeconfig, daemons.

    `labels` are the Node's labels (the spot label by default); `exec_plugin` writes a kubeconfig
    whose token comes from an exec credential plugin (`exec_options` go to it); `replace_evicted`
    makes the API server's controllers bring evicted ReplicaSet/StatefulSet pods back elsewhere.
    """

    def __init__(self, tmp: Path, *, time_scale: float = 0.02, life_cycle: str = "spot",
                 labels: Optional[Dict[str, str]] = None, replace_evicted: bool = False,
                 exec_plugin: bool = False, imds: Optional[ImdsSim] = None, **exec_options: object):
        self.tmp = tmp
        self.imds = imds or ImdsSim(life_cycle=life_cycle).start()
        self.kube = KubeSim(time_scale=time_scale, replace_evicted=replace_evicted).start()
        self.kube.add_node(NODE, provider_id=PROVIDER, labels={"lifecycle": "Ec2Spot"} if labels is None else labels)
        self.kube.add_node(OTHER, provider_id=f"aws:///{ZONE}/i-0fffffffffffffff0")
        self.kube.add_pod("other-node-web", node=OTHER, owner_kind="ReplicaSet", owner_name="w")
        path = str(tmp / "kubeconfig")
        if exec_plugin:
            self.kubeconfig = self.kube.write_exec_kubeconfig(path, NODE, **exec_options)  # type: ignore[arg-type]
        else:
            self.kubeconfig = self.kube.write_kubeconfig(path, self.kube.add_node_token(NODE))
        self.state_dir = tmp / "state"
        self.workload: List[str] = []  # namespace/name of each evictable pod add_workload put on the node
        self.daemons: List[Daemon] = []
        self.alive_at_end: Optional[bool] = None
        self.exit_codes: List[Optional[int]] = []
        self.finished = False
        with _live_lock:
            _live.append(self)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    # ------------------------------------------------------------------ workload

    def add_workload(self, count: int = 6, grace_s: int = 30, prefix: str = "web") -> None:
        """`count` ReplicaSet pods, a critical pod, plus the pods a drain must leave alone
        (a DaemonSet pod, a mirror pod, a finished Job's pod)."""
        for i in range(count):
            self.kube.add_pod(f"{prefix}-{i}", node=NODE, owner_kind="ReplicaSet", owner_name=prefix,
                              labels={"app": prefix}, grace_s=grace_s)
        self.kube.add_pod("coredns-0", "kube-system", node=NODE, owner_kind="ReplicaSet", owner_name="coredns",
                          priority_class="system-cluster-critical", grace_s=grace_s)
        self.workload += [f"default/{prefix}-{i}" for i in range(count)] + ["kube-system/coredns-0"]
        self.kube.add_pod("cni-agent", "kube-system", node=NODE, owner_kind="DaemonSet", owner_name="aws-node",
                          priority_class="system-node-critical")
        self.kube.add_pod("static-probe", "kube-system", node=NODE, mirror=True)
        self.kube.add_pod("job-done", node=NODE, owner_kind="Job", owner_name="j", phase="Succeeded")

    def evictable_left(self) -> List[str]:
        """namespace/name of every pod on the node a drain must evict (not a DaemonSet's, not a
        mirror pod, not finished)."""
        left = []
        for pod in self.kube.pods(node=NODE):
            meta = pod["metadata"]
            if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
                continue
            if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
                continue
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            left.append(f"{meta['namespace']}/{meta['name']}")
        return left

    def node(self) -> dict:
        return self.kube.node(NODE) or {}

    def labels(self) -> Dict[str, str]:
        return node_labels(self.kube)

    # ------------------------------------------------------------------ notices

    def spot(self, in_s: float, action: str = "terminate") -> NoticeRef:
        """A spot interruption notice appears now; its time is in_s from now (whole seconds)."""
        when = (utcnow() + timedelta(seconds=in_s)).replace(microsecond=0)
        body = {"action": action, "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.imds.set_spot(body)
        notice = parse_spot_action(json.dumps(body), utcnow())
        return NoticeRef(notice.id, when, to_monotonic(when))

    def wait_polls(self, count: int = 3, timeout_s: float = 20.0, path: str = SPOT) -> None:
        """Let the running daemon poll IMDS `count` more times (see `wait_polls`)."""
        wait_polls(self.imds, count, timeout_s, path, message=self.output)

    # ------------------------------------------------------------------ the daemon

    def settings(self, **keys: str) -> Dict[str, str]:
        """The daemon's settings against this cluster (KEY=value without the NODEAGENT_ prefix)."""
        base = dict(IMDS_URL=self.imds.url, KUBECONFIG=self.kubeconfig, POLL_INTERVAL="0.5s",
                    POLL_INTERVAL_REBALANCE="0.5s", POLL_INTERVAL_SCHEDULED="0.5s",
                    DRAIN_MARGIN="3s", LOG_LEVEL="debug", STATE_DIR=str(self.state_dir),
                    EXEC_PLUGIN_TIMEOUT="2s")
        base.update(keys)
        return base

    def env(self, **keys: str) -> Dict[str, str]:
        """The whole environment of a `nodeagent` process against this cluster."""
        env = daemon_env(self.tmp, **self.settings(**keys))
        env["TMPDIR"] = str(self.tmp)  # the drill's own state directory lands in the test's directory
        for name in PROXY_VARIABLES:
            env.pop(name, None)  # every server is on loopback; a machine-wide proxy must not apply
        return env

    def start_agent(self, ready: Optional[str] = READY, python: Optional[str] = None,
                    env: Optional[Dict[str, str]] = None, ready_timeout_s: float = 30, **keys: str) -> Daemon:
        """Start `nodeagent run` (with `env`, or this cluster's env plus `keys`) and wait for the
        line `ready` (None: do not wait)."""
        env = self.env(**keys) if env is None else env
        daemon = Daemon(env) if python is None else Daemon(env, python=python)
        self.daemons.append(daemon)
        daemon.start()
        if ready:
            daemon.wait_line(ready, timeout_s=ready_timeout_s)
        return daemon

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    def wait_startup_writes(self, daemon: Optional[Daemon] = None, timeout_s: float = 20.0) -> None:
        """Until startup's own node writes are over: the presence labels and the taint probe come
        before "ready to respond", the agent label is retried until it holds. A fault injected
        on node writes after this meets the response, not startup."""
        daemon = daemon or self.daemon
        daemon.wait_line(r"ready to respond", timeout_s=timeout_s)
        assert wait_for(lambda: self.labels().get("nodeagent.io/agent") == "watching", timeout_s), daemon.output()

    def output(self) -> str:
        """Every daemon's output, in the order they ran."""
        return "\n---- next run ----\n".join(d.output() for d in self.daemons)

    def find(self, pattern: str) -> List[str]:
        """Lines matching pattern, over every run of the daemon."""
        return [line.text for daemon in self.daemons for line in daemon.find(pattern)]

    def kill9(self) -> None:
        """kill -9 the running daemon (safe to call from a simulator hook)."""
        process = self.daemon.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def agent_deadline(self, notice_id: str) -> datetime:
        """The deadline the agent logged for the notice (a past notice time is floored)."""
        lines = self.find(rf"notice {re.escape(notice_id)} \(.*deadline (\S+)")
        assert lines, f"the agent never logged notice {notice_id}"
        found = re.search(r"deadline (\S+)", lines[0])
        assert found is not None
        return parse_rfc3339_utc(found.group(1))

    def finish(self) -> "Cluster":
        """Record whether the daemon is alive, stop it (SIGTERM), stop the simulators."""
        if self.finished:
            return self
        self.finished = True
        try:
            if self.daemons:
                self.alive_at_end = self.daemon.alive()
                for daemon in self.daemons:
                    if daemon.alive():
                        self.exit_codes.append(daemon.stop(signal.SIGTERM, timeout_s=20))
                    else:
                        self.exit_codes.append(daemon.process.returncode if daemon.process else None)
        finally:
            for daemon in self.daemons:
                daemon.kill()
            self.kube.stop()
            self.imds.stop()
            with _live_lock:
                if self in _live:
                    _live.remove(self)
        return self

    # ------------------------------------------------------------------ the request log

    def writes(self, path_regex: str = "") -> list:
        """Requests that could change something (SelfSubjectReview is a read in disguise)."""
        rx = re.compile(path_regex)
        return [r for r in list(self.kube.requests)
                if r.method in WRITES and "selfsubjectreviews" not in r.path and rx.search(r.path)]

    def writes_after(self, moment_mono: float) -> list:
        return [r for r in self.writes() if r.t_monotonic > moment_mono]

    def evictions(self, name: str = "") -> list:
        return [r for r in self.writes(r"/eviction$") if name in r.path]

    def repeated_evictions(self) -> List[str]:
        """Pods evicted again: an eviction accepted although it was sent after an earlier one had
        been accepted. (A request in flight when the agent died or the API went away may overlap
        the retry; a retry of an eviction whose answer was lost gets 404: neither is a repeat.)"""
        accepted_at: Dict[str, float] = {}
        repeated = set()
        for request in sorted(self.evictions(), key=lambda r: r.t_monotonic):
            if request.status not in (200, 201):
                continue
            if request.path in accepted_at and request.t_monotonic > accepted_at[request.path]:
                repeated.add(request.path)
            done = request.t_monotonic + request.duration_s
            accepted_at[request.path] = min(accepted_at.get(request.path, done), done)
        return sorted(repeated)

    def wait_answered(self, fault: Fault, since_mono: float, timeout_s: float = 20.0) -> None:
        """Wait until the server has answered every request that `fault` (a KubeSim.inject result,
        injected at since_mono) held: it carries out a held request even when the client is gone."""
        def answered() -> bool:
            done = [r for r in list(self.kube.requests)
                    if r.t_monotonic >= since_mono and fault.matches(r.method, r.path)]
            return len(done) >= fault.hits

        wait_for(answered, timeout_s, message=lambda: f"{fault.hits} requests held")

    def state(self) -> Optional[dict]:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ what a handled notice leaves

    def check(self, notice: Optional[NoticeRef], *, fault_log: str, drained: bool = True,
              alive: bool = True, deadline: Optional[datetime] = None, phase: Optional[str] = "done",
              handled: int = 1) -> None:
        """The five checks of a fault case (call after finish()):

        1. the daemon is alive (unless the case stopped it on purpose: alive=False);
        2. the notice was handled once: one "notice <id> (" line over every run of the daemon, one
           record for it in the state file, and no pod evicted twice;
        3. no evictable pod is left (drained=False where the API was not there for the pods' grace);
        4. nothing was written after the deadline;
        5. a log line matches `fault_log`.
        """
        assert self.finished, "call finish() first"
        output = self.output()
        if alive:
            assert self.alive_at_end, f"the daemon died:\n{output}"
            assert self.exit_codes[-1] == 0, f"exit code {self.exit_codes[-1]}:\n{output}"
        assert self.find(fault_log), f"no log line matching {fault_log!r}:\n{output}"
        if notice is None:
            assert not self.writes(r"/nodes/|/pods/"), "acted although there was no notice"
            return
        seen = self.find(rf"notice {re.escape(notice.id)} \(.*; response: ")
        assert len(seen) == handled, f"notice logged as new {len(seen)} times:\n{output}"
        assert not self.repeated_evictions(), f"evicted again: {self.repeated_evictions()}"
        if phase is not None:
            state = self.state()
            assert state is not None, "no state file"
            records = [r for r in state["notices"].values() if r["id"] == notice.id]
            assert len(records) == 1 and records[0]["phase"] == phase, records
        if drained:
            assert self.evictable_left() == [], f"left: {self.evictable_left()}\n{output}"
        moment = deadline or notice.deadline
        late = self.writes_after(to_monotonic(moment))
        assert not late, "written after the deadline: " + ", ".join(
            f"{r.method} {r.path} ({r.t_monotonic - to_monotonic(moment):+.2f}s)" for r in late)
