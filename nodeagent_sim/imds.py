"""IMDS simulator: a faithful-enough EC2 instance metadata service on a local socket.

Used by the tests, `nodeagent demo`, `nodeagent drill` and `nodeagent imds-sim --port N`.
Stdlib only (http.server.ThreadingHTTPServer in a background thread); binds 127.0.0.1 by
default and also accepts 169.254.169.254:80 inside a private `unshare --net` namespace.

In-process use:

    with ImdsSim() as sim:                 # started; sim.url == "http://127.0.0.1:PORT"
        sim.schedule_spot(120)             # spot/instance-action appears now, time = now+120s
        ...

Behaviour (as the real IMDS behaves):
- PUT /latest/api/token needs X-aws-ec2-metadata-token-ttl-seconds in 1..21600 (else 400); a PUT
  that carries X-Forwarded-For is refused (403). The answer carries the TTL header.
- GETs under /latest/meta-data/ carry X-aws-ec2-metadata-token. A missing token gets 401 when
  IMDSv2 is required (require_v2=True and allow_v1=False, the default); an invalid or expired
  token gets 401 always. Tokens expire after their TTL. Every GET answered with a valid token
  carries X-aws-ec2-metadata-token-ttl-seconds = the token's remaining seconds.
- Every metadata response is text/plain, JSON bodies included; 404 when nothing is there.
  HTTP/1.1 keep-alive with Content-Length.
- Paths: spot/instance-action, spot/termination-time (404 unless a spot notice is pending),
  events/recommendations/rebalance (404 unless set), events/maintenance/scheduled ("[]" when
  none: real IMDS answers 200 "[]" -- NTH treats a non-2xx there as an error on every poll, so
  an empty list must be the normal answer), autoscaling/target-lifecycle-state (default
  "InService"; set_asg_state(None) makes it 404 as on an instance outside an ASG), instance-id,
  instance-type, instance-life-cycle, local-hostname, placement/availability-zone,
  placement/region, iam/security-credentials/ (the role) and iam/security-credentials/<role> (its
  temporary keys, JSON; set_credentials), tags/instance/<key> (404 unless set_instance_tags: instance
  metadata tags off, as by default).

Simulator-only knobs: set_v1_only (token PUT answers 405 or 403 and token-less GETs are served,
like an endpoint that only speaks v1), hang_token_put (the PUT is never answered, as when the
response cannot cross hop limit 1), inject (faults for the next K matching requests: a delay,
then a status and/or a replacement body), expire_tokens.

Observability: `request_log` (list of (monotonic_t, method, path, status); status 0 = no answer
was sent; the most recent REQUEST_LOG_MAX entries), `connections` (TCP connections accepted),
`counters()` (totals since start, and `held`: token PUTs being held unanswered right now).

HTTP control API (JSON bodies; answers {"ok": true} or 400 {"error": "..."}). Control requests
are not in request_log and bypass faults and tokens:

    POST /_sim/spot            {"in": 120, "action": "terminate"}   schedule a notice
                               {"body": {...} | "raw text" | null}   raw control (null clears)
                               {"clear": true}
    POST /_sim/rebalance       {} (now) | {"time": "2020-10-27T08:22:00Z"} | {"in": 30}
                               | {"clear": true}
    POST /_sim/scheduled       {"events": [...]}                     the full list
    POST /_sim/asg             {"state": "Terminated" | null}
    POST /_sim/life-cycle      {"life_cycle": "spot" | "on-demand"}
    POST /_sim/credentials     {"access_key": ..., "secret_key": ..., "token": ..., "expires_in_s": 21600}
    POST /_sim/tags            {"tags": {"aws:autoscaling:groupName": "nodes"} | null}
    POST /_sim/clear           {}                                    clear_all()
    POST /_sim/expire-tokens   {}
    POST /_sim/inject          {"count": 3, "status": 500, "delay_s": 0, "body": "text",
                                "body_b64": "...", "path_prefix": "spot/", "method": "GET"}
    POST /_sim/v1-only         {"enabled": true, "status": 405}
    POST /_sim/hang-token-put  {"enabled": true}
    GET  /_sim/state           {"counters": {...}, "request_log": [[t, method, path, status]...]}
"""
from __future__ import annotations

import base64
import json
import math
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from nodeagent.clock import iso_seconds

TOKEN_PATH = "/latest/api/token"
METADATA_PREFIX = "/latest/meta-data/"
CONTROL_PREFIX = "/_sim/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL_S = 21600
MAX_REQUEST_BODY = 1 << 20
# Idle keep-alive connections are closed after this long (keeps handler threads bounded).
IDLE_TIMEOUT_S = 60.0
# request_log keeps the most recent entries only, so a long-running `imds-sim` stays small.
REQUEST_LOG_MAX = 200_000

