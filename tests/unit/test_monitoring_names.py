"""The shipped dashboard and alert rules (packaging/monitoring/) query only metrics the agent
writes. The set of names comes from the code that writes the textfile (report/metrics.py's
render_textfile with every family present), not from a copy."""

import json
import re
from pathlib import Path

import pytest
import yaml

from nodeagent.report.metrics import MetricsState, render_textfile

MONITORING = Path(__file__).resolve().parents[2] / "packaging" / "monitoring"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}


def written_names() -> set:
    """Every metric family the agent can write: the state with each optional family present."""
    state = MetricsState(start_time=1.0, last_drain_seconds=2.0, last_poll=3.0, last_poll_ok=True,
                         lifecycle={("complete", "ok"): 1}, last_lifecycle_held_seconds=4.0)
    text = render_textfile(state, version="test", python="3")
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def metric_names(expr: str) -> set:
    """The metric names a PromQL expression reads (enough PromQL for what we ship)."""
    label_values = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*\w+\s*\)\s*", expr)
    if label_values:
        return {label_values.group(1)}
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()
        if match.group() in KEYWORDS or following.startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(match.group())
    return names


def dashboard_exprs():
    dashboard = json.loads((MONITORING / "nodeagent-dashboard.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [variable["query"]["query"] for variable in dashboard["templating"]["list"]]
    return exprs


def alert_exprs():
    rules = yaml.safe_load((MONITORING / "nodeagent-alerts.yaml").read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_extractor():
    assert metric_names('sum by (kind) (increase(nodeagent_notices_total{instance=~"$instance"}[$__rate_interval]))') \
        == {"nodeagent_notices_total"}
    assert metric_names("a_total > 0 unless on (instance) b_seconds offset 15m") == {"a_total", "b_seconds"}
    assert metric_names("count(x == 0) or vector(0)") == {"x"}
    assert metric_names("time() - nodeagent_last_poll_timestamp_seconds > 120") == {
        "nodeagent_last_poll_timestamp_seconds"}
    assert metric_names("label_values(nodeagent_build_info, instance)") == {"nodeagent_build_info"}


def test_the_written_names_come_from_the_code():
    names = written_names()
    assert {"nodeagent_pods_left_total", "nodeagent_last_poll_timestamp_seconds",
            "nodeagent_asg_lifecycle_calls_total"} <= names
    assert "nodeagent_pods_evictd_total" not in names


@pytest.mark.parametrize("where,exprs", [("dashboard", dashboard_exprs), ("alerts", alert_exprs)])
def test_every_query_reads_only_metrics_the_agent_writes(where, exprs):
    written = written_names()
    found = [(expr, metric_names(expr)) for expr in exprs()]
    assert found
    for expr, names in found:
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= written, f"{where}: {sorted(names - written)} in {expr!r} are not written by the agent"
