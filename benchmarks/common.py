"""Shared benchmark machinery: the simulators, the real daemon, statistics, tables and JSON.

Every benchmark runs the real daemon (`python -m nodeagent run`, as systemd would) against the
IMDS and Kubernetes API simulators on loopback, and measures at the simulators: what the API
saw and when, not what the agent says about itself.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nodeagent_sim.imds import ImdsSim  # noqa: E402
from nodeagent_sim.kube import KubeSim  # noqa: E402
from tests.helpers import Daemon, NotifySocket, daemon_env, wait_for  # noqa: E402
from nodeagent.config import KEYS_BY_NAME  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
NODE = "ip-10-0-1-2.ec2.internal"
INSTANCE_ID = "i-0123456789abcdef0"
ZONE = "us-east-1a"
PROVIDER_ID = f"aws:///{ZONE}/{INSTANCE_ID}"
NODE_USER = f"system:node:{NODE}"
AGENT_LABEL = "nodeagent.io/agent"


# ------------------------------------------------------------------------------------ arguments


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and durations (CI)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter that runs the daemon (default: this one)")
    ap.add_argument("--tag", default="", help="suffix for the result file: results/<name>-<tag>.json")
    return ap


# ------------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """Both simulators, one node, a kubeconfig, and a scratch directory."""

    imds: ImdsSim
    kube: KubeSim
    tmp: Path
    kubeconfig: str

    def stop(self) -> None:
        self.kube.stop()
        self.imds.stop()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stack(*, time_scale: float = 1.0, exec_delay_s: Optional[float] = None, exec_ttl_s: float = 900,
                node_labels: Optional[Dict[str, str]] = None, replacement_ready_after_s: float = 0.0) -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix="nodeagent-bench-"))
    imds = ImdsSim(instance_id=INSTANCE_ID, availability_zone=ZONE, local_hostname=NODE, life_cycle="spot").start()
    # A replacement delay means a ReplicaSet that replaces evicted pods (Ready that much later).
    kube = KubeSim(time_scale=time_scale, replace_evicted=replacement_ready_after_s > 0,
                   replacement_ready_after_s=replacement_ready_after_s).start()
    kube.add_node(NODE, provider_id=PROVIDER_ID,
                  labels={"lifecycle": "Ec2Spot", "kubernetes.io/hostname": NODE} if node_labels is None else node_labels)
    if exec_delay_s is None:
        kubeconfig = kube.write_kubeconfig(str(tmp / "kubeconfig"), kube.add_node_token(NODE))
    else:
        kubeconfig = kube.write_exec_kubeconfig(str(tmp / "kubeconfig"), NODE, delay_s=exec_delay_s, ttl_s=exec_ttl_s)
    return Stack(imds, kube, tmp, kubeconfig)


@dataclass
class Running:
    daemon: Daemon
    notify: NotifySocket
    started: float  # monotonic, just before the process was spawned
    ready: float  # monotonic, when READY=1 arrived

    @property
    def pid(self) -> int:
        assert self.daemon.process is not None
        return self.daemon.process.pid

    def stop(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.notify.close()


def start_daemon(stack: Stack, python: str, *, ready_timeout_s: float = 30.0, **settings: str) -> Running:
    """The real daemon with a real NOTIFY_SOCKET; returns once READY=1 has arrived."""
    return wait_ready(spawn_daemon(stack.imds.url, stack.kubeconfig, stack.tmp, python, **settings),
                      ready_timeout_s)


@dataclass
class Spawned:
    daemon: Daemon
    notify: NotifySocket
    started: float  # monotonic, just before the process was spawned


def spawn_daemon(imds_url: str, kubeconfig: str, tmp: Path, python: str, **settings: str) -> Spawned:
    """Start the real daemon with a real NOTIFY_SOCKET, without waiting for READY=1 (wait_ready)."""
    # The product's own per-path pacing (tests.helpers' daemon_env polls every path at the test pace).
    keys = dict(IMDS_URL=imds_url, KUBECONFIG=kubeconfig, POLL_INTERVAL="1s", LOG_LEVEL="info",
                POLL_INTERVAL_REBALANCE=KEYS_BY_NAME["POLL_INTERVAL_REBALANCE"].default,
                POLL_INTERVAL_SCHEDULED=KEYS_BY_NAME["POLL_INTERVAL_SCHEDULED"].default)
    keys.update(settings)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))
    env = daemon_env(run_dir, **keys)
    notify = NotifySocket(run_dir)
    env["NOTIFY_SOCKET"] = notify.path
    started = time.monotonic()
    return Spawned(Daemon(env, python=python).start(), notify, started)


def wait_ready(spawned: Spawned, ready_timeout_s: float = 30.0) -> Running:
    daemon, notify = spawned.daemon, spawned.notify
    if not wait_for(lambda: "READY=1" in notify.texts() or not daemon.alive(), ready_timeout_s, 0.005):
        daemon.kill()
        raise RuntimeError(f"daemon not READY within {ready_timeout_s}s:\n{daemon.output()}")
    if not daemon.alive():
        raise RuntimeError(f"daemon exited before READY:\n{daemon.output()}")
    ready = next(m.t for m in list(notify.messages) if m.text == "READY=1")
    return Running(daemon, notify, spawned.started, ready)


def wait_node(stack: Stack, predicate, timeout_s: float) -> bool:
    return wait_for(lambda: predicate(stack.kube.node(NODE) or {}), timeout_s, 0.01)


def agent_label(node: dict) -> str:
    return str(((node.get("metadata") or {}).get("labels") or {}).get(AGENT_LABEL, ""))


def python_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# ------------------------------------------------------------------------------------ /proc


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS:")


def hwm_kb(pid: int) -> int:
    return _status_kb(pid, "VmHWM:")


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def cpu_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat (clock ticks, usually 10 ms)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_precise(pid: int) -> float:
    """Time on CPU of every thread, in ns resolution (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path, encoding="ascii") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between listing and reading
    return total / 1e9


# ------------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (never interpolates below an observed value: p99 of 50 = the max)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> Dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "min": round(min(ms), 1), "p50": round(percentile(ms, 50), 1),
            "p90": round(percentile(ms, 90), 1), "p99": round(percentile(ms, 99), 1),
            "max": round(max(ms), 1), "mean": round(sum(ms) / len(ms), 1)}


# ------------------------------------------------------------------------------------ output


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def write_result(name: str, args: argparse.Namespace, data: Dict[str, object]) -> Path:
    """results/<name>[-<tag>].json; smoke runs go to results/smoke/ and never overwrite the figures."""
    directory = RESULTS / "smoke" if args.smoke else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (f"{name}-{args.tag}.json" if args.tag else f"{name}.json")
    document = {"benchmark": name, "meta": _meta(args), **data}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path


def _meta(args: argparse.Namespace) -> Dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(REPO),
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "nodeagent"], cwd=str(REPO),
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        dirty = False
    return {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "smoke": bool(args.smoke),
        "daemon_python": python_version(args.python),
        "command": " ".join([os.path.basename(sys.executable), "-m", _module_name()] + sys.argv[1:]),
        "git_commit": commit + ("+uncommitted nodeagent changes" if dirty else ""),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
    }


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return "benchmarks." + Path(sys.argv[0]).stem


def banner(title: str, args: argparse.Namespace, extra: str = "") -> None:
    mode = "smoke" if args.smoke else "full"
    print(f"{title} ({mode}; daemon on python {python_version(args.python)}){' - ' + extra if extra else ''}",
          flush=True)