LogEntry = Tuple[float, str, str, int]

_NOW = object()  # default for set_rebalance: "now"


@dataclass
class _Fault:
    remaining: int
    status: Optional[int]
    delay_s: float
    body: Optional[bytes]
    path_prefix: Optional[str]
    method: Optional[str]

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b""
    headers: Tuple[Tuple[str, str], ...] = ()
    content_type: str = "text/plain"


class ImdsSim:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        require_v2: bool = True,
        allow_v1: bool = False,
        instance_id: str = "i-0123456789abcdef0",
        availability_zone: str = "us-east-1a",
        region: str = "us-east-1",
        instance_type: str = "m5.large",
        life_cycle: str = "spot",
        local_hostname: str = "ip-10-0-1-2.ec2.internal",
        role: Optional[str] = "eks-node-role",
        instance_tags: Optional[Dict[str, str]] = None,
    ):
        self.host = host
        self._requested_port = port
        self._v1_allowed = (not require_v2) or allow_v1
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._open_sockets: "set[socket.socket]" = set()
        # identity
        self._static: Dict[str, str] = {
            "instance-id": instance_id,
            "instance-type": instance_type,
            "local-hostname": local_hostname,
            "placement/availability-zone": availability_zone,
            "placement/region": region,
        }
        self._life_cycle = self._check_life_cycle(life_cycle)
        # instance profile credentials (iam/security-credentials/<role>) and instance tags
        # (tags/instance/<key>; None = instance metadata tags not enabled: 404)
        self._role = role
        self._credentials: Optional[Dict[str, str]] = None
        self.set_credentials("ASIASIMULATEDKEY0001", "simulated/secret/key/0001", "simulated-session-token-0001")
        self._tags: Optional[Dict[str, str]] = dict(instance_tags) if instance_tags is not None else None
        # notices
        self._spot_body: Optional[str] = None
        self._spot_time: Optional[str] = None
        self._rebalance_body: Optional[str] = None
        self._scheduled_body = "[]"
        self._asg_state: Optional[str] = "InService"
        # faults and modes
        self._faults: List[_Fault] = []
        self._v1_only_status: Optional[int] = None
        self._hang_token_put = False
        self._held = 0  # token PUTs being held unanswered (hang_token_put)
        # tokens: value -> monotonic expiry
        self._tokens: Dict[str, float] = {}
        # observability
        self._log: "deque[LogEntry]" = deque(maxlen=REQUEST_LOG_MAX)
        self._connections = 0
        self._tokens_issued = 0
        self._status_totals: Dict[int, int] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "ImdsSim":
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _Handler)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"imds-sim:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes hung PUTs and injected delays
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise outlive the server and keep answering.
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "ImdsSim":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ImdsSim is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- control --------------------------------------------------------------------------------

    def schedule_spot(self, in_seconds: float, action: str = "terminate") -> None:
        """A spot interruption notice appears now, with time = now + in_seconds."""
        when = iso_seconds(datetime.now(timezone.utc) + timedelta(seconds=in_seconds))
        self.set_spot({"action": action, "time": when})

    def set_spot(self, body: Union[Dict[str, Any], str, None]) -> None:
        """Raw control of spot/instance-action (None = 404). A dict is served as JSON."""
        with self._lock:
            if body is None:
                self._spot_body = self._spot_time = None
                return
            self._spot_body = json.dumps(body) if isinstance(body, dict) else str(body)
            doc = body
            if isinstance(body, str):
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
            when = doc.get("time") if isinstance(doc, dict) else None
            self._spot_time = when if isinstance(when, str) else None

    def set_rebalance(self, notice_time: Union[datetime, None, object] = _NOW) -> None:
        """events/recommendations/rebalance: now by default; None clears (404)."""
        if notice_time is _NOW:
            notice_time = datetime.now(timezone.utc)
        with self._lock:
            if notice_time is None:
                self._rebalance_body = None
            elif isinstance(notice_time, datetime):
                self._rebalance_body = json.dumps({"noticeTime": iso_seconds(notice_time)})
            else:
                raise TypeError("notice_time must be a datetime or None")

    def set_scheduled(self, events: Union[List[Dict[str, Any]], str]) -> None:
        """The full scheduled-events list (e.g. flip an event's State between polls)."""
        body = events if isinstance(events, str) else json.dumps(events, indent=2)
        with self._lock:
            self._scheduled_body = body

    def set_asg_state(self, state: Optional[str]) -> None:
        """autoscaling/target-lifecycle-state; None = 404 (not in an ASG)."""
        with self._lock:
            self._asg_state = state

    def set_life_cycle(self, life_cycle: str) -> None:
        life_cycle = self._check_life_cycle(life_cycle)
        with self._lock:
            self._life_cycle = life_cycle

    def set_credentials(self, access_key: str, secret_key: str, token: str,
                        expires_in_s: float = 6 * 3600, code: str = "Success") -> None:
        """What iam/security-credentials/<role> serves (the instance profile's temporary keys)."""
        now = datetime.now(timezone.utc)
        with self._lock:
            self._credentials = {
                "Code": code, "LastUpdated": iso_seconds(now), "Type": "AWS-HMAC",
                "AccessKeyId": access_key, "SecretAccessKey": secret_key, "Token": token,
                "Expiration": iso_seconds(now + timedelta(seconds=expires_in_s)),
            }

    def set_role(self, role: Optional[str]) -> None:
        """None: no instance profile (iam/security-credentials/ answers 404)."""
        with self._lock:
            self._role = role

    def set_instance_tags(self, tags: Optional[Dict[str, str]]) -> None:
        """None: instance metadata tags are not enabled (tags/instance/... answer 404)."""
        with self._lock:
            self._tags = dict(tags) if tags is not None else None

    def clear_all(self) -> None:
        """Clear every notice, fault and mode knob (identity and tokens are kept)."""
        with self._lock:
            self._spot_body = self._spot_time = self._rebalance_body = None
            self._scheduled_body = "[]"
            self._asg_state = "InService"
            self._faults.clear()
            self._v1_only_status = None
            self._hang_token_put = False

    def expire_tokens(self) -> None:
        """Every token issued so far gets 401 from now on."""
        with self._lock:
            self._tokens.clear()

    def inject(
        self,
        count: int,
        *,
        status: Optional[int] = None,
        delay_s: float = 0,
        body: Optional[bytes] = None,
        path_prefix: Optional[str] = None,
        method: Optional[str] = None,
    ) -> None:
        """Faults for the next `count` matching requests: wait delay_s, then answer `status`
        (with `body`, or a short text), or -- status None, body given -- answer 200 with `body`
        after the usual token checks. path_prefix is a URL path ("/latest/api/token") or one
        relative to /latest/meta-data/ ("spot/"); method e.g. "PUT". Faults queue in order.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if path_prefix is not None and not path_prefix.startswith("/"):
            path_prefix = METADATA_PREFIX + path_prefix
        if isinstance(body, str):
            body = body.encode("utf-8")
        fault = _Fault(count, status, float(delay_s), body, path_prefix,
                       method.upper() if method else None)
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop the injected faults that have not fired yet; notices and modes stay as they are."""
        with self._lock:
            self._faults.clear()

    def set_v1_only(self, flag: bool, status: int = 405) -> None:
        """Token PUT -> `status` (405 or 403) and token-less GETs are served."""
        if flag and status not in (403, 404, 405):
            raise ValueError("a v1-only endpoint answers the token PUT with 403, 404 or 405")
        with self._lock:
            self._v1_only_status = status if flag else None

    def hang_token_put(self, flag: bool) -> None:
        """The token PUT is never answered (until stop): the hop-limit-1 container case."""
        with self._lock:
            self._hang_token_put = bool(flag)

    # --- observability --------------------------------------------------------------------------

    @property
    def request_log(self) -> List[LogEntry]:
        with self._lock:
            return list(self._log)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (control API connections included)."""
        with self._lock:
            return self._connections

    def counters(self) -> Dict[str, int]:
        with self._lock:
            return {
                "connections": self._connections,
                "requests": sum(self._status_totals.values()),
                "tokens_issued": self._tokens_issued,
                "tokens_live": len(self._tokens),
                "faults_pending": sum(f.remaining for f in self._faults),
                "held": self._held,
                **{f"status_{code}": n for code, n in sorted(self._status_totals.items())},
            }

    # --- request handling (called from handler threads) -----------------------------------------

    @staticmethod
    def _check_life_cycle(value: str) -> str:
        if value not in ("spot", "on-demand", "scheduled"):
            raise ValueError(f"life cycle must be spot, on-demand or scheduled, got {value!r}")
        return value

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._open_sockets.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open_sockets.discard(sock)

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log.append((time.monotonic(), method, path, status))
            self._status_totals[status] = self._status_totals.get(status, 0) + 1

    def _take_fault(self, method: str, path: str) -> Optional[_Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, method: str, path: str, headers: Any) -> Optional[_Answer]:
        """The answer to one metadata request, or None for "never answer"."""
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay_s > 0 and self._stopping.wait(fault.delay_s):
                return None
            if fault.status is not None:
                default = f"{fault.status} injected by imds-sim\n".encode()
                return _Answer(fault.status, fault.body if fault.body is not None else default)
        if path == TOKEN_PATH:
            if method != "PUT":
                return _Answer(405, b"405 - Method Not Allowed\n", (("Allow", "PUT"),))
            return self._issue_token(headers)
        if not path.startswith(METADATA_PREFIX):
            return _Answer(404, b"404 - Not Found\n")
        if method != "GET":
            return _Answer(405, b"405 - Method Not Allowed\n", (("Allow", "GET"),))
        auth = self._authorize(headers)
        if isinstance(auth, _Answer):
            return auth
        extra = ((TTL_HEADER, str(auth)),) if auth is not None else ()
        if fault is not None and fault.body is not None:
            return _Answer(200, fault.body, extra)
        value = self._lookup(path[len(METADATA_PREFIX):])
        if value is None:
            return _Answer(404, b"404 - Not Found\n", extra)
        return _Answer(200, value.encode("utf-8"), extra)

    def _issue_token(self, headers: Any) -> Optional[_Answer]:
        with self._lock:
            hang = self._hang_token_put
            v1_only_status = self._v1_only_status
        if hang:
            with self._lock:
                self._held += 1
            try:
                self._stopping.wait()
            finally:
                with self._lock:
                    self._held -= 1
            return None
        if v1_only_status is not None:
            return _Answer(v1_only_status, f"{v1_only_status} - IMDSv2 not supported\n".encode())
        if headers.get("X-Forwarded-For") is not None:
            return _Answer(403, b"403 - Forbidden\n")
        raw_ttl = headers.get(TTL_HEADER)
        try:
            ttl = int(raw_ttl.strip()) if raw_ttl is not None else 0
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL_S:
            return _Answer(400, b"400 - Bad Request\n")
        token = secrets.token_urlsafe(40)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
            self._tokens_issued += 1
        return _Answer(200, token.encode("ascii"), ((TTL_HEADER, str(ttl)),))

    def _authorize(self, headers: Any) -> Union[_Answer, int, None]:
        """401 answer, the token's remaining TTL, or None for an allowed token-less request."""
        token = headers.get(TOKEN_HEADER)
        with self._lock:
            if token is None:
                if self._v1_allowed or self._v1_only_status is not None:
                    return None
                return _Answer(401, b"401 - Unauthorized\n")
            expires = self._tokens.get(token)
            now = time.monotonic()
            if expires is None or expires <= now:
                self._tokens.pop(token, None)
                return _Answer(401, b"401 - Unauthorized\n")
            return max(1, math.ceil(expires - now))

    def _lookup(self, rel: str) -> Optional[str]:
        with self._lock:
            if rel in self._static:
                return self._static[rel]
            if rel == "instance-life-cycle":
                return self._life_cycle
            if rel == "spot/instance-action":
                return self._spot_body
            if rel == "spot/termination-time":
                return self._spot_time if self._spot_body is not None else None
            if rel == "events/recommendations/rebalance":
                return self._rebalance_body
            if rel == "events/maintenance/scheduled":
                return self._scheduled_body
            if rel == "autoscaling/target-lifecycle-state":
                return self._asg_state
            if rel.startswith("iam/security-credentials/") and self._role is not None:
                name = rel[len("iam/security-credentials/"):]
                if not name:
                    return self._role
                if name == self._role and self._credentials is not None:
                    return json.dumps(self._credentials, indent=2)
                return None
            if rel.startswith("tags/instance") and self._tags is not None:
                key = rel[len("tags/instance"):].lstrip("/")
                if not key:
                    return "\n".join(sorted(self._tags))
                return self._tags.get(key)
        return None

    # --- HTTP control API -----------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> Tuple[int, Dict[str, Any]]:
        name = path[len(CONTROL_PREFIX):].strip("/")
        if method == "GET" and name == "state":
            with self._lock:
                log = [list(entry) for entry in self._log]
            return 200, {"counters": self.counters(), "request_log": log}
        if method != "POST":
            return 405, {"error": "control endpoints take POST (GET /_sim/state)"}
        try:
            doc = json.loads(body.decode("utf-8")) if body.strip() else {}
        except ValueError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        if not isinstance(doc, dict):
            return 400, {"error": "body must be a JSON object"}
        handler = _CONTROL.get(name)
        if handler is None:
            return 404, {"error": f"unknown control endpoint {name!r}", "known": sorted(_CONTROL)}
        try:
            handler(self, doc)
        except (ValueError, TypeError, KeyError) as exc:
            return 400, {"error": f"{type(exc).__name__}: {exc}"}
        return 200, {"ok": True}


