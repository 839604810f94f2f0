"""Runs INSIDE the test container as kube-api-sim.service: the Kubernetes API simulator on
https://127.0.0.1:6443 with the node and pods of a scenario file (and API Priority and Fairness
when it has "apf": ApfConfig's fields), and the kubelet's kubeconfig.

    python3 -I kube_api_sim.py SCENARIO.json

The kubeconfig (/var/lib/kubelet/kubeconfig) authenticates with an exec credential plugin, as
on EKS; the plugin's run counter lives in the agent's CacheDirectory (its HOME), the only place
the agent's sandbox lets the plugin write. The CA is copied out of the simulator's temporary
directory because the agent has PrivateTmp=. READY=1 goes to systemd once all this is written.
The admin token for the test's queries (kubectl.py) is written to /run/kube-api-sim/admin-token.
"""
import json
import os
import shutil
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nodeagent_sim import kube_auth  # noqa: E402
from nodeagent_sim.kube import ApfConfig, KubeSim  # noqa: E402

KUBELET_DIR = "/var/lib/kubelet"
KUBECONFIG = KUBELET_DIR + "/kubeconfig"
CA_FILE = KUBELET_DIR + "/pki/ca.crt"
EXEC_COUNTER = "/var/cache/nodeagent/sim-exec-count"
RUN_DIR = "/run/kube-api-sim"


def sd_notify(text):
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), address)


def populate(sim, scenario):
    node = scenario["node"]
    sim.add_node(node, provider_id=scenario["provider_id"], labels={"lifecycle": "Ec2Spot"})
    for pod in scenario["pods"]:
        sim.add_pod(pod["name"], pod.get("namespace", "default"), node=node,
                    owner_kind=pod.get("owner_kind"), owner_name=pod.get("owner_name"),
                    labels=pod.get("labels"), grace_s=pod.get("grace_s", 30),
                    shutdown_s=pod.get("shutdown_s"))
    for pdb in scenario.get("pdbs", []):
        sim.add_pdb(pdb["name"], pdb.get("namespace", "default"), selector=pdb["selector"],
                    max_unavailable=pdb.get("max_unavailable"))


def write_kubeconfig(sim, node):
    os.makedirs(os.path.dirname(CA_FILE), exist_ok=True)
    shutil.copyfile(sim.ca_file, CA_FILE)
    os.chmod(CA_FILE, 0o644)
    sim.write_exec_kubeconfig(KUBECONFIG, node)
    with open(KUBECONFIG) as handle:
        config = json.load(handle)
    for cluster in config["clusters"]:
        cluster["cluster"]["certificate-authority"] = CA_FILE
    with open(KUBECONFIG, "w") as handle:
        json.dump(config, handle)
    script, settings, _ = kube_auth.exec_paths(KUBECONFIG)
    with open(settings) as handle:
        cfg = json.load(handle)
    cfg["counter"] = EXEC_COUNTER
    with open(settings, "w") as handle:
        json.dump(cfg, handle)
    # Readable by the agent whatever User= the unit runs as (a test fixture, not a real node).
    for path in (KUBECONFIG, script, settings):
        os.chmod(path, 0o644)


def main():
    with open(sys.argv[1]) as handle:
        scenario = json.load(handle)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    apf = ApfConfig(**scenario["apf"]) if scenario.get("apf") else None  # {"seats": 2, "queue": 8, ...}
    sim = KubeSim(port=6443, time_scale=1.0, replace_evicted=True, apf=apf).start()
    try:
        populate(sim, scenario)
        write_kubeconfig(sim, scenario["node"])
        os.makedirs(RUN_DIR, exist_ok=True)
        with open(RUN_DIR + "/admin-token", "w") as handle:
            handle.write(sim.admin_token())
        shutil.copyfile(sim.ca_file, RUN_DIR + "/ca.crt")
        print("kube-api-sim: %s, node %s with %d pods" % (sim.url, scenario["node"], len(scenario["pods"])),
              flush=True)
        sd_notify("READY=1")
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
