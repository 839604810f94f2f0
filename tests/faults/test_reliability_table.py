"""docs/reliability.md (the fault matrix the README links to) is generated from this suite's docstrings
and must stay in step with it: run scripts/reliability-table after changing a case."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_reliability_table_is_current():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "reliability-table"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
