"""The agent needs nothing from nodeagent_sim (the simulators and the demo), which only a source
checkout has: every module of nodeagent imports with nodeagent_sim blocked, and `demo`/`imds-sim`
then say plainly where they run. The same checks on the built package's payload are in
tests/packaging/test_packages.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.sim_blocker import IMPORT_ALL, RUN_CLI_BLOCKED


def test_every_nodeagent_module_imports_without_the_simulators():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=str(REPO), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["file"].startswith(str(REPO / "nodeagent")), report["file"]
    assert {"nodeagent.drill", "nodeagent.drill_imds", "nodeagent.cli", "nodeagent.agent"} <= set(report["modules"])
    assert report["failed"] == {}, "\n".join(report["failed"].values())
    assert report["sim_loaded"] == []


def test_the_blocker_really_blocks():
    """Without this, the test above could pass because nothing was blocked."""
    code = IMPORT_ALL.replace("import nodeagent\n", "import nodeagent\nimport nodeagent_sim.imds\n", 1)
    result = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "blocked" in result.stderr, result.stderr


@pytest.mark.parametrize("command", [["demo"], ["imds-sim", "--port", "0"]])
def test_demo_and_imds_sim_say_they_run_from_a_source_checkout(command):
    result = subprocess.run([sys.executable, "-c", RUN_CLI_BLOCKED, *command], cwd=str(REPO),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert "source checkout" in result.stderr and "pip install -e ." in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
