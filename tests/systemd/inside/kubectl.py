"""Runs INSIDE the test container: what the API simulator holds, as JSON on stdout.

    python3 -I kubectl.py NODE   ->  {"unschedulable": bool, "pods": ["ns/name", ...]}

Reads with the simulator's admin token, so it sees what a cluster admin would see.
"""
import json
import ssl
import sys
import urllib.request

RUN_DIR = "/run/kube-api-sim"
SERVER = "https://127.0.0.1:6443"


def get(path, token, context):
    request = urllib.request.Request(SERVER + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.load(response)


def main():
    node = sys.argv[1]
    with open(RUN_DIR + "/admin-token") as handle:
        token = handle.read().strip()
    context = ssl.create_default_context(cafile=RUN_DIR + "/ca.crt")
    node_doc = get("/api/v1/nodes/" + node, token, context)
    pods = get("/api/v1/pods?fieldSelector=spec.nodeName%3D" + node, token, context)
    print(json.dumps({
        "unschedulable": bool(node_doc.get("spec", {}).get("unschedulable")),
        "pods": sorted("%s/%s" % (p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods["items"]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
