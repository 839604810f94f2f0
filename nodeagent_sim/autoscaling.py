"""Auto Scaling simulator: CompleteLifecycleAction and RecordLifecycleActionHeartbeat over the Query
API, on HTTPS on loopback (a throwaway CA from kube_tls; clients verify it with ASG_CA_BUNDLE).

    with AutoScalingSim(credentials={"AKID": ("secret", "token")}) as asg:   # asg.url, asg.ca_file
        asg.add_hook("nodes", "drain-hook", heartbeat_timeout_s=60)
        asg.begin_termination("i-0123...", "nodes", "drain-hook", imds=imds_sim)  # Terminating:Wait
        ...
        asg.calls          # every call: what was asked and what was answered
        asg.action(...)    # the lifecycle action: heartbeats, released_at, released_by

Every request is checked as AWS would: the Signature Version 4 signature (verified here with its
own implementation, not the client's library), the access key and its session token, the scope's
region and service, the request time; then the action, the API version, the group, the hook, the
instance id and its state (only `Terminating:Wait` has a lifecycle action to heartbeat or
complete). An action that gets no heartbeat within the hook's timeout times out (the instance is
released, as AWS does). `refuse` answers the next calls with an error (AccessDenied, say).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import socketserver
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, quote, urlsplit

from nodeagent_sim.kube_tls import ServerCert, make_server_cert

XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
API_VERSION = "2011-01-01"
SERVICE = "autoscaling"
MAX_SKEW_S = 300.0  # AWS refuses a request signed more than 5 minutes off
ACTIONS = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")
_AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
                      r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$")


@dataclass
class LifecycleAction:
    instance_id: str
    group: str
    hook: str
    heartbeat_timeout_s: float
    started: float  # monotonic
    timeout_at: float  # monotonic: released when no heartbeat or completion comes before
    heartbeats: List[float] = field(default_factory=list)
    state: str = "Terminating:Wait"
    result: Optional[str] = None
    released_at: Optional[float] = None  # monotonic
    released_by: Optional[str] = None  # complete | timeout


@dataclass(frozen=True)
class Call:
    t: float  # monotonic, when it was answered
    action: str
    params: Dict[str, str]
    status: int
    code: str  # "" when accepted


class AutoScalingSim:
    def __init__(self, *, region: str = "us-east-1", credentials: Optional[Dict[str, Tuple[str, str]]] = None,
                 cert_dir: Optional[str] = None, host: str = "127.0.0.1"):
        self.region = region
        # access key -> (secret key, session token); the IMDS simulator's default keys by default
        self.credentials = dict(credentials or {
            "ASIASIMULATEDKEY0001": ("simulated/secret/key/0001", "simulated-session-token-0001")})
        self.host = host
        self._cert_dir = cert_dir or tempfile.mkdtemp(prefix="asg-sim-")
        self.cert: Optional[ServerCert] = None
        self.hooks: Dict[Tuple[str, str], float] = {}  # (group, hook) -> heartbeat timeout
        self._actions: Dict[str, LifecycleAction] = {}  # instance id -> its lifecycle action
        self.calls: List[Call] = []
        self._refusals: List[Tuple[int, str, str, Optional[str]]] = []  # (status, code, message, action)
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "AutoScalingSim":
        self.cert = make_server_cert(self._cert_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert.cert_file, self.cert.key_file)
        server = _Server((self.host, 0), _Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="asg-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "AutoScalingSim":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"https://{self.host}:{self._server.server_address[1]}"

    @property
    def ca_file(self) -> str:
        assert self.cert is not None, "not started"
        return self.cert.ca_file

    # --- control ------------------------------------------------------------------------------

    def add_hook(self, group: str, hook: str, heartbeat_timeout_s: float = 3600.0) -> None:
        with self._lock:
            self.hooks[(group, hook)] = heartbeat_timeout_s

    def begin_termination(self, instance_id: str, group: str, hook: str, imds: Any = None) -> LifecycleAction:
        """The group terminates the instance: its lifecycle action waits (and IMDS says Terminated)."""
        with self._lock:
            timeout = self.hooks[(group, hook)]
            now = time.monotonic()
            action = LifecycleAction(instance_id, group, hook, timeout, started=now, timeout_at=now + timeout)
            self._actions[instance_id] = action
        if imds is not None:
            imds.set_asg_state("Terminated")
        return action

    def time_out(self, instance_id: str) -> None:
        """The hook's timeout runs out now."""
        with self._lock:
            self._actions[instance_id].timeout_at = time.monotonic()

    def refuse(self, status: int = 403, code: str = "AccessDenied", message: str = "", count: int = 1_000_000,
               action: Optional[str] = None) -> None:
        """Answer the next `count` calls (of `action`, or any) with this error."""
        message = message or (f"User: arn:aws:sts::111122223333:assumed-role/eks-node-role/i-0 is not authorized "
                              f"to perform: autoscaling:{action or 'CompleteLifecycleAction'}")
        with self._lock:
            self._refusals = [(status, code, message, action)] * count

    def clear_refusals(self) -> None:
        with self._lock:
            self._refusals = []

    def action(self, instance_id: str) -> LifecycleAction:
        with self._lock:
            self._expire(time.monotonic())
            return self._actions[instance_id]

    def accepted(self, action: str) -> List[Call]:
        return [call for call in list(self.calls) if call.action == action and call.status == 200]

    # --- the API ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Dict[str, str], body: bytes) -> Tuple[int, str]:
        now = time.monotonic()
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        action = params.get("Action", "")
        status, code, message = self._check(method, target, headers, body, params)
        with self._lock:
            if not code and self._refusals and self._refusals[0][3] in (None, action):
                status, code, message, _ = self._refusals.pop(0)
            if not code:
                status, code, message = self._apply(action, params, now)
            self.calls.append(Call(now, action, {k: v for k, v in params.items()}, status, code))
        request_id = str(uuid.uuid4())
        if code:
            kind = "Receiver" if status >= 500 else "Sender"
            return status, (f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
                            f"<Message>{_xml(message)}</Message></Error><RequestId>{request_id}</RequestId>"
                            "</ErrorResponse>")
        return 200, (f'<{action}Response xmlns="{XMLNS}"><{action}Result/><ResponseMetadata>'
                     f"<RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>")

    def _check(self, method: str, target: str, headers: Dict[str, str], body: bytes,
               params: Dict[str, str]) -> Tuple[int, str, str]:
        if method != "POST":
            return 400, "InvalidAction", "the Query API takes POST here"
        problem = verify_sigv4(method, target, headers, body, self.credentials, self.region, SERVICE,
                               datetime.now(timezone.utc))
        if problem is not None:
            return 403, problem[0], problem[1]
        if params.get("Version") != API_VERSION:
            return 400, "InvalidParameterValue", f"unknown Version {params.get('Version')!r}"
        if params.get("Action") not in ACTIONS:
            return 400, "InvalidAction", f"the simulator knows only {', '.join(ACTIONS)}"
        return 200, "", ""

    def _apply(self, action: str, params: Dict[str, str], now: float) -> Tuple[int, str, str]:
        self._expire(now)
        group, hook, instance = (params.get("AutoScalingGroupName", ""), params.get("LifecycleHookName", ""),
                                 params.get("InstanceId", ""))
        if not group or not hook:
            return 400, "ValidationError", "AutoScalingGroupName and LifecycleHookName are required"
        if (group, hook) not in self.hooks:
            return 400, "ValidationError", f"No Lifecycle Hook found with name {hook} for group {group}"
        found = self._actions.get(instance)
        if found is None or found.state != "Terminating:Wait" or (found.group, found.hook) != (group, hook):
            return 400, "ValidationError", f"No active Lifecycle Action found with instance ID {instance}"
        if action == "RecordLifecycleActionHeartbeat":
            found.heartbeats.append(now)
            found.timeout_at = now + found.heartbeat_timeout_s
            return 200, "", ""
        result = params.get("LifecycleActionResult", "")
        if result not in ("CONTINUE", "ABANDON"):
            return 400, "ValidationError", f"LifecycleActionResult must be CONTINUE or ABANDON, not {result!r}"
        found.state, found.result = "Terminating:Proceed", result
        found.released_at, found.released_by = now, "complete"
        return 200, "", ""

    def _expire(self, now: float) -> None:
        for found in self._actions.values():
            if found.state == "Terminating:Wait" and now >= found.timeout_at:
                found.state, found.result = "Terminating:Proceed", "CONTINUE"  # the hook's default result
                found.released_at, found.released_by = found.timeout_at, "timeout"


