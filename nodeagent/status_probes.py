"""`nodeagent status`: can IMDS and the API be reached, and what do they say about this node.

Short timeouts and a single attempt for IMDS; the API probe runs on its own thread and is given
up after API_PROBE_TIMEOUT_S, so a hung credential plugin or server never hangs `status`.
"""

from __future__ import annotations

import threading
import time

from nodeagent.imds import ImdsClient, ImdsError, ImdsOptions
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.errors import KubeError
from nodeagent.kube.identity import find_node
from nodeagent.kube.node import LABEL_AGENT, LABEL_VERSION
from nodeagent.other_handlers import find_other_handlers

API_PROBE_TIMEOUT_S = 15.0


def probe_imds(settings, checked: bool) -> tuple[JsonObject, object]:
    """(section, identity or None). Short timeouts and a single attempt."""
    section: JsonObject = {
        "checked": checked,
        "reachable": None,
        "url": settings.imds_url,
        "latency_ms": None,
        "instance_id": None,
        "availability_zone": None,
        "instance_type": None,
        "life_cycle": None,
        "error": None,
    }
    if not checked:
        return section, None

    options = ImdsOptions(
        base_url=settings.imds_url,
        allow_v1=settings.imds_allow_v1,
        connect_timeout_s=0.5,
        read_timeout_s=1.0,
        retry_attempts=1,
    )
    started = time.monotonic()
    try:
        with ImdsClient(options) as client:
            identity = client.identity()
    except ImdsError as error:
        section.update(reachable=False, error=str(error))
        return section, None
    section.update(
        reachable=True,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
        instance_id=identity.instance_id,
        availability_zone=identity.availability_zone,
        instance_type=identity.instance_type,
        life_cycle=identity.life_cycle,
    )
    return section, identity


def probe_api(settings, identity, checked: bool, timeout_s: float = API_PROBE_TIMEOUT_S) -> JsonObject:
    section: JsonObject = {
        "checked": checked,
        "reachable": None,
        "server": None,
        "latency_ms": None,
        "node": None,
        "node_from": None,
        "unschedulable": None,
        "agent_label": None,
        "version_label": None,
        "error": None,
        "other_handlers": [],
    }
    if not checked:
        return section
    outcome: JsonObject = {}
    worker = threading.Thread(target=_api_probe_body, args=(settings, identity, outcome), daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        section.update(
            reachable=False, server=outcome.get("server"), error=f"no answer within {timeout_s:g}s"
        )
        return section
    section.update(outcome)
    return section


def _api_probe_body(settings, identity, out: JsonObject) -> None:

    api = None
    try:
        api = KubeApi(
            KubeOptions(
                kubeconfig=settings.kubeconfig,
                connect_timeout_s=2.0,
                read_timeout_s=3.0,
                exec_timeout_s=min(settings.exec_plugin_timeout, 10.0),
                pool_size=2,
            )
        )
        out["server"] = api.host
        started = time.monotonic()
        if api.tokens is not None:
            api.tokens.refresh()
        node = find_node(
            api,
            settings.node_name,
            identity.instance_id if identity is not None else None,
            identity.availability_zone if identity is not None else None,
        )
        out.update(
            reachable=True,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            node=node.name,
            node_from=node.how,
            unschedulable=node.unschedulable,
            agent_label=node.labels.get(LABEL_AGENT),
            version_label=node.labels.get(LABEL_VERSION),
        )
        listing = api.request("GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={node.name}")])
        items = listing.get("items")
        found = find_other_handlers(items if isinstance(items, list) else [], node.name)
        out["other_handlers"] = [f"{handler.key} ({handler.matched_by})" for handler in found]
    except KubeError as error:
        out.update(reachable=False, error=str(error))
    except Exception as error:  # a probe must never crash `status`
        out.update(reachable=False, error=f"{type(error).__name__}: {error}")
    finally:
        if api is not None:
            api.close()
