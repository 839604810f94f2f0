"""Shared test machinery: `wait_for`, the real daemon as a subprocess (`Daemon`, `daemon_env`,
`run_cli`), and a real NOTIFY_SOCKET. The simulated node around the daemon is tests/cluster.py;
other loopback servers are tests/servers.py."""
from __future__ import annotations

import gc
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TypeVar, Union

REPO = Path(__file__).resolve().parent.parent


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.02,
             message: Union[str, Callable[[], str]] = "") -> T:
    """Wait until condition() is truthy and return that value; raise AssertionError at the timeout.

    The wait helper of every test: it cannot be ignored by mistake (a timeout fails the test).
    `message` (text, or a function giving it, e.g. a daemon's output) goes into the error. Every
    daemon started in a test has its output attached to the failure report anyway (conftest).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = message() if callable(message) else message
            raise AssertionError(f"condition not met within {timeout_s:g}s" + (f": {detail}" if detail else ""))
        time.sleep(interval_s)


def garbage_count(kind: type) -> int:
    """How many objects of `kind` only the cycle collector could free, now (they are freed)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(isinstance(item, kind) for item in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


# Daemons started by the running test: their output goes into its failure report (conftest.py).
STARTED: List["Daemon"] = []


@dataclass
class Line:
    t: float
    text: str


@dataclass
class Daemon:
    """`python -m nodeagent run` in a subprocess; stdout lines are collected with their arrival time."""

    env: Dict[str, str]
    args: Sequence[str] = ("run",)
    python: str = sys.executable
    lines: List[Line] = field(default_factory=list)
    process: Optional[subprocess.Popen] = None

    def start(self) -> "Daemon":
        STARTED.append(self)
        self.process = subprocess.Popen(
            [self.python, "-m", "nodeagent", *self.args], env=self.env, cwd=str(REPO),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(Line(time.monotonic(), raw.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def find(self, pattern: str) -> List[Line]:
        regex = re.compile(pattern)
        return [line for line in list(self.lines) if regex.search(line.text)]

    def wait_line(self, pattern: str, timeout_s: float = 10.0) -> Line:
        return wait_for(lambda: self.find(pattern), timeout_s,
                        message=lambda: f"no line matching {pattern!r}; output:\n{self.output()}")[0]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"daemon did not stop within {timeout_s}s; output:\n{self.output()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_cli(args: Sequence[str], env: Dict[str, str], timeout_s: float = 90,
            python: str = sys.executable) -> subprocess.CompletedProcess:
    """`python -m nodeagent <args>` to completion, its output captured."""
    return subprocess.run([python, "-m", "nodeagent", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout_s)


def daemon_env(tmp_path: Path, **keys: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_") and k != "NOTIFY_SOCKET"}
    config_dir = tmp_path / "etc"
    config_dir.mkdir(exist_ok=True)
    env["NODEAGENT_CONFIG_DIR"] = str(config_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    defaults = {"STATE_DIR": str(tmp_path / "state"), "POLL_INTERVAL": "0.5s",
                # every path at the test pace; the pacing tests set their own
                "POLL_INTERVAL_REBALANCE": "0.5s", "POLL_INTERVAL_SCHEDULED": "0.5s"}
    defaults.update(keys)
    for key, value in defaults.items():
        env[f"NODEAGENT_{key}"] = value
    return env


class NotifySocket:
    """A SOCK_DGRAM socket bound like systemd's, collecting sd_notify datagrams."""

    def __init__(self, directory: Path):
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: List[Line] = []
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for part in data.decode().split("\n"):
                if part:
                    self.messages.append(Line(time.monotonic(), part))

    def texts(self) -> List[str]:
        return [m.text for m in list(self.messages)]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
