"""The node_exporter textfile: parsed with prometheus_client's own text parser after a drill and
while the daemon runs."""
from __future__ import annotations

import os
import re
import sys
import time
from typing import Dict, Tuple

from prometheus_client.parser import text_string_to_metric_families

from nodeagent import __version__
from nodeagent.report.metrics import MetricsReporter, MetricsState, render_textfile
from nodeagent.state import NoticeRecord
from tests.helpers import Daemon, run_cli, wait_for

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Tuple[Samples, Dict[str, str]]:
    samples: Samples = {}
    types: Dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_after_a_drill(cluster_with_pods, tmp_path):
    path = tmp_path / "textfile" / "nodeagent.prom"
    path.parent.mkdir()
    # Two transient API failures on evictions: retried by the drain, counted as API errors.
    cluster_with_pods.kube.inject(count=2, status=500, method="POST", path_regex=r"/eviction$")
    before = time.time()
    result = run_cli(["drill", "--yes", "--in", "30s", "--set", f"METRICS_TEXTFILE={path}"], cluster_with_pods.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"metrics: {path}" in result.stdout
    samples, types = parse(path.read_text())
    assert value(samples, "nodeagent_build_info", version=__version__, python=sys.version.split()[0]) == 1
    assert value(samples, "nodeagent_notices_total", kind="spot-itn") == 1
    for kind in ("rebalance", "scheduled", "asg"):
        assert value(samples, "nodeagent_notices_total", kind=kind) == 0
    assert value(samples, "nodeagent_pods_evicted_total") == 5
    assert value(samples, "nodeagent_pods_forced_total") == 0
    assert value(samples, "nodeagent_pods_failed_total") == 0
    assert value(samples, "nodeagent_pods_left_total") == 0
    assert value(samples, "nodeagent_drains_total", result="finished") == 1
    assert value(samples, "nodeagent_drains_total", result="failed") == 0
    assert value(samples, "nodeagent_draining") == 0
    assert 0 <= value(samples, "nodeagent_drain_duration_seconds") < 30
    assert value(samples, "nodeagent_api_errors_total") == 2
    assert value(samples, "nodeagent_imds_errors_total") == 0
    assert before - 1 <= value(samples, "nodeagent_last_poll_timestamp_seconds") <= time.time()
    assert value(samples, "nodeagent_last_poll_ok") == 1
    assert types["nodeagent_notices"] == "counter" and types["nodeagent_drain_duration_seconds"] == "gauge"
    # Atomic writes leave no temporary files behind.
    assert os.listdir(path.parent) == ["nodeagent.prom"]


def test_a_drill_leaves_the_daemons_textfile_alone(cluster_with_pods, tmp_path):
    daemon_file = tmp_path / "daemon.prom"
    result = run_cli(["drill", "--dry-run", "--in", "20s"], cluster_with_pods.env(METRICS_TEXTFILE=str(daemon_file)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not daemon_file.exists()
    drill_file = re.search(r"metrics: (\S+)", result.stdout).group(1)
    samples, _ = parse(open(drill_file).read())
    assert value(samples, "nodeagent_notices_total", kind="spot-itn") == 1


def test_the_daemon_counts_imds_errors_and_stamps_its_polls(cluster_with_pods, tmp_path):
    path = tmp_path / "nodeagent.prom"
    daemon = Daemon(cluster_with_pods.env(METRICS_TEXTFILE=str(path))).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        assert wait_for(path.exists, 5)
        cluster_with_pods.imds.inject(6, status=500)  # the client tries 3 times per path: two failed polls
        assert wait_for(lambda: parse(path.read_text())[0].get(("nodeagent_imds_errors_total", ())) == 2, 15)
        assert wait_for(lambda: parse(path.read_text())[0].get(("nodeagent_last_poll_ok", ())) == 1, 10)
        stamp = parse(path.read_text())[0][("nodeagent_last_poll_timestamp_seconds", ())]
        assert time.time() - 20 < stamp <= time.time()
    finally:
        assert daemon.stop() == 0


def test_rewrites_on_change_and_at_most_every_15s_while_idle(tmp_path):
    clock = [1000.0]
    reporter = MetricsReporter(str(tmp_path / "m.prom"), clock=lambda: clock[0])
    writes = reporter.writes
    reporter.polled(True, {})  # first poll: a change (unknown -> ok)
    assert reporter.writes == writes + 1
    for _ in range(10):
        clock[0] += 1
        reporter.polled(True, {})
    assert reporter.writes == writes + 1  # idle polls within 15 s: no rewrite
    clock[0] += 5
    reporter.polled(True, {})
    assert reporter.writes == writes + 2
    samples, _ = parse((tmp_path / "m.prom").read_text())
    assert samples[("nodeagent_last_poll_timestamp_seconds", ())] == clock[0]
    reporter.polled(False, {"spot-itn": "refused"})  # a change: written at once
    assert reporter.writes == writes + 3
    record = NoticeRecord(id="n", kind="asg", action="Terminated", deadline="2030-01-01T00:00:00Z",
                          first_seen="2030-01-01T00:00:00Z", response="drain", evicted=4, forced=1,
                          drain_started="2030-01-01T00:00:00Z", drain_finished="2030-01-01T00:01:30Z")
    reporter.notice_received(None, record, None)
    reporter.finished(record)
    reporter.finished(record)  # counted once per notice
    samples, _ = parse((tmp_path / "m.prom").read_text())
    assert samples[("nodeagent_notices_total", (("kind", "asg"),))] == 1
    assert samples[("nodeagent_pods_evicted_total", ())] == 4
    assert samples[("nodeagent_pods_forced_total", ())] == 1
    assert samples[("nodeagent_drain_duration_seconds", ())] == 90
    assert samples[("nodeagent_imds_errors_total", ())] == 1


def test_an_unwritable_directory_is_reported_once_and_does_not_raise(tmp_path, caplog):
    reporter = MetricsReporter(str(tmp_path / "missing-dir" / "m.prom"))
    for _ in range(3):
        reporter.polled(False, {"x": "y"})
    assert len([r for r in caplog.records if "cannot write metrics" in r.getMessage()]) == 1


def test_label_values_are_escaped():
    text = render_textfile(MetricsState(start_time=1.0), version='1"2\\3', python="3.9.18")
    samples, _ = parse(text)
    assert samples[("nodeagent_build_info", (("python", "3.9.18"), ("version", '1"2\\3')))] == 1
