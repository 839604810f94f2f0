"""kube/identity.py: which Node the agent may act on. The providerID rules alone, then find_node
against an API stand-in that answers from a dict (no sockets)."""

from __future__ import annotations

import pytest

from nodeagent.kube.errors import ApiError, KubeError
from nodeagent.kube.identity import find_node, provider_id_problem

ME = "i-0123456789abcdef0"
PROVIDER = "aws:///us-east-1a/" + ME
OTHER_INSTANCE = "aws:///us-east-1a/i-0fffffffffffffff0"
NODE = "ip-10-0-1-2.ec2.internal"


@pytest.mark.parametrize("provider_id, instance_id, zone, explicit, refused", [
    (PROVIDER, ME, "us-east-1a", False, None),
    (PROVIDER, ME, None, False, None),                      # no zone: the instance id still decides
    (OTHER_INSTANCE, ME, None, False, "IMDS says this instance is 'aws:///<zone>/" + ME),
    (OTHER_INSTANCE, ME, "us-east-1a", True, "has providerID"),  # NODE_NAME cannot override a mismatch
    ("aws:///us-east-1b/" + ME, ME, "us-east-1a", False, "has providerID"),
    ("kind://docker/x/" + ME, ME, "us-east-1a", False, "has providerID"),
    (PROVIDER + "0", ME, "us-east-1a", False, "has providerID"),
    ("", ME, "us-east-1a", False, "has no providerID yet"),
    ("", ME, "us-east-1a", True, None),                     # the operator named the node
    (PROVIDER, None, "us-east-1a", False, "this instance's id is unknown"),
    (PROVIDER, None, None, True, None),
])
def test_provider_id_rules(provider_id, instance_id, zone, explicit, refused):
    problem = provider_id_problem(provider_id, instance_id, zone, explicit_name=explicit)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem, problem


class _Api:
    """Answers SelfSubjectReview with `username` and GET of a Node from `nodes`."""

    def __init__(self, username: str, nodes: dict):
        self.username = username
        self.nodes = nodes
        self.paths: list = []

    def request(self, method, path, **kwargs):
        self.paths.append((method, path))
        if path.endswith("/selfsubjectreviews"):
            return {"status": {"userInfo": {"username": self.username}}}
        name = path.rsplit("/", 1)[-1]
        if name not in self.nodes:
            raise ApiError(404, "NotFound", f'nodes "{name}" not found', method, path)
        return self.nodes[name]


def _node(provider_id: str = PROVIDER, unschedulable: bool = False) -> dict:
    return {
        "metadata": {"name": NODE, "labels": {"lifecycle": "Ec2Spot"}, "annotations": {"a": "b"}},
        "spec": {"providerID": provider_id, "unschedulable": unschedulable},
    }


def test_the_node_credential_names_the_node():
    api = _Api(f"system:node:{NODE}", {NODE: _node(unschedulable=True)})
    found = find_node(api, "", ME, "us-east-1a")  # type: ignore[arg-type]
    assert (found.name, found.how, found.provider_id) == (NODE, "SelfSubjectReview", PROVIDER)
    assert found.unschedulable and found.labels == {"lifecycle": "Ec2Spot"} and found.annotations == {"a": "b"}


def test_node_name_is_taken_without_asking_who_the_credential_is():
    api = _Api("someone-else", {NODE: _node(provider_id="")})
    found = find_node(api, NODE, ME, "us-east-1a")  # type: ignore[arg-type]
    assert (found.name, found.how) == (NODE, "NODE_NAME")
    assert api.paths == [("GET", f"/api/v1/nodes/{NODE}")]


def test_a_credential_that_is_not_a_node_is_refused():
    with pytest.raises(KubeError, match=r"'kubernetes-admin', which is not a node credential.*set NODE_NAME"):
        find_node(_Api("kubernetes-admin", {}), "", ME, None)  # type: ignore[arg-type]


def test_a_node_of_another_instance_is_refused():
    api = _Api(f"system:node:{NODE}", {NODE: _node(provider_id=OTHER_INSTANCE)})
    with pytest.raises(KubeError, match="refusing to act on another node"):
        find_node(api, "", ME, "us-east-1a")  # type: ignore[arg-type]


def test_a_node_that_cannot_be_read_says_where_its_name_came_from():
    with pytest.raises(KubeError, match=rf"node '{NODE}' \(from SelfSubjectReview\) could not be read: .*404"):
        find_node(_Api(f"system:node:{NODE}", {}), "", ME, None)  # type: ignore[arg-type]