def _ctl_spot(sim: ImdsSim, doc: Dict[str, Any]) -> None:
    if doc.get("clear"):
        sim.set_spot(None)
    elif "body" in doc:
        sim.set_spot(doc["body"])
    else:
        sim.schedule_spot(float(doc.get("in", 120)), str(doc.get("action", "terminate")))


def _ctl_rebalance(sim: ImdsSim, doc: Dict[str, Any]) -> None:
    if doc.get("clear"):
        sim.set_rebalance(None)
    elif "time" in doc:
        from nodeagent.timefmt import parse_rfc3339_utc

        sim.set_rebalance(parse_rfc3339_utc(doc["time"]))
    else:
        sim.set_rebalance(datetime.now(timezone.utc) + timedelta(seconds=float(doc.get("in", 0))))


def _ctl_scheduled(sim: ImdsSim, doc: Dict[str, Any]) -> None:
    events = doc["events"]
    if not isinstance(events, (list, str)):
        raise TypeError("events must be a list (or a raw string body)")
    sim.set_scheduled(events)


def _ctl_inject(sim: ImdsSim, doc: Dict[str, Any]) -> None:
    body: Optional[bytes] = None
    if doc.get("body_b64") is not None:
        body = base64.b64decode(doc["body_b64"], validate=True)
    elif doc.get("body") is not None:
        body = str(doc["body"]).encode("utf-8")
    status = doc.get("status")
    sim.inject(
        int(doc.get("count", 1)),
        status=int(status) if status is not None else None,
        delay_s=float(doc.get("delay_s", 0)),
        body=body,
        path_prefix=doc.get("path_prefix"),
        method=doc.get("method"),
    )


