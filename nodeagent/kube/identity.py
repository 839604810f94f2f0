"""Which Node this agent acts on: its name (NODE_NAME, else the credential's SelfSubjectReview)
and the check that the Node's providerID names this instance."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from nodeagent.kube.client import KubeApi
from nodeagent.kube.errors import ApiError, KubeError

log = logging.getLogger("nodeagent.kube")


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    provider_id: str
    labels: dict[str, str]
    unschedulable: bool
    how: str  # how the name was learned
    annotations: dict[str, str] = field(default_factory=dict)


def whoami(api: KubeApi) -> str:
    review = api.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(((review.get("status") or {}).get("userInfo") or {}).get("username", ""))


PROVIDER_ID = re.compile(r"aws:///([^/]*)/([^/]+)")


def provider_id_problem(
    provider_id: str, instance_id: str | None, zone: str | None, explicit_name: bool
) -> str | None:
    """Why the Node with this providerID may not be taken for this instance, or None. Pure.

    The agent cordons and drains whatever Node it finds, so the Node must name this instance:
    its providerID (aws:///<zone>/<instance id>) has to carry IMDS's instance id (and zone, when
    both are known). What cannot be checked, an empty providerID (a Node not yet initialised) or
    an instance id IMDS did not give, is refused unless the operator named the node (NODE_NAME);
    a providerID that names another instance is refused even then (a NODE_NAME typo)."""
    if not provider_id or not instance_id:
        if explicit_name:
            return None
        missing = (
            "has no providerID yet"
            if not provider_id
            else "cannot be checked: this instance's id is unknown (IMDS did not give it)"
        )
        return (
            f"{missing}, so it cannot be matched to this instance"
            f"{' (' + instance_id + ')' if instance_id else ''} (set NODE_NAME to name this node yourself)"
        )
    match = PROVIDER_ID.fullmatch(provider_id)
    if not match or match.group(2) != instance_id or (zone and match.group(1) and match.group(1) != zone):
        expected = f"aws:///{zone or '<zone>'}/{instance_id}"
        return f"has providerID {provider_id!r}, but IMDS says this instance is {expected!r}"
    return None


def find_node(api: KubeApi, override_name: str, instance_id: str | None, zone: str | None) -> NodeIdentity:
    """Learn this node's name (NODE_NAME, else SelfSubjectReview) and check its providerID."""
    tried: list[str] = []
    if override_name:
        name, how = override_name, "NODE_NAME"
    else:
        try:
            username = whoami(api)
        except ApiError as error:
            raise KubeError(
                f"cannot tell which node this is: SelfSubjectReview failed ({error}); set NODE_NAME"
            ) from None
        tried.append(f"SelfSubjectReview says {username!r}")
        if not username.startswith("system:node:"):
            raise KubeError(
                f"cannot tell which node this is: {'; '.join(tried)}, which is not a node credential "
                "(system:node:<name>); set NODE_NAME"
            )
        name, how = username[len("system:node:") :], "SelfSubjectReview"
    try:
        node = api.request("GET", f"/api/v1/nodes/{name}")
    except ApiError as error:
        raise KubeError(f"node {name!r} (from {how}) could not be read: {error}") from None
    spec = node.get("spec") or {}
    provider_id = str(spec.get("providerID") or "")
    problem = provider_id_problem(provider_id, instance_id, zone, explicit_name=how == "NODE_NAME")
    if problem:
        raise KubeError(f"node {name!r} (from {how}) {problem}; refusing to act on another node")
    if not provider_id or not instance_id:
        log.warning(
            "node %s: %s; trusting NODE_NAME",
            name,
            "has no providerID"
            if not provider_id
            else "this instance's id is unknown, so its providerID cannot be checked",
        )
    metadata = node.get("metadata") or {}
    return NodeIdentity(
        name=name,
        provider_id=provider_id,
        labels=dict(metadata.get("labels") or {}),
        unschedulable=bool(spec.get("unschedulable")),
        how=how,
        annotations=dict(metadata.get("annotations") or {}),
    )
