"""Fixtures shared by the end-to-end tiers: the daemons a test started, and simulated nodes."""
from __future__ import annotations

from typing import List

import pytest

from tests import helpers


@pytest.fixture(autouse=True)
def _daemons_of_this_test():
    """Start each test with an empty list of daemons (tests.helpers.STARTED)."""
    helpers.STARTED.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that ran daemons shows each daemon's whole output, whatever failed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and helpers.STARTED:
        for number, daemon in enumerate(helpers.STARTED, 1):
            title = f"daemon {number} (nodeagent {' '.join(daemon.args)}) output"
            report.sections.append((title, daemon.output() or "(no output)"))


@pytest.fixture
def make_cluster(tmp_path):
    """make(**options) -> tests.cluster.Cluster in tmp_path; every cluster made is finished at teardown."""
    from tests.cluster import Cluster

    made: List[Cluster] = []

    def make(**options: object) -> Cluster:
        cluster = Cluster(tmp_path, **options)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.finish()


@pytest.fixture
def cluster(make_cluster):
    """A node with no pods yet (tests.cluster.Cluster), finished after the test."""
    return make_cluster()


@pytest.fixture
def cluster_with_pods(make_cluster):
    """A spot node with 5 evictable pods (4 ReplicaSet pods and a critical one) and 3 a drain
    leaves (DaemonSet, mirror, finished Job); evicted pods come back on another node."""
    cluster = make_cluster(replace_evicted=True)
    cluster.add_workload(count=4)
    return cluster
