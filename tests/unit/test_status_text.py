"""status_text.render_text: the report as rows, from a hand-made report and a fixed clock."""

from __future__ import annotations

from datetime import datetime, timezone

from nodeagent.status_text import render_text

NOW = datetime(2025, 1, 1, 0, 1, 0, tzinfo=timezone.utc)
CONFIG_KEYS = ("ON_SPOT_INTERRUPTION", "ON_REBALANCE", "ON_SCHEDULED_EVENT", "ON_ASG_TERMINATION",
               "STATE_DIR", "KUBECONFIG", "IMDS_URL", "DRY_RUN")


def _report(**changes) -> dict:
    config = {key: {"value": "x", "source": "default"} for key in CONFIG_KEYS}
    config["ON_SPOT_INTERRUPTION"] = {"value": "drain", "source": "default"}
    config["DRAIN_MARGIN"] = {"value": "10", "source": "/etc/nodeagent/nodeagent.conf"}
    report = {
        "version": "1.2.3",
        "generated_at": "2025-01-01T00:01:00Z",
        "daemon": {"state_file_error": None, "running": True, "pid": 7, "agent_state": "ready",
                   "status": "", "busy": False, "updated_at": "2025-01-01T00:00:30Z"},
        "last_notice": None,
        "drain_progress": None,
        "imds": {"checked": True, "reachable": True, "url": "http://127.0.0.1:1", "latency_ms": 2.0,
                 "instance_id": "i-1", "instance_type": "m5.large", "availability_zone": "us-east-1a",
                 "life_cycle": "spot", "error": None},
        "api": {"checked": False},
        "config": config,
        "problems": [],
    }
    report.update(changes)
    return report


def test_a_healthy_node_reads_as_one_row_per_fact():
    lines = render_text(_report(), NOW).splitlines()
    assert lines[0] == "nodeagent 1.2.3 status (2025-01-01T00:01:00Z)"
    assert "  daemon:      running (pid 7); node ready; state file updated 30s ago" in lines
    assert "  last notice: none" in lines
    assert any(line.startswith("  IMDS:        reachable at http://127.0.0.1:1 (2 ms): i-1 m5.large") for line in lines)
    assert "  API:         not probed (--no-probe)" in lines
    assert any("responses: spot-itn=drain rebalance=x" in line for line in lines)
    assert "               DRAIN_MARGIN=10  (/etc/nodeagent/nodeagent.conf)" in lines  # set, so shown
    assert lines[-1] == "  problems:    none"


def test_each_problem_gets_its_own_row_and_a_quoted_line_break_adds_none():
    text = render_text(_report(problems=["one\nforged: row", "two"]), NOW)
    assert text.splitlines()[-2:] == ["  problems:    one | forged: row", "               two"]


def test_an_unreachable_imds_and_a_drain_in_progress():
    report = _report(
        imds={"checked": True, "reachable": False, "url": "http://127.0.0.1:1", "error": "refused the connection"},
        drain_progress={"gone": 2, "total": 5, "deadline_in_s": 42.0},
    )
    text = render_text(report, NOW)
    assert "  IMDS:        UNREACHABLE at http://127.0.0.1:1: refused the connection" in text
    assert "  drain:       2/5 pods gone, deadline in 42s" in text
