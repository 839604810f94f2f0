"""Hostile input (issue 13): answers, messages and files crafted to hurt the agent.

End to end: the real daemon (`python -m nodeagent run`) against the IMDS and Kubernetes API
simulators over loopback HTTPS. docs/hostile-input.md lists each case.
"""
from __future__ import annotations

from pathlib import Path

from tests.faults.conftest import Cluster

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this


def test_deeply_nested_json_in_eviction_answers_does_not_abort_the_drain(tmp_path: Path):
    """One pod's evictions always answer 201 with a 100k-deep nested JSON body, another's answer
    500 with one once: the drain goes on, evicts every other pod, and reports the one it could not."""
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=6)
        cluster.start_agent()
        cluster.kube.inject(count=100_000, status=201, method="POST", path_regex=r"/web-0/eviction$", body=DEEP)
        cluster.kube.inject(count=1, status=500, method="POST", path_regex=r"/web-1/eviction$", body=DEEP)
        cluster.spot(15)
        cluster.daemon.wait_line(r"drain incomplete: ", timeout_s=40)
        cluster.finish()
        output = cluster.daemon.output()
        assert "RecursionError" not in output.replace("response is not JSON (RecursionError)", ""), output
        assert cluster.find(r"eviction of default/web-0 got a malformed answer \(HTTP 201: response is not JSON "
                            r"\(RecursionError\)\); retrying"), output
        assert cluster.find(r"eviction of default/web-1 got HTTP 500; retrying"), output
        assert cluster.find(r"drain incomplete: 6 evicted, 0 forced, 1 left, 0 failed of 7"), output
        assert cluster.find(r"pods left on the node at the deadline: default/web-0$"), output
        assert cluster.evictable_left() == ["default/web-0"]
        assert cluster.alive_at_end and cluster.exit_codes[-1] == 0, output
    finally:
        cluster.finish()
