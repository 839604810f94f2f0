"""Shared machinery of the fault-matrix suite (issue 7).

Every case runs the real daemon (`python -m nodeagent run`, a subprocess) against the IMDS and
Kubernetes API simulators (real sockets, HTTPS, the node's own credentials), injects one fault,
and then checks the same five things (`Cluster.check`):

1. the daemon is alive, or was stopped/restarted on purpose by the case;
2. the notice was handled once: one "notice <id> (" line over every run of the daemon, one
   record for it in the state file, and no pod evicted twice;
3. no evictable pod is left, wherever the API was available for the pods' grace before the deadline;
4. nothing was done after the deadline: no write (POST/PATCH/PUT/DELETE) in the KubeSim request
   log that arrived after it;
5. a clear log line names the fault.

Each case is a *scenario* function (drives the fault, returns the finished `Cluster`) and a test
that checks it. Scenarios that must sit out long outages are marked `@pytest.mark.background(scenario=fn)`:
they start on threads when the first fault test starts and their tests run last, so the long waits
overlap the short cases. Each scenario owns its simulators, daemon and directory, so they cannot
disturb each other.

docs/reliability.md (the fault matrix) is generated from the tests' docstrings (`Case:`/`Outcome:`
lines) by scripts/reliability-table.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from nodeagent.clock import utcnow
from nodeagent.notices import parse_spot_action
from nodeagent.timefmt import parse_rfc3339_utc
from nodeagent_sim.imds import ImdsSim
from nodeagent_sim.kube import KubeSim
from tests.helpers import Daemon, daemon_env, wait_for

NODE = "ip-10-0-1-2.ec2.internal"
OTHER = "ip-10-0-9-9.ec2.internal"
PROVIDER = "aws:///us-east-1a/i-0123456789abcdef0"
WRITES = ("POST", "PATCH", "PUT", "DELETE")
READY = r"acting on node"

_live_lock = threading.Lock()
_live: List["Cluster"] = []


def to_monotonic(moment: datetime) -> float:
    """A wall-clock moment on the monotonic clock the simulators stamp requests with."""
    return time.monotonic() + (moment - utcnow()).total_seconds()


@dataclass(frozen=True)
class NoticeRef:
    id: str
    deadline: datetime  # as the notice states it
    deadline_mono: float


class Cluster:
    """One node's world: IMDS, the API server with this node and another, a kubeconfig, daemons."""

    def __init__(self, tmp: Path, *, time_scale: float = 0.02, exec_plugin: bool = False,
                 imds: Optional[ImdsSim] = None, **exec_options: object):
        self.tmp = tmp
        self.imds = imds or ImdsSim().start()
        self.kube = KubeSim(time_scale=time_scale).start()
        self.kube.add_node(NODE, provider_id=PROVIDER, labels={"lifecycle": "Ec2Spot"})
        self.kube.add_node(OTHER, provider_id="aws:///us-east-1a/i-0fffffffffffffff0")
        self.kube.add_pod("other-node-web", node=OTHER, owner_kind="ReplicaSet", owner_name="w")
        path = str(tmp / "kubeconfig")
        if exec_plugin:
            self.kubeconfig = self.kube.write_exec_kubeconfig(path, NODE, **exec_options)  # type: ignore[arg-type]
        else:
            self.kubeconfig = self.kube.write_kubeconfig(path, self.kube.add_node_token(NODE))
        self.state_dir = tmp / "state"
        self.daemons: List[Daemon] = []
        self.alive_at_end: Optional[bool] = None
        self.exit_codes: List[Optional[int]] = []
        self.finished = False
        with _live_lock:
            _live.append(self)

    # ------------------------------------------------------------------ workload

    def add_workload(self, count: int = 6, grace_s: int = 30, prefix: str = "web") -> None:
        """`count` ReplicaSet pods, a critical pod, plus the pods a drain must leave alone."""
        for i in range(count):
            self.kube.add_pod(f"{prefix}-{i}", node=NODE, owner_kind="ReplicaSet", owner_name=prefix,
                              labels={"app": prefix}, grace_s=grace_s)
        self.kube.add_pod("coredns-0", "kube-system", node=NODE, owner_kind="ReplicaSet", owner_name="coredns",
                          priority_class="system-cluster-critical", grace_s=grace_s)
        self.kube.add_pod("cni-agent", "kube-system", node=NODE, owner_kind="DaemonSet", owner_name="aws-node",
                          priority_class="system-node-critical")
        self.kube.add_pod("static-probe", "kube-system", node=NODE, mirror=True)
        self.kube.add_pod("job-done", node=NODE, owner_kind="Job", owner_name="j", phase="Succeeded")

    def evictable_left(self) -> List[str]:
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

    # ------------------------------------------------------------------ notices

    def spot(self, in_s: float, action: str = "terminate") -> NoticeRef:
        """A spot interruption notice appears now; its time is in_s from now (whole seconds)."""
        when = (utcnow() + timedelta(seconds=in_s)).replace(microsecond=0)
        body = {"action": action, "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.imds.set_spot(body)
        notice = parse_spot_action(json.dumps(body), utcnow())
        return NoticeRef(notice.id, when, to_monotonic(when))

    # ------------------------------------------------------------------ the daemon

    def settings(self, **keys: str) -> Dict[str, str]:
        base = dict(IMDS_URL=self.imds.url, KUBECONFIG=self.kubeconfig, POLL_INTERVAL="0.5s",
                    POLL_INTERVAL_REBALANCE="0.5s", POLL_INTERVAL_SCHEDULED="0.5s",
                    DRAIN_MARGIN="3s", LOG_LEVEL="debug", STATE_DIR=str(self.state_dir),
                    EXEC_PLUGIN_TIMEOUT="2s")
        base.update(keys)
        return base

    def start_agent(self, ready: Optional[str] = READY, python: Optional[str] = None, **keys: str) -> Daemon:
        env = daemon_env(self.tmp, **self.settings(**keys))
        daemon = Daemon(env) if python is None else Daemon(env, python=python)
        self.daemons.append(daemon)
        daemon.start()
        if ready:
            daemon.wait_line(ready, timeout_s=30)
        return daemon

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

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
        return parse_rfc3339_utc(re.search(r"deadline (\S+)", lines[0]).group(1))

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

    def state(self) -> Optional[dict]:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ the five checks

    def check(self, notice: Optional[NoticeRef], *, fault_log: str, drained: bool = True,
              alive: bool = True, deadline: Optional[datetime] = None, phase: Optional[str] = "done",
              handled: int = 1) -> None:
        """The five assertions of issue 7 (call after finish())."""
        assert self.finished, "call finish() first"
        output = "\n---- next run ----\n".join(d.output() for d in self.daemons)
        # 1. alive (or stopped on purpose: the case says alive=False and checks the exit itself)
        if alive:
            assert self.alive_at_end, f"the daemon died:\n{output}"
            assert self.exit_codes[-1] == 0, f"exit code {self.exit_codes[-1]}:\n{output}"
        # 5. a clear log line for the fault
        assert self.find(fault_log), f"no log line matching {fault_log!r}:\n{output}"
        if notice is None:
            assert not self.writes(r"/nodes/|/pods/"), "acted although there was no notice"
            return
        # 2. handled once
        seen = self.find(rf"notice {re.escape(notice.id)} \(.*; response: ")
        assert len(seen) == handled, f"notice logged as new {len(seen)} times:\n{output}"
        assert not self.repeated_evictions(), f"evicted again: {self.repeated_evictions()}"
        if phase is not None:
            state = self.state()
            assert state is not None, "no state file"
            records = [r for r in state["notices"].values() if r["id"] == notice.id]
            assert len(records) == 1 and records[0]["phase"] == phase, records
        # 3. no evictable pod left (when the API was there for the pods' grace before the deadline)
        if drained:
            assert self.evictable_left() == [], f"left: {self.evictable_left()}\n{output}"
        # 4. nothing after the deadline
        moment = deadline or notice.deadline
        late = self.writes_after(to_monotonic(moment))
        assert not late, "written after the deadline: " + ", ".join(
            f"{r.method} {r.path} ({r.t_monotonic - to_monotonic(moment):+.2f}s)" for r in late)


def make_cluster(tmp: Path, **options: object) -> Cluster:
    return Cluster(tmp, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- an unwritable state dir


def readonly_python(tmp: Path, state_dir: Path) -> Optional[str]:
    """An interpreter wrapper that runs the daemon with state_dir read-only (EROFS) in a private
    mount namespace. None when that is not possible here (not root, no unshare): then the state
    dir is made unwritable by mode (non-root) or replaced by a plain file (ENOTDIR)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and shutil.which("unshare"):
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                               capture_output=True)
        if probe.returncode == 0:
            wrapper = tmp / "python-readonly-state"
            wrapper.write_text(
                "#!/bin/sh\n"
                f"exec unshare --mount --propagation private sh -c '"
                f"mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" \"$0\" && exec \"$@\"' "
                f"{state_dir} {sys.executable} \"$@\"\n")
            wrapper.chmod(0o755)
            return str(wrapper)
    if os.geteuid() != 0:
        state_dir.chmod(0o555)
    else:
        shutil.rmtree(state_dir)
        state_dir.write_text("not a directory\n")
    return None


# ---------------------------------------------------------------------- background scenarios


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "background(scenario=fn): run fn(tmp_path) on a thread from the start of the "
                   "fault suite; the test checks what it returns")


def _is_fault_test(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).parent == Path(__file__).parent


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: List[pytest.Item]) -> None:
    """Background cases run last among the fault tests, so their waits overlap the others."""
    faults = [i for i in items if _is_fault_test(i)]
    if not faults:
        return
    first = items.index(faults[0])
    rest = [i for i in items if not _is_fault_test(i)]
    ordered = ([i for i in faults if not i.get_closest_marker("background")]
               + [i for i in faults if i.get_closest_marker("background")])
    items[:] = rest[:first] + ordered + rest[first:]


class Background:
    def __init__(self) -> None:
        self._futures: Dict[Callable[..., Cluster], concurrent.futures.Future] = {}
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def start(self, scenarios: List[Callable[..., Cluster]], make_tmp: Callable[[str], Path]) -> None:
        if not scenarios:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(scenarios),
                                                           thread_name_prefix="fault-scenario")
        for scenario in scenarios:
            self._futures[scenario] = self._pool.submit(scenario, make_tmp(scenario.__name__))

    def result(self, scenario: Callable[..., Cluster], timeout_s: float = 400) -> Cluster:
        return self._futures[scenario].result(timeout=timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            concurrent.futures.wait(list(self._futures.values()), timeout=400)
            self._pool.shutdown(wait=False)


@pytest.fixture(scope="session", autouse=True)
def background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    runner = Background()
    scenarios = []
    for item in request.session.items:
        marker = item.get_closest_marker("background") if _is_fault_test(item) else None
        if marker is not None and marker.kwargs["scenario"] not in scenarios:
            scenarios.append(marker.kwargs["scenario"])
    runner.start(scenarios, lambda name: tmp_path_factory.mktemp(name[:40]))
    yield runner
    runner.close()
    with _live_lock:
        leftovers = list(_live)
    for cluster in leftovers:
        cluster.finish()


def run_background(background: Background, request: pytest.FixtureRequest) -> Cluster:
    marker = request.node.get_closest_marker("background")
    return background.result(marker.kwargs["scenario"])


@pytest.fixture
def cluster_in(tmp_path):
    """make(**options) -> Cluster; every cluster made is finished at teardown."""
    made: List[Cluster] = []

    def make(**options: object) -> Cluster:
        cluster = make_cluster(tmp_path, **options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.finish()


__all__ = ["Cluster", "NoticeRef", "NODE", "OTHER", "PROVIDER", "make_cluster", "readonly_python",
           "run_background", "to_monotonic", "utcnow", "wait_for"]
