"""The shipped Prometheus rules and Grafana dashboard (packaging/monitoring/): promtool checks the
rules and runs their unit tests (input series -> the alerts that must and must not fire); the
dashboard is an importable Grafana JSON. Which metric names they read: tests/unit/test_monitoring_names.py."""

import json
import shutil
import subprocess

import pytest

from tests.helpers import REPO

MONITORING = REPO / "packaging" / "monitoring"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (scripts/test installs Debian's prometheus as root)")


def promtool(*args):
    return subprocess.run(["promtool", *args], cwd=str(MONITORING), capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", "nodeagent-alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout + result.stderr


@needs_promtool
def test_the_rules_unit_tests_pass():
    result = promtool("test", "rules", "nodeagent-alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@needs_promtool
def test_the_rules_unit_tests_can_fail(tmp_path):
    """A rule that no longer fires where the tests expect it is caught."""
    rules = (MONITORING / "nodeagent-alerts.yaml").read_text(encoding="utf-8")
    (tmp_path / "nodeagent-alerts.yaml").write_text(
        rules.replace("increase(nodeagent_pods_forced_total[15m]) > 0", "increase(nodeagent_pods_forced_total[15m]) > 5"),
        encoding="utf-8")
    shutil.copy(MONITORING / "nodeagent-alerts.test.yaml", tmp_path)
    result = subprocess.run(["promtool", "test", "rules", "nodeagent-alerts.test.yaml"], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "NodeagentPodsForceDeleted" in result.stdout + result.stderr


def test_the_dashboard_is_an_importable_grafana_dashboard():
    dashboard = json.loads((MONITORING / "nodeagent-dashboard.json").read_text(encoding="utf-8"))
    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
