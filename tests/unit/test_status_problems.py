"""status.problems_of: what makes `nodeagent status` unhealthy, read from the report alone."""

from __future__ import annotations

from nodeagent.status import problems_of


def _report(**changes) -> dict:
    report = {
        "daemon": {"state_file_error": None, "running": True, "status": "ready"},
        "imds": {"checked": True, "reachable": True, "error": None},
        "api": {"checked": True, "reachable": True, "error": None, "other_handlers": []},
        "last_notice": None,
    }
    report.update(changes)
    return report


def test_a_healthy_report_has_no_problems():
    assert problems_of(_report()) == []


def test_a_state_file_error_hides_the_not_running_guess():
    daemon = {"state_file_error": "/s/state.json: permission denied", "running": None, "status": None}
    assert problems_of(_report(daemon=daemon)) == ["/s/state.json: permission denied"]


def test_a_stopped_daemon_and_unreachable_endpoints_are_each_named():
    problems = problems_of(_report(
        daemon={"state_file_error": None, "running": False, "status": "stopped"},
        imds={"checked": True, "reachable": False, "error": "refused the connection"},
        api={"checked": False, "reachable": None, "error": None, "other_handlers": []},
    ))
    assert problems == ["the daemon is not running (it stopped cleanly)", "IMDS unreachable: refused the connection"]


def test_another_handler_and_a_failed_lifecycle_action_are_problems():
    problems = problems_of(_report(
        api={"checked": True, "reachable": True, "error": None, "other_handlers": ["nth (label)"]},
        last_notice={"lifecycle": {"outcome": "failed: AccessDenied"}},
    ))
    assert len(problems) == 2
    assert problems[0].startswith("aws-node-termination-handler runs on this node too (nth (label))")
    assert problems[1].startswith("lifecycle action not completed (failed: AccessDenied)")
