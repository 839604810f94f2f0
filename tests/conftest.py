"""Fixtures shared by the operator-feature tests."""
from __future__ import annotations

import pytest

from tests import helpers
from tests.report_helpers import start_sims


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
def sims(tmp_path):
    """Both simulators with a small spot node (tests.report_helpers.start_sims), stopped after."""
    sims = start_sims(tmp_path)
    yield sims
    sims.stop()
