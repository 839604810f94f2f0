"""Fixtures shared by the operator-feature tests."""
from __future__ import annotations

import pytest

from tests.report_helpers import start_sims


@pytest.fixture
def sims(tmp_path):
    """Both simulators with a small spot node (tests.report_helpers.start_sims), stopped after."""
    sims = start_sims(tmp_path)
    yield sims
    sims.stop()