_CONTROL = {
    "spot": _ctl_spot,
    "rebalance": _ctl_rebalance,
    "scheduled": _ctl_scheduled,
    "asg": lambda sim, doc: sim.set_asg_state(doc.get("state")),
    "life-cycle": lambda sim, doc: sim.set_life_cycle(doc["life_cycle"]),
    "credentials": lambda sim, doc: sim.set_credentials(str(doc["access_key"]), str(doc["secret_key"]),
                                                        str(doc["token"]), float(doc.get("expires_in_s", 21600)),
                                                        str(doc.get("code", "Success"))),
    "tags": lambda sim, doc: sim.set_instance_tags(doc.get("tags")),
    "clear": lambda sim, doc: sim.clear_all(),
    "expire-tokens": lambda sim, doc: sim.expire_tokens(),
    "inject": _ctl_inject,
    "v1-only": lambda sim, doc: sim.set_v1_only(bool(doc.get("enabled", True)),
                                                int(doc.get("status", 405))),
    "hang-token-put": lambda sim, doc: sim.hang_token_put(bool(doc.get("enabled", True))),
}


# --- HTTP plumbing --------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: ImdsSim

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); pointless here and slow in
        # a network namespace with no resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus the client's
        # delayed ACK adds ~40 ms to every answer (real IMDS answers in well under 1 ms).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.sim._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.sim._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read request_log
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _read_body(self) -> Optional[bytes]:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0 or n > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(n)

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(_Answer(400, b"400 - Bad Request\n"), method)
            return
        if path.startswith(CONTROL_PREFIX):
            status, doc = sim._control(method, path, body)
            payload = (json.dumps(doc) + "\n").encode("utf-8")
            self._send(_Answer(status, payload, content_type="application/json"), method)
            return
        answer = sim._answer(method, path, self.headers)
        if answer is None:  # hung PUT / delay cut short by stop(): never answer
            sim._record(method, path, 0)
            self.close_connection = True
            return
        sim._record(method, path, answer.status)
        self._send(answer, method)

    def _send(self, answer: _Answer, method: str) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(answer.body)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. its read timeout fired during a delay)
            self.close_connection = True


# --- `nodeagent imds-sim` -------------------------------------------------------------------------


def main_imds_sim(port: int, host: str = "127.0.0.1", **sim_options: Any) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. Prints the URL once listening.

    host may be "169.254.169.254" (port 80) inside an `unshare --net` namespace.
    Must run in the main thread (it installs signal handlers).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            sim = ImdsSim(host, port, **sim_options).start()
        except OSError as exc:
            print(f"imds-sim: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            print(f"imds-sim: listening on {sim.url} (control API: {sim.url}{CONTROL_PREFIX})",
                  flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            sim.stop()
        print("imds-sim: stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
