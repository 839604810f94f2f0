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


def test_control_characters_in_an_api_message_cannot_forge_journal_lines(tmp_path: Path):
    """An eviction answers 403 with a Status message holding a NUL then "<0>" (journald would end
    the line there and log the rest at emergency priority), a U+2028, a CR and a lone surrogate
    (unencodable: the record would be lost with a traceback). The daemon's output (stdout and
    stderr) keeps it as one warning line with every such character escaped."""
    hostile = "denied\x00<0>forged emergency\r<1>alert\u2028<2>crit\x85\ud800 end"
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": hostile}
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=2)
        cluster.start_agent()
        cluster.kube.inject(count=1, status=403, method="POST", path_regex=r"/web-0/eviction$", body=body)
        cluster.spot(15)
        cluster.daemon.wait_line(r"drain incomplete: ", timeout_s=30)
        cluster.finish()
        output = cluster.daemon.output()
        lines = [line.text for line in cluster.daemon.lines]
        assert "\x00" not in output and "\r" not in output and "\u2028" not in output and "\x85" not in output
        assert "Logging error" not in output and "Traceback" not in output, output
        assert all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines if line), output
        quoted = [line for line in lines if "not allowed to evict default/web-0" in line]
        assert quoted == ["<4>not allowed to evict default/web-0: denied\\x00<0>forged emergency\\x0d<1>alert"
                          "\\u2028<2>crit\\x85\\ud800 end"], output
        assert cluster.alive_at_end and cluster.exit_codes[-1] == 0, output
    finally:
        cluster.finish()


SECRET_TOKEN = "k8s-aws-v1.SECRETTOKENdGhpcyBpcyBhIHRva2Vu"


def test_a_kubeconfig_yaml_error_never_quotes_the_file(tmp_path: Path):
    """The kubeconfig has an inline token on a line that is not valid YAML (a stray ': ').
    PyYAML's message quotes that line; the journal and `status --json` must say only which file,
    where, and what kind of error."""
    import json
    import subprocess
    import sys

    from tests.helpers import REPO, daemon_env

    cluster = Cluster(tmp_path)
    try:
        good = Path(cluster.kubeconfig).read_text()
        Path(cluster.kubeconfig).write_text(
            "apiVersion: v1\nkind: Config\nusers:\n- name: node\n  user:\n"
            f"    token: {SECRET_TOKEN}: oops\n    client-key-data: LS0tSECRETKEY\n")
        cluster.start_agent(ready=r"is not valid YAML")
        env = daemon_env(tmp_path, **cluster.settings())
        status = subprocess.run([sys.executable, "-m", "nodeagent", "status", "--json"], env=env,
                                cwd=str(REPO), capture_output=True, text=True, timeout=60)
        Path(cluster.kubeconfig).write_text(good)
        cluster.daemon.wait_line(r"acting on node", timeout_s=20)
        cluster.finish()
        output = cluster.daemon.output()
        for text in (output, status.stdout, status.stderr, (cluster.state_dir / "state.json").read_text()):
            assert "SECRET" not in text and "oops" not in text, text
        assert "is not valid YAML: mapping values" in json.loads(status.stdout)["api"]["error"], status.stdout
        assert cluster.find(rf"kubeconfig {cluster.kubeconfig} is not valid YAML: mapping values are not allowed "
                            r"here at line 6, column \d+$"), output
    finally:
        cluster.finish()


def test_one_malformed_pod_is_left_and_reported_and_the_others_are_drained(tmp_path: Path):
    """The drain's pod list holds a pod whose ownerReferences is ["x"] and one whose grace period is
    text: each is set aside with a warning that names it and says what is wrong, every other pod
    is evicted, and the drain reports the two as left on the node."""
    from tests.faults.conftest import NODE

    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=4)
        cluster.start_agent()
        pods = cluster.kube.pods(node=NODE)
        by_name = {p["metadata"]["name"]: p for p in pods}
        by_name["web-0"]["metadata"]["ownerReferences"] = ["x"]
        by_name["web-1"]["spec"]["terminationGracePeriodSeconds"] = "thirty"
        listing = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        cluster.kube.inject(count=1, status=200, method="GET", path_regex=r"^/api/v1/pods$", body=listing)
        cluster.spot(20)
        cluster.daemon.wait_line(r"drain incomplete: ", timeout_s=40)
        cluster.finish()
        output = cluster.daemon.output()
        assert cluster.find(r"not evicting default/web-0: the API's description of it cannot be read "
                            r"\(.*ownerReferences"), output
        assert cluster.find(r"not evicting default/web-1: the API's description of it cannot be read "
                            r"\(.*thirty"), output
        assert cluster.find(r"pods left on the node at the deadline: default/web-0, default/web-1$"), output
        assert sorted(cluster.evictable_left()) == ["default/web-0", "default/web-1"]
        assert "Traceback" not in output and cluster.alive_at_end, output
    finally:
        cluster.finish()
