"""Actions on this node's own Node object: cordon, labels, annotations, the taint attempt.

Each action is idempotent. Everything here carries out orders from the agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, KubeApi
from nodeagent.kube.errors import ApiError

log = logging.getLogger("nodeagent.kube.node")

PREFIX = "nodeagent.io"
LABEL_KIND = f"{PREFIX}/interruption"
LABEL_NOTICE = f"{PREFIX}/notice-id"
LABEL_AGENT = f"{PREFIX}/agent"
LABEL_VERSION = f"{PREFIX}/version"
ANNOTATION_DEADLINE = f"{PREFIX}/deadline"
ANNOTATION_ACTION = f"{PREFIX}/action"
ANNOTATION_RECORD = f"{PREFIX}/record"
EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"
SPOT_LABEL = ("lifecycle", "Ec2Spot")
OUR_LABELS = (LABEL_KIND, LABEL_NOTICE, EXCLUDE_LB)
OUR_ANNOTATIONS = (ANNOTATION_DEADLINE, ANNOTATION_ACTION, ANNOTATION_RECORD)


@dataclass
class NodeActions:
    api: KubeApi
    name: str
    dry_run: bool = False
    taint_forbidden: bool = False

    def _query(self) -> tuple[tuple[str, str], ...]:
        return (("dryRun", "All"),) if self.dry_run else ()

    def get(self) -> JsonObject:
        return self.api.request("GET", f"/api/v1/nodes/{self.name}")

    def set_unschedulable(self, unschedulable: bool) -> bool:
        """Returns True when the node changed (so an undo knows whether it was ours)."""
        node = self.get()
        current = bool((node.get("spec") or {}).get("unschedulable"))
        if current == unschedulable:
            return False
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}",
            query=self._query(),
            body={"spec": {"unschedulable": unschedulable}},
            content_type=STRATEGIC_MERGE_PATCH,
        )
        return True

    def cordon(self) -> None:
        """Blind patch: one request, no read first (this is the latency-critical path)."""
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}",
            query=self._query(),
            body={"spec": {"unschedulable": True}},
            content_type=STRATEGIC_MERGE_PATCH,
        )

    def uncordon(self) -> None:
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}",
            query=self._query(),
            body={"spec": {"unschedulable": False}},
            content_type=STRATEGIC_MERGE_PATCH,
        )

    def label(
        self,
        labels: dict[str, str | None],
        annotations: dict[str, str | None] | None = None,
        timeout_s: float | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> None:
        """Merge patch; a None value removes the key. timeout_s bounds connect and read;
        give_up ends a wait for its turn at the gate."""
        metadata: JsonObject = {"labels": labels}
        if annotations:
            metadata["annotations"] = annotations
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}",
            query=self._query(),
            body={"metadata": metadata},
            content_type=MERGE_PATCH,
            timeout=(timeout_s, timeout_s) if timeout_s is not None else None,
            give_up=give_up,
        )

    def try_taint(self, key: str, value: str, effect: str) -> bool:
        """Node credentials may not touch spec.taints; the cordon's own taint is the fallback.

        A JSON patch that appends, guarded by resourceVersion: a strategic merge patch of
        spec.taints replaces the whole list (NodeSpec.Taints has no merge strategy).
        """
        if self.taint_forbidden:
            return False
        node = self.get()
        taints = (node.get("spec") or {}).get("taints") or []
        if any(t.get("key") == key and t.get("effect") == effect for t in taints):
            return True
        taint = {"key": key, "value": value, "effect": effect}
        if taints:
            patch = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": (node.get("metadata") or {}).get("resourceVersion"),
                },
                {"op": "add", "path": "/spec/taints/-", "value": taint},
            ]
        else:
            patch = [{"op": "add", "path": "/spec/taints", "value": [taint]}]
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                query=self._query(),
                body=patch,
                content_type=JSON_PATCH,
            )
            return True
        except ApiError as error:
            if error.status == 403:
                self.taint_forbidden = True
                log.warning(
                    "node credentials cannot taint (%s); the cordon's own "
                    "node.kubernetes.io/unschedulable:NoSchedule taint keeps new pods off instead",
                    error.message,
                )
                return False
            raise

    def remove_taint(self, key: str) -> None:
        if self.taint_forbidden:
            return
        node = self.get()
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != key]
        if len(kept) == len(taints):
            return
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": (node.get("metadata") or {}).get("resourceVersion"),
            },
            {"op": "replace", "path": "/spec/taints", "value": kept},
        ]
        try:
            self.api.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                query=self._query(),
                body=patch,
                content_type=JSON_PATCH,
            )
        except ApiError as error:
            if error.status != 403:
                raise


def parse_taint(spec: str, kind: str, notice_id: str) -> tuple[str, str, str] | None:
    """'key[=value]:Effect' with <kind>/<id> placeholders -> (key, value, effect)."""
    if not spec:
        return None
    key_value, effect = spec.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    value = value.replace("<kind>", kind).replace("<id>", notice_id)[:63]
    return key, value, effect
