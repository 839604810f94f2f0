"""The drill's one-shot IMDS responder: this instance's identity and the one notice the drill chose.

`nodeagent drill` points the real agent at this instead of at the instance metadata service. It
has no control API: the notice is fixed when the responder is built, and only the drill process
can start serving it (`arm()`, in-process). A local user or hostNetwork pod that finds the port can
read what it serves, but cannot change it: every method except the token PUT and metadata GETs,
and every path outside the identity and notice paths, is refused (405/404).

It binds 127.0.0.1 on an ephemeral port. IMDSv2 only: GETs need a token from its own PUT.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nodeagent.clock import iso_seconds, utcnow

KINDS = ("spot-itn", "rebalance", "scheduled", "asg")
TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL_S = 21600
# The agent's requests are tiny; anything bigger is not one of them.
MAX_REQUEST_BODY = 4096
# The metadata paths the agent reads (AWS's names; kept here so this module stands alone).
INSTANCE_ID_PATH = "instance-id"
INSTANCE_TYPE_PATH = "instance-type"
INSTANCE_LIFE_CYCLE_PATH = "instance-life-cycle"
LOCAL_HOSTNAME_PATH = "local-hostname"
AVAILABILITY_ZONE_PATH = "placement/availability-zone"
REGION_PATH = "placement/region"
SPOT_ACTION_PATH = "spot/instance-action"
SPOT_TERMINATION_TIME_PATH = "spot/termination-time"
REBALANCE_PATH = "events/recommendations/rebalance"
SCHEDULED_EVENTS_PATH = "events/maintenance/scheduled"
ASG_STATE_PATH = "autoscaling/target-lifecycle-state"


@dataclass(frozen=True)
class DrillIdentity:
    """The real instance's identity, as the drill read it, served unchanged."""

    instance_id: str
    availability_zone: str
    region: str
    instance_type: str
    life_cycle: str
    local_hostname: str

    def paths(self) -> dict[str, str]:
        return {
            INSTANCE_ID_PATH: self.instance_id,
            AVAILABILITY_ZONE_PATH: self.availability_zone,
            REGION_PATH: self.region,
            INSTANCE_TYPE_PATH: self.instance_type,
            INSTANCE_LIFE_CYCLE_PATH: self.life_cycle,
            LOCAL_HOSTNAME_PATH: self.local_hostname,
        }


@dataclass(frozen=True)
class DrillNotice:
    """The notice: its kind and how far away its deadline is (from the moment it is armed)."""

    kind: str
    in_s: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r}")

    def quiet_paths(self) -> dict[str, str]:
        """What IMDS serves with no notice pending (other notice paths are 404)."""
        return {SCHEDULED_EVENTS_PATH: "[]", ASG_STATE_PATH: "InService"}

    def paths(self, now: datetime) -> dict[str, str]:
        """The notice paths once armed at `now`, in IMDS's formats."""
        served = self.quiet_paths()
        if self.kind == "spot-itn":
            when = iso_seconds(now + timedelta(seconds=self.in_s))
            served[SPOT_ACTION_PATH] = json.dumps({"action": "terminate", "time": when})
            served[SPOT_TERMINATION_TIME_PATH] = when
        elif self.kind == "rebalance":
            served[REBALANCE_PATH] = json.dumps({"noticeTime": iso_seconds(now)})
        elif self.kind == "scheduled":
            not_before = now + timedelta(seconds=self.in_s)
            served[SCHEDULED_EVENTS_PATH] = json.dumps(
                [
                    {
                        "NotBefore": scheduled_time(not_before),
                        "NotAfter": scheduled_time(not_before + timedelta(hours=2)),
                        "Code": "system-maintenance",
                        "Description": "nodeagent drill",
                        "EventId": f"instance-event-drill{int(now.timestamp()):x}",
                        "State": "active",
                    }
                ],
                indent=2,
            )
        else:
            served[ASG_STATE_PATH] = "Terminated"
        return served


def scheduled_time(moment: datetime) -> str:
    """Scheduled events' time format: '21 Jan 2019 09:00:43 GMT'."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    moment = moment.astimezone(timezone.utc)
    return f"{moment.day} {months[moment.month - 1]} {moment.year} {moment:%H:%M:%S} GMT"


class DrillImds:
    """Serves `identity` and, once `arm()` is called, `notice`. Nothing can change either."""

    def __init__(self, identity: DrillIdentity, notice: DrillNotice):
        self.identity = identity
        self.notice = notice
        self._lock = threading.Lock()
        self._served: dict[str, str] = {**identity.paths(), **notice.quiet_paths()}
        self._armed = False
        self._tokens: dict[str, float] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> DrillImds:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.responder = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="drill-imds", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> DrillImds:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("DrillImds is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def arm(self, now: datetime | None = None) -> None:
        """Start serving the notice (once; a second call changes nothing)."""
        with self._lock:
            if self._armed:
                return
            self._armed = True
            self._served.update(self.notice.paths(now or utcnow()))

    def served(self) -> dict[str, str]:
        with self._lock:
            return dict(self._served)

    # --- requests (called from the server's threads) ----------------------------------------

    def answer(self, method: str, path: str, headers: Any) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        if path == TOKEN_PATH:
            if method != "PUT":
                return 405, "405 - Method Not Allowed\n", (("Allow", "PUT"),)
            return self._issue_token(headers)
        if not path.startswith(METADATA_PREFIX):
            return 404, "404 - Not Found\n", ()
        if method != "GET":
            return 405, "405 - Method Not Allowed\n", (("Allow", "GET"),)
        remaining = self._authorize(headers.get(TOKEN_HEADER))
        if remaining is None:
            return 401, "401 - Unauthorized\n", ()
        ttl = ((TTL_HEADER, str(remaining)),)
        with self._lock:
            value = self._served.get(path[len(METADATA_PREFIX) :])
        if value is None:
            return 404, "404 - Not Found\n", ttl
        return 200, value, ttl

    def _issue_token(self, headers: Any) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        if headers.get("X-Forwarded-For") is not None:
            return 403, "403 - Forbidden\n", ()
        try:
            ttl = int(str(headers.get(TTL_HEADER, "")).strip())
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL_S:
            return 400, "400 - Bad Request\n", ()
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + ttl
        return 200, token, ((TTL_HEADER, str(ttl)),)

    def _authorize(self, token: str | None) -> int | None:
        """The token's remaining seconds, or None when it is missing, unknown or expired."""
        if token is None:
            return None
        with self._lock:
            expires = self._tokens.get(token)
        now = time.monotonic()
        if expires is None or expires <= now:
            return None
        return max(1, int(expires - now))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    responder: DrillImds


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle or trickling client gives up its thread

    def log_message(self, format: str, *args: Any) -> None:  # the drill prints its own timeline
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BODY:
            self._send(400, "400 - Bad Request\n", (), close=True)
            return
        if length:
            self.rfile.read(length)  # read and ignored: nothing here takes a body
        path = self.path.split("?", 1)[0]
        status, body, headers = self.server.responder.answer(method, path, self.headers)
        self._send(status, body, headers, close=False, head=method == "HEAD")

    def _send(
        self, status: int, body: str, headers: tuple[tuple[str, str], ...], close: bool, head: bool = False
    ) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(data)
