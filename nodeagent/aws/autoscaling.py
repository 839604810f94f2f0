"""The two Auto Scaling calls the agent makes, over the Query API (POST, form-encoded,
Version=2011-01-01), signed with Signature Version 4 by requests-aws4auth, over HTTPS with the
server's certificate verified (the system's CAs, or ASG_CA_BUNDLE).

    client = AutoScalingClient(endpoint, region, credentials)
    client.complete_lifecycle_action(group, hook, instance_id)      # LifecycleActionResult=CONTINUE
    client.record_lifecycle_action_heartbeat(group, hook, instance_id)

Each call is one attempt, complete within connect + read timeout or cut there (a server that
trickles its answer cannot hold it longer: nodeagent.http_deadline). The caller retries
(nodeagent/lifecycle_hook.py). A failure raises AutoScalingError saying whether another attempt
can help (`retry`), whether the credentials must be fetched again first (`refresh`), or whether
the lifecycle action is no longer waiting (`gone`: completed already, or its timeout ran out).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode
from xml.etree import ElementTree

import requests
from requests_aws4auth import AWS4Auth

from nodeagent.http_deadline import DEADLINES, deadline_session, too_slow

API_VERSION = "2011-01-01"
SERVICE = "autoscaling"
TIMEOUT_S = (3.05, 10.0)  # connect, read
# Codes after which fresh credentials may succeed (rotated keys, an expired token, clock skew).
REFRESH_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    }
)
RETRY_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "ResourceContention",
    }
)
_GONE_RE = re.compile(r"No active Lifecycle Action found", re.IGNORECASE)


class AutoScalingError(Exception):
    def __init__(
        self,
        action: str,
        problem: str,
        *,
        code: str = "",
        status: int | None = None,
        retry: bool = False,
        refresh: bool = False,
        gone: bool = False,
    ):
        super().__init__(f"{action}: {problem}")
        self.action = action
        self.code = code
        self.status = status
        self.retry = retry or refresh
        self.refresh = refresh
        self.gone = gone


def classify(status: int, code: str, message: str) -> tuple[bool, bool, bool]:
    """(retry, refresh, gone) for an error answer. Pure."""
    if code == "ValidationError" and _GONE_RE.search(message):
        return False, False, True
    if code in REFRESH_CODES:
        return True, True, False
    if code in RETRY_CODES or status >= 500 or status == 429:
        return True, False, False
    return False, False, False


def parse_error(body: bytes) -> tuple[str, str]:
    """(Code, Message) of a Query API ErrorResponse; ('', '') when the body is not one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "", ""
    code = message = ""
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Code" and not code:
            code = (element.text or "").strip()
        elif tag == "Message" and not message:
            message = (element.text or "").strip()
    return code[:128], message[:512]


class AutoScalingClient:
    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials,
        *,
        ca_bundle: str = "",
        timeout: tuple[float, float] = TIMEOUT_S,
    ):
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.region = region
        self.credentials = credentials  # nodeagent.aws.credentials.InstanceRoleCredentials
        self.verify = ca_bundle or True
        self.timeout = timeout
        self.session = deadline_session()
        self.auth = AWS4Auth(refreshable_credentials=credentials, service=SERVICE, region=region)

    def __repr__(self) -> str:
        return f"AutoScalingClient({self.endpoint}, {self.region})"

    def complete_lifecycle_action(
        self, group: str, hook: str, instance_id: str, result: str = "CONTINUE"
    ) -> str:
        return self._call(
            "CompleteLifecycleAction",
            {
                "AutoScalingGroupName": group,
                "LifecycleHookName": hook,
                "InstanceId": instance_id,
                "LifecycleActionResult": result,
            },
        )

    def record_lifecycle_action_heartbeat(self, group: str, hook: str, instance_id: str) -> str:
        return self._call(
            "RecordLifecycleActionHeartbeat",
            {"AutoScalingGroupName": group, "LifecycleHookName": hook, "InstanceId": instance_id},
        )

    def close(self) -> None:
        self.session.close()

    def _call(self, action: str, params: dict[str, str]) -> str:
        """The RequestId of the accepted call."""
        body = urlencode({"Action": action, "Version": API_VERSION, **params})
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        total_s = float(sum(self.timeout))
        try:
            with DEADLINES.limit(total_s) as limit:
                try:
                    reply = self.session.post(
                        self.endpoint,
                        data=body.encode("utf-8"),
                        headers=headers,
                        auth=self.auth,
                        verify=self.verify,
                        timeout=self.timeout,
                        allow_redirects=False,
                    )
                except Exception:
                    if limit.expired:
                        raise AutoScalingError(
                            action, f"{self.endpoint}: {too_slow(total_s)}", retry=True
                        ) from None
                    raise
        except AutoScalingError:
            raise
        except requests.exceptions.SSLError as error:
            raise AutoScalingError(
                action, f"TLS verification of {self.endpoint} failed ({_short(error)})"
            ) from None
        except requests.exceptions.RequestException as error:
            raise AutoScalingError(
                action, f"{self.endpoint} did not answer ({_short(error)})", retry=True
            ) from None
        except Exception as error:  # the credentials provider (IMDS) failed while signing
            raise AutoScalingError(action, str(error), retry=True) from None
        if 200 <= reply.status_code < 300:
            return _request_id(reply.content)
        code, message = parse_error(reply.content)
        retry, refresh, gone = classify(reply.status_code, code, message)
        problem = f"HTTP {reply.status_code} {code or 'error'}: {message or reply.reason}"
        raise AutoScalingError(
            action, problem, code=code, status=reply.status_code, retry=retry, refresh=refresh, gone=gone
        )


def _request_id(body: bytes) -> str:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return ""
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "RequestId":
            return (element.text or "").strip()
    return ""


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."
