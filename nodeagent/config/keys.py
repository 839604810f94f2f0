"""The key table: one KeySpec per setting, in the order check-config and the docs list them.

A key's default, parser, help text and flags live here and nowhere else: the loader, Settings,
check-config, the generated docs (nodeagent/reference.py) and the man page all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nodeagent.config import parsers

RESPONSES = ("drain", "cordon", "ignore")
SPOT_GATES = ("label", "imds", "label-or-imds", "label-and-imds", "off")
TRISTATE = ("auto", "true", "false")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class KeySpec:
    name: str
    default: str
    parse: Callable[[str], object]  # returns the type of the Settings field of the same name
    help: str
    secret: bool = False  # never logged or shown; a rejected value is not quoted
    restart_only: bool = False  # read once at start (API client, state file); a reload says so
    unitless: bool = False  # a float that is not a duration: shown without "s"

    @property
    def field(self) -> str:
        """The Settings attribute holding this key's value."""
        return self.name.lower()


KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "ENABLED",
        "true",
        parsers.parse_bool,
        "false: `run` exits 0 at once (turn the agent off per node group)",
        restart_only=True,
    ),
    KeySpec(
        "IMDS_URL", "http://169.254.169.254", parsers.imds_url, "instance metadata endpoint (plain http://)"
    ),
    KeySpec(
        "POLL_INTERVAL",
        "1s",
        parsers.duration_between(0.1, 60),
        "how often IMDS is polled for spot interruptions and ASG terminations (seconds of warning "
        "at most), and for any notice being responded to",
    ),
    KeySpec(
        "POLL_INTERVAL_ASG",
        "",
        parsers.optional_duration_between(0.1, 60),
        "how often the ASG target lifecycle state is polled; empty = POLL_INTERVAL. A longer one "
        "suits a sub-second POLL_INTERVAL kept for spot notices (1s: a third fewer IMDS requests at 250ms)",
    ),
    KeySpec(
        "POLL_INTERVAL_REBALANCE",
        "5s",
        parsers.duration_between(0.1, 300),
        "how often the rebalance recommendation is polled: it is advisory and comes well before "
        "any interruption (POLL_INTERVAL while one is being responded to)",
    ),
    KeySpec(
        "POLL_INTERVAL_SCHEDULED",
        "30s",
        parsers.duration_between(0.1, 600),
        "how often scheduled maintenance events are polled: they are announced days ahead "
        "(POLL_INTERVAL while one is being responded to)",
    ),
    KeySpec(
        "IMDS_ALLOW_V1", "false", parsers.parse_bool, "fall back to IMDSv1 when the token PUT is refused"
    ),
    KeySpec(
        "KUBECONFIG",
        "/var/lib/kubelet/kubeconfig",
        parsers.path,
        "kubeconfig (the kubelet's own)",
        restart_only=True,
    ),
    KeySpec(
        "NODE_NAME",
        "",
        parsers.node_name,
        "this node's name; empty = ask the API (SelfSubjectReview)",
        restart_only=True,
    ),
    KeySpec("STATE_DIR", "/var/lib/nodeagent", parsers.path, "where state.json lives", restart_only=True),
    KeySpec("DRY_RUN", "false", parsers.parse_bool, "server-side dryRun=All for every write"),
    KeySpec("LOG_LEVEL", "info", parsers.one_of(LOG_LEVELS), "debug, info, warning, error"),
    KeySpec("ON_SPOT_INTERRUPTION", "drain", parsers.one_of(RESPONSES), "drain, cordon or ignore"),
    KeySpec("ON_REBALANCE", "cordon", parsers.one_of(RESPONSES), "drain, cordon or ignore"),
    KeySpec("ON_SCHEDULED_EVENT", "drain", parsers.one_of(RESPONSES), "drain, cordon or ignore"),
    KeySpec("ON_ASG_TERMINATION", "drain", parsers.one_of(RESPONSES), "drain, cordon or ignore"),
    KeySpec("SPOT_GATE", "label-or-imds", parsers.one_of(SPOT_GATES), "how a spot node is recognised"),
    KeySpec(
        "DRAIN_MARGIN",
        "15s",
        parsers.duration_between(0, 600),
        "pods must be gone this long before the deadline",
    ),
    KeySpec(
        "DRAIN_WINDOW",
        "120s",
        parsers.duration_between(1, 86400),
        "deadline for notices with no time of their own",
    ),
    KeySpec(
        "FORCE_AT_DEADLINE",
        "auto",
        parsers.one_of(TRISTATE),
        "delete PDB-blocked pods at their last safe moment (auto: not for rebalance)",
    ),
    KeySpec(
        "EXCLUDE_FROM_LB",
        "auto",
        parsers.one_of(TRISTATE),
        "label node.kubernetes.io/exclude-from-external-load-balancers (auto: spot only)",
    ),
    KeySpec(
        "TAINT",
        "nodeagent.io/interruption=<kind>:NoSchedule",
        parsers.taint,
        "taint to try (node credentials cannot; cordon is the fallback); empty disables",
    ),
    KeySpec("EVICT_LOCAL_STORAGE", "true", parsers.parse_bool, "evict pods with emptyDir volumes"),
    KeySpec("EVICT_UNMANAGED", "true", parsers.parse_bool, "evict pods with no controller"),
    KeySpec(
        "LAST_TIER_PRIORITY_CLASSES",
        "system-cluster-critical,system-node-critical",
        parsers.priority_classes,
        "priority classes evicted after everything else",
    ),
    KeySpec(
        "DRAIN_PARALLELISM",
        "32",
        parsers.int_between(1, 256),
        "most API requests in flight at once; fewer while the API server throttles",
        restart_only=True,
    ),
    KeySpec(
        "API_QPS",
        "50",
        parsers.int_between(1, 1000),
        "most API requests per second, on average (as the kubelet's own client)",
        restart_only=True,
    ),
    KeySpec(
        "API_BURST",
        "100",
        parsers.int_between(1, 10000),
        "API requests allowed at once above API_QPS",
        restart_only=True,
    ),
    KeySpec(
        "SPOT_LABEL",
        "true",
        parsers.parse_bool,
        "set lifecycle=Ec2Spot through the API when a spot node lacks it",
    ),
    KeySpec(
        "SPOT_LABEL_AT_BOOT",
        "true",
        parsers.parse_bool,
        "boot oneshot writes the nodeadm drop-in with the label",
    ),
    KeySpec(
        "UNCORDON_AFTER_REBOOT",
        "true",
        parsers.parse_bool,
        "uncordon once a scheduled event has happened: at the first start after a scheduled reboot, "
        "or when IMDS marks the event completed",
    ),
    KeySpec(
        "EXEC_PLUGIN_TIMEOUT",
        "20s",
        parsers.duration_between(1, 300),
        "give up on a credential plugin after this",
        restart_only=True,
    ),
    KeySpec("EVENTS", "true", parsers.parse_bool, "write Kubernetes Events on the Node"),
    KeySpec("WEBHOOK_URL", "", parsers.optional_url, "webhook receiver URL", secret=True),
    KeySpec("WEBHOOK_FORMAT", "json", parsers.one_of(("json", "slack")), "json or slack"),
    KeySpec(
        "WEBHOOK_TEMPLATE",
        "",
        parsers.optional_path,
        "file with a `${field}` template (string.Template) for the webhook body; must render to JSON",
    ),
    KeySpec(
        "WEBHOOK_HEADERS",
        "",
        parsers.headers,
        "extra headers, 'Name: value; Name2: value2'",
        secret=True,
    ),
    KeySpec(
        "WEBHOOK_URL_FILE",
        "",
        parsers.optional_path,
        "file holding WEBHOOK_URL, owner-only (0600); default: the credential webhook-url, "
        "if the unit loads one",
    ),
    KeySpec(
        "WEBHOOK_HEADERS_FILE",
        "",
        parsers.optional_path,
        "file holding WEBHOOK_HEADERS, owner-only (0600); default: the credential webhook-headers, if loaded",
    ),
    KeySpec(
        "METRICS_TEXTFILE", "", parsers.optional_path, "node_exporter textfile to write (no listening port)"
    ),
    KeySpec(
        "WITHDRAWN_AFTER_POLLS",
        "3",
        parsers.int_between(1, 100),
        "a rebalance or scheduled event counts as withdrawn only when this many answered polls "
        "in a row miss it",
    ),
    KeySpec(
        "WITHDRAWN_AFTER",
        "5s",
        parsers.duration_between(0, 3600),
        "... and it has been missing for at least this long (an explicit 'canceled' acts at once)",
    ),
    KeySpec(
        "ASG_LIFECYCLE_HOOK",
        "",
        parsers.hook_name,
        "termination lifecycle hook to complete (CONTINUE) once an ASG termination's drain ends, "
        "heartbeating it while the drain runs; empty = off (docs/asg-lifecycle.md)",
        restart_only=True,
    ),
    KeySpec(
        "ASG_NAME",
        "",
        parsers.hook_name,
        "the Auto Scaling group; empty = IMDS tag aws:autoscaling:groupName (needs instance metadata tags)",
        restart_only=True,
    ),
    KeySpec(
        "ASG_HEARTBEAT_TIMEOUT",
        "1h",
        parsers.duration_between(30, 7200),
        "the hook's heartbeat timeout, as configured on the hook",
        restart_only=True,
    ),
    KeySpec(
        "ASG_HEARTBEAT_SHARE",
        "0.5",
        parsers.share,
        "heartbeat once a drain has held the instance this share of ASG_HEARTBEAT_TIMEOUT (0.1..0.9)",
        restart_only=True,
        unitless=True,
    ),
    KeySpec(
        "ASG_HEARTBEAT_MAX",
        "2h",
        parsers.duration_between(30, 172800),
        "never heartbeat the hold past this long from the termination (AWS caps it too: 48h or 100 timeouts)",
        restart_only=True,
    ),
    KeySpec("ASG_FIPS", "false", parsers.parse_bool, "use the autoscaling-fips endpoint", restart_only=True),
    KeySpec(
        "ASG_ENDPOINT_URL",
        "",
        parsers.optional_https_url,
        "Auto Scaling endpoint override (https://); empty = by region and partition",
        restart_only=True,
    ),
    KeySpec(
        "ASG_CA_BUNDLE",
        "",
        parsers.optional_path,
        "CA bundle to verify the Auto Scaling endpoint; empty = the system's",
        restart_only=True,
    ),
)

KEYS_BY_NAME: dict[str, KeySpec] = {spec.name: spec for spec in KEYS}
