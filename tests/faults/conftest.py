"""The fault-matrix suite's machinery.

Every case runs the real daemon against the simulators (tests/cluster.py: real sockets, HTTPS,
the node's own credentials), injects one fault, and then makes the same five checks
(`Cluster.check`): the daemon is alive, the notice was handled once, no evictable pod is left,
nothing was written after the deadline, and a clear log line names the fault.

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
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from tests.cluster import Cluster, live_clusters


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
    for cluster in live_clusters():
        cluster.finish()


def run_background(background: Background, request: pytest.FixtureRequest) -> Cluster:
    marker = request.node.get_closest_marker("background")
    return background.result(marker.kwargs["scenario"])