# --- Signature Version 4, verified independently of the client's signer ----------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(text: str, safe: str) -> str:
    return quote(text, safe=safe)  # RFC 3986 unreserved characters stay as they are


def verify_sigv4(method: str, target: str, headers: Dict[str, str], body: bytes,
                 credentials: Dict[str, Tuple[str, str]], region: str, service: str,
                 now: datetime) -> Optional[Tuple[str, str]]:
    """None when the request is signed by a known key for this region and service, else (Code, Message).

    headers: lower-case names. The canonical request is built from the request as received."""
    auth = headers.get("authorization", "")
    match = _AUTH_RE.fullmatch(auth.strip())
    if not match:
        return "MissingAuthenticationToken", "Request is missing Authentication Token"
    access_key, date, scope_region, scope_service, signed, signature = match.groups()
    if access_key not in credentials:
        return "InvalidClientTokenId", "The security token included in the request is invalid."
    secret, token = credentials[access_key]
    if token and headers.get("x-amz-security-token") != token:
        return "InvalidClientTokenId", "The security token included in the request is invalid."
    signed_names = signed.split(";")
    if "host" not in signed_names or signed_names != sorted(signed_names):
        return "IncompleteSignature", "SignedHeaders must include host and be sorted"
    if token and "x-amz-security-token" not in signed_names:
        return "IncompleteSignature", "x-amz-security-token must be signed"
    if scope_region != region or scope_service != service:
        return "SignatureDoesNotMatch", (f"Credential should be scoped to a valid region and service "
                                         f"({region}/{service}), not {scope_region}/{scope_service}")
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "IncompleteSignature", "X-Amz-Date is missing or malformed"
    if when.strftime("%Y%m%d") != date:
        return "SignatureDoesNotMatch", "the credential scope date is not the request's date"
    if abs((now - when).total_seconds()) > MAX_SKEW_S:
        return "RequestExpired", f"Request has expired (signed at {amz_date})"
    payload = _sha256(body)
    if headers.get("x-amz-content-sha256", payload) != payload:
        return "SignatureDoesNotMatch", "x-amz-content-sha256 does not match the body"
    for name in signed_names:
        if name not in headers:
            return "SignatureDoesNotMatch", f"signed header {name} is missing"
    parts = urlsplit(target)
    path = _uri_encode(parts.path or "/", safe="/~")
    pairs = sorted((_uri_encode(k, "~"), _uri_encode(v, "~"))
                   for k, v in parse_qsl(parts.query, keep_blank_values=True))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed_names)
    canonical = "\n".join([method, path, query, canonical_headers, signed, payload])
    scope = f"{date}/{scope_region}/{scope_service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, _sha256(canonical.encode("utf-8"))])
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (scope_region, scope_service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "SignatureDoesNotMatch", ("The request signature we calculated does not match the signature "
                                         "you provided.")
    return None


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- HTTP plumbing -----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: AutoScalingSim

    def server_bind(self) -> None:  # no reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, text = self.server.sim.handle(method, self.path, headers, body)
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


__all__ = ["AutoScalingSim", "LifecycleAction", "Call", "verify_sigv4"]
