"""A wall-clock deadline for each request made with `requests` (the webhook, Auto Scaling).

requests' timeouts, like urllib3's, apply to each connect and each read: a server that trickles
its answer a byte at a time holds a request for as long as it likes. The Kubernetes client cuts
every request at its deadline (nodeagent.kube.deadline); this gives a requests Session the same
tracked connections, so a request made inside `DEADLINES.limit(seconds)` is cut at that moment
by the same reaper thread and fails at once.

    session = deadline_session()
    with DEADLINES.limit(8.0) as limit:
        session.post(...)            # limit.expired tells a cut request from another failure
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from nodeagent.kube.deadline import DEADLINES, Limit, install

__all__ = ["DEADLINES", "DeadlineAdapter", "Limit", "deadline_session", "too_slow"]


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connection pools, direct or through an HTTP(S) proxy, report their
    sockets to DEADLINES. SOCKS pools keep their own connection classes (no deadline there)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        install(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            install(manager)
        return manager


def deadline_session() -> requests.Session:
    """A Session (trust_env: the standard proxy variables) whose requests can be cut at a deadline."""
    session = requests.Session()
    adapter = DeadlineAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def too_slow(seconds: float) -> str:
    return f"no complete answer within {seconds:g}s (the server is sending too slowly); gave up"
