"""A Debian container booted with systemd as PID 1 (systemd-nspawn), for the real-systemd tier.

The root file system is built once with mmdebstrap from this machine's own apt sources (so the
build uses whatever mirror or proxy the machine is set up with) and cached outside the
repository, keyed by a hash of what goes into it (suite, packages, sources). Every boot runs on
a throw-away overlay (--volatile=overlay), so the cache is never changed. The container has a
private network (loopback only) and sees the test's directory at /opt/test, read-only. Commands
run inside with nsenter into PID 1's namespaces.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest

SUITE = "bookworm"  # systemd 252, as on AL2023
APT_SOURCES = Path("/etc/apt")  # the host's sources.list and sources.list.d/: the packages come from there
# systemd, the D-Bus system bus (what a non-root systemd-run talks to), python3 (the agent and
# the simulators: stdlib only), openssl (the API simulator's certificates), iproute2 (ss), procps,
# curl (the boot oneshot's IMDS client).
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "openssl", "iproute2", "procps", "curl"]
CACHE_ROOT = Path(os.environ.get("NODEAGENT_ROOTFS_CACHE", "/var/cache/nodeagent-tests"))
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _skip(reason: str) -> None:
    pytest.skip(f"real-systemd tier: {reason}")


def check_host() -> None:
    """Skip (one line) where this machine cannot boot a container at all."""
    if os.geteuid() != 0:
        _skip("needs root (systemd-nspawn)")
    for tool, package in (("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap"),
                          ("nsenter", "util-linux"), ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            _skip(f"{tool} is not installed (apt-get install -y {package}; .ci/run does)")
    # Root inside an unprivileged container (no CAP_SYS_ADMIN) cannot make the namespaces nspawn needs.
    probe = subprocess.run(["unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if probe.returncode != 0:
        _skip(f"cannot create namespaces here (no privileges): {probe.stderr.strip()}")


def host_sources(etc_apt: Path = APT_SOURCES) -> List[Path]:
    """The files apt reads its sources from on this machine (sources.list, then sources.list.d/ in
    apt's order: *.list and *.sources only, so disabled files stay out)."""
    files = [etc_apt / "sources.list"]
    directory = etc_apt / "sources.list.d"
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources"))
    return [p for p in files if p.is_file() and p.read_text().strip()]


def source_endpoints(texts: Sequence[str]) -> List[Tuple[str, int]]:
    """(host, port) of every http(s) URI the sources name (one-line `deb` entries and deb822 URIs:)."""
    endpoints = []
    for scheme, host, port in re.findall(r"\b(https?)://([^/\s:]+)(?::(\d+))?", "\n".join(
            line for text in texts for line in text.splitlines() if not line.lstrip().startswith("#"))):
        endpoint = (host, int(port) if port else 443 if scheme == "https" else 80)
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    return endpoints


def _reachable(endpoints: Sequence[Tuple[str, int]]) -> bool:
    for endpoint in endpoints:
        try:
            with socket.create_connection(endpoint, timeout=10):
                return True
        except OSError:
            continue
    return False


def rootfs() -> Path:
    """The cached root file system, built on first use (under a lock: runs may overlap)."""
    sources = host_sources()
    texts = [p.read_text() for p in sources]
    # The key changes with the suite, the variant, the package list and the sources it came from.
    key = hashlib.sha256("\0".join([SUITE, "minbase", *sorted(PACKAGES), *texts]).encode()).hexdigest()[:16]
    target = CACHE_ROOT / f"rootfs-{SUITE}-{key}"
    if (target / "usr/lib/systemd/systemd").exists():
        return target
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "usr/lib/systemd/systemd").exists():
            return target
        if not sources:
            _skip(f"no apt sources in {APT_SOURCES}/sources.list[.d] to build the root file system from")
        if not any(re.search(rf"\b{SUITE}\b", text) for text in texts):
            _skip(f"this machine's apt sources do not serve Debian {SUITE}: {', '.join(map(str, sources))}")
        if not _reachable(source_endpoints(texts)):
            _skip(f"no network to the package mirrors of this machine's apt sources ({', '.join(map(str, sources))})")
        scratch = CACHE_ROOT / f".building-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        result = subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, str(scratch),
             *map(str, sources)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise AssertionError(f"mmdebstrap failed:\n{result.stdout[-4000:]}")
        os.replace(scratch, target)
    return target


class Container:
    """One boot of the cached root file system. `run` executes a command inside, as root."""

    def __init__(self, root: Path, shared: Path, log: Path):
        self.root, self.shared, self.log = root, shared, log
        self.name = f"nodeagent-test-{os.getpid()}"
        self._nspawn: Optional[subprocess.Popen] = None
        self.pid1 = 0

    def boot(self, timeout: float = 60) -> "Container":
        with open(self.log, "w") as out:
            self._nspawn = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                 "--private-network", "--volatile=overlay", "--console=passive",
                 f"--machine={self.name}", f"--directory={self.root}",
                 f"--bind-ro={self.shared}:/opt/test"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {self._nspawn.returncode}:\n{self.log.read_text()}")
            self.pid1 = self._find_init()
            if self.pid1:
                state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
                if state.stdout.strip() in ("running", "degraded"):
                    return self
            time.sleep(0.2)
        raise AssertionError(f"the container did not boot within {timeout}s:\n{self.log.read_text()}")

    def _find_init(self) -> int:
        """The container's systemd: the nspawn process's child (or grandchild) named systemd."""
        assert self._nspawn is not None
        todo = [self._nspawn.pid]
        while todo:
            parent = todo.pop()
            children = Path(f"/proc/{parent}/task/{parent}/children")
            try:
                pids = [int(p) for p in children.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
                except OSError:
                    continue
            todo.extend(pids)
        return 0

    def run(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        full: List[str] = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", f"PATH={INSIDE_PATH}",
                           "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", *map(str, cmd)]
        result = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"in the container: {' '.join(map(str, cmd))} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], **kwargs)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.sh(f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}', input=text)

    def shutdown(self) -> None:
        if self._nspawn is None or self._nspawn.poll() is not None:
            return
        self._nspawn.send_signal(signal.SIGTERM)  # nspawn: orderly poweroff of the container
        try:
            self._nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._nspawn.kill()
            self._nspawn.wait()
