"""aws-node-termination-handler (NTH) Helm chart values -> a nodeagent conf.d drop-in.

`ROWS` says, for every value of the chart's default values.yaml (and the newer chart values people
set most), which nodeagent keys it becomes or why it has none. `convert` is pure: the user's
values (already merged as Helm merges them, see helm_values) in, a `Conversion` out; `render_dropin`
and `render_notes` turn it into the drop-in (standard output) and the notes (standard error).

The drop-in reproduces what the NTH release did: where NTH's behaviour differs from nodeagent's
own default (rebalance recommendations are ignored unless enabled, no Events unless enabled), the
line says so, and deleting it gives nodeagent's default. Secrets (the webhook URL and headers)
are never copied: the drop-in says which file to put them in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeagent import helm_values
from nodeagent.config import KEYS_BY_NAME
from nodeagent.helm_values import Path

# ------------------------------------------------------------------ the table

POD = (
    "a setting of NTH's own pods (image, resources, labels, scheduling, update strategy); nodeagent "
    "is a systemd service in the node's AMI: the unit and its sandbox take their place"
)
RBAC = (
    "NTH's ServiceAccount and RBAC objects; nodeagent acts with the kubelet's own credentials "
    "(system:node:<name>) and needs no ClusterRole"
)
PLACEMENT = (
    "where NTH's DaemonSet runs; nodeagent runs wherever its AMI runs: bake it into the AMI of the "
    "node groups this selected (SPOT_GATE says which notices need a spot node)"
)
QUEUE = (
    "queue-processor (SQS) mode; nodeagent reads each node's own IMDS and needs no queue, AWS "
    "credentials or cluster-wide deployment (to complete ASG termination hooks from the node: "
    "ASG_LIFECYCLE_HOOK, docs/asg-lifecycle.md)"
)
METRICS = (
    "NTH's Prometheus endpoint; nodeagent opens no port and writes node_exporter textfile metrics "
    "instead (METRICS_TEXTFILE, docs/monitoring.md)"
)
PROBES = "NTH's liveness-probe server; nodeagent opens no port: systemd's watchdog restarts a hung agent"
TESTING = "for NTH's own tests; nodeagent reads the boot time from the system"
WINDOWS = "Windows nodes; nodeagent runs on Linux nodes only"
GRACE = (
    "differs: NTH gives every pod this fixed grace period (empty or negative: the pod's own); nodeagent "
    "gives each pod its own terminationGracePeriodSeconds, cut so that the pod is gone DRAIN_MARGIN "
    "before the deadline: there is no fixed override"
)


@dataclass(frozen=True)
class Row:
    """One chart value (dotted, as --set names it; it covers every value under it)."""

    key: str
    nodeagent: tuple[str, ...] = ()  # the keys it becomes; () when it has no equivalent
    note: str = ""  # why it has no equivalent, or what behaves differently


ROWS: tuple[Row, ...] = (
    # --- what NTH responds to, and how
    Row(
        "enableSpotInterruptionDraining",
        ("ON_SPOT_INTERRUPTION",),
        "empty means NTH's default, on",
    ),
    Row(
        "enableScheduledEventDraining",
        ("ON_SCHEDULED_EVENT",),
        "differs: NTH drains a scheduled event when it sees it, within nodeTerminationGracePeriod; "
        "nodeagent also starts at once, but its deadline is the event's NotBefore (PDB-blocked pods "
        "are retried until then), it uncordons a cancelled event's node, and after the reboot the "
        "event announced (UNCORDON_AFTER_REBOOT)",
    ),
    Row(
        "enableRebalanceMonitoring",
        ("ON_REBALANCE",),
        "monitoring alone cordons (ON_REBALANCE=cordon), with enableRebalanceDraining it drains; "
        "nodeagent's own default is cordon, and it lifts the cordon when the recommendation is withdrawn",
    ),
    Row("enableRebalanceDraining", ("ON_REBALANCE",), "see enableRebalanceMonitoring"),
    Row(
        "enableASGLifecycleDraining",
        ("ON_ASG_TERMINATION",),
        "NTH acts on the ASG target lifecycle state only when this is true; nodeagent's own default is drain",
    ),
    Row(
        "cordonOnly",
        ("ON_SPOT_INTERRUPTION", "ON_SCHEDULED_EVENT", "ON_REBALANCE", "ON_ASG_TERMINATION"),
        "cordon instead of drain, for each kind of notice that is turned on",
    ),
    Row(
        "taintNode",
        ("TAINT",),
        "differs: NTH taints with its aws-node-termination-handler/* keys; nodeagent tries "
        "nodeagent.io/interruption=<kind>, which node credentials may not set (NodeRestriction): the "
        "cordon keeps new pods off, and tolerations of NTH's taint keys match nothing any more",
    ),
    Row("taintEffect", ("TAINT",), "the effect of the taint nodeagent tries (with taintNode)"),
    Row(
        "enableOutOfServiceTaint",
        note="no equivalent: node credentials may not set the out-of-service taint",
    ),
    Row(
        "excludeFromLoadBalancers",
        ("EXCLUDE_FROM_LB",),
        "nodeagent's own default (auto) labels spot nodes that drain for an interruption",
    ),
    Row(
        "dryRun",
        ("DRY_RUN",),
        "differs: NTH only logs what it would do; nodeagent sends every write as a server-side dry "
        "run (dryRun=All): checked by the API server and its admission, never stored",
    ),
    Row(
        "deleteLocalData",
        ("EVICT_LOCAL_STORAGE",),
        "differs: with false, NTH's drain stops at a pod with an emptyDir volume; nodeagent leaves such "
        "pods on the node and drains the rest",
    ),
    Row(
        "ignoreDaemonSets",
        note="differs: nodeagent always leaves DaemonSet pods alone (their controller would start them "
        "again at once on the same node); NTH's drain stopped at them when this was false",
    ),
    Row("podTerminationGracePeriod", note=GRACE),
    Row("gracePeriod", note=GRACE),
    Row(
        "nodeTerminationGracePeriod",
        ("DRAIN_WINDOW",),
        "differs: NTH's time limit for every drain; nodeagent's deadline is the notice's own time where "
        "it has one (a spot interruption's termination time, a scheduled event's NotBefore) and "
        "DRAIN_WINDOW for the rest (rebalance, ASG termination)",
    ),
    Row(
        "metadataTries",
        note="no equivalent: nodeagent retries an IMDS request within a poll and polls again after "
        "POLL_INTERVAL; failed polls are logged once and counted (nodeagent_imds_errors_total)",
    ),
    Row("instanceMetadataURL", ("IMDS_URL",)),
    Row(
        "useProviderId",
        note="no equivalent: nodeagent always finds its Node by the providerID this instance's IMDS "
        "identity gives",
    ),
    # --- logs, Events, webhook, metrics
    Row("logLevel", ("LOG_LEVEL",)),
    Row(
        "jsonLogging",
        note="no equivalent: nodeagent logs plain lines to the journal; `journalctl -u nodeagent -o json` "
        "gives them as JSON",
    ),
    Row("logFormatVersion", note="no equivalent: see jsonLogging"),
    Row(
        "emitKubernetesEvents",
        ("EVENTS",),
        "nodeagent's own default is on: Events on the Node (reasons SpotInterruptionNotice, "
        "NodeCordoned, DrainStarted, DrainFinished, ...; docs/operating.md)",
    ),
    Row(
        "kubernetesEventsExtraAnnotations",
        note="no equivalent: nodeagent's Events carry no extra annotations",
    ),
    Row(
        "webhookURL",
        ("WEBHOOK_URL_FILE",),
        "a secret, not copied: put the URL in a file only root and the nodeagent user can read, and "
        "set WEBHOOK_URL_FILE (or load it as the systemd credential webhook-url; docs/security.md)",
    ),
    Row(
        "webhookURLSecretName",
        ("WEBHOOK_URL_FILE",),
        "the URL is in that Kubernetes Secret (key webhookurl): write it to the file WEBHOOK_URL_FILE "
        "names, e.g. kubectl get secret <name> -n <namespace> -o jsonpath='{.data.webhookurl}' | base64 -d",
    ),
    Row(
        "webhookHeaders",
        ("WEBHOOK_HEADERS_FILE",),
        "a secret, not copied: nodeagent's form is 'Name: value; Name2: value2' in the file "
        "WEBHOOK_HEADERS_FILE names (it sets Content-Type itself)",
    ),
    Row(
        "webhookProxy",
        note="differs: the webhook honours the standard proxy variables: set HTTPS_PROXY for the unit "
        "(a systemd drop-in with Environment=HTTPS_PROXY=...)",
    ),
    Row(
        "webhookTemplate",
        ("WEBHOOK_TEMPLATE",),
        "differs: NTH's template is a Go template ({{ .EventID }}); nodeagent's WEBHOOK_TEMPLATE is a "
        "file of ${field} placeholders (docs/operating.md lists the fields): rewrite it",
    ),
    Row("webhookTemplateConfigMapName", ("WEBHOOK_TEMPLATE",), "see webhookTemplate"),
    Row("webhookTemplateConfigMapKey", ("WEBHOOK_TEMPLATE",), "see webhookTemplate"),
    Row("enablePrometheusServer", ("METRICS_TEXTFILE",), METRICS),
    Row("prometheusServerPort", note=METRICS),
    Row("podMonitor", note=METRICS),
    Row("serviceMonitor", note=METRICS),
    Row("enableProbesServer", note=PROBES),
    Row("probesServerPort", note=PROBES),
    Row("probesServerEndpoint", note=PROBES),
    Row("probes", note=PROBES),
    # --- queue-processor mode
    Row("enableSqsTerminationDraining", note=QUEUE),
    Row("queueURL", note=QUEUE),
    Row("awsRegion", note=QUEUE),
    Row("awsEndpoint", note=QUEUE),
    Row("awsSecretAccessKey", note=QUEUE),
    Row("awsAccessKeyID", note=QUEUE),
    Row("checkASGTagBeforeDraining", note=QUEUE),
    Row("managedAsgTag", note=QUEUE),
    Row("checkTagBeforeDraining", note=QUEUE),
    Row("managedTag", note=QUEUE),
    Row("deleteSqsMsgIfNodeNotFound", note=QUEUE),
    Row("completeLifecycleActionDelaySeconds", note=QUEUE),
    Row(
        "heartbeatInterval",
        note=QUEUE + "; nodeagent heartbeats its own hook: ASG_HEARTBEAT_TIMEOUT, ASG_HEARTBEAT_SHARE",
    ),
    Row("heartbeatUntil", note=QUEUE + "; nodeagent's bound is ASG_HEARTBEAT_MAX"),
    Row("workers", note=QUEUE),
    Row("replicas", note=QUEUE),
    Row("podDisruptionBudget", note=QUEUE),
    # --- placement
    Row("nodeSelector", note=PLACEMENT),
    Row("linuxNodeSelector", note=PLACEMENT),
    Row("daemonsetNodeSelector", note=PLACEMENT),
    Row("nodeSelectorTermsOs", note=PLACEMENT),
    Row("nodeSelectorTermsArch", note=PLACEMENT),
    Row("affinity", note=PLACEMENT),
    Row("linuxAffinity", note=PLACEMENT),
    Row("daemonsetAffinity", note=PLACEMENT),
    Row("tolerations", note=PLACEMENT),
    Row("linuxTolerations", note=PLACEMENT),
    Row("daemonsetTolerations", note=PLACEMENT),
    Row("targetNodeOs", note=PLACEMENT + "; Linux only"),
    Row("windowsNodeSelector", note=WINDOWS),
    Row("windowsAffinity", note=WINDOWS),
    Row("windowsTolerations", note=WINDOWS),
    Row("windowsPodAnnotations", note=WINDOWS),
    Row("windowsPodLabels", note=WINDOWS),
    Row("windowsUpdateStrategy", note=WINDOWS),
    Row("procUptimeFile", note=TESTING),
    # --- the pods themselves
    Row("image", note=POD),
    Row("securityContext", note=POD),
    Row("podSecurityContext", note=POD),
    Row("nameOverride", note=POD),
    Row("fullnameOverride", note=POD),
    Row("priorityClassName", note=POD),
    Row("daemonsetPriorityClassName", note=POD),
    Row("podAnnotations", note=POD),
    Row("linuxPodAnnotations", note=POD),
    Row("podLabels", note=POD),
    Row("linuxPodLabels", note=POD),
    Row("customLabels", note=POD),
    Row("resources", note=POD),
    Row("dnsPolicy", note=POD),
    Row("dnsConfig", note=POD),
    Row("updateStrategy", note=POD),
    Row("linuxUpdateStrategy", note=POD),
    Row("useHostNetwork", note=POD),
    Row("terminationGracePeriodSeconds", note=POD),
    Row("extraEnv", note=POD),
    Row("serviceAccount", note=RBAC),
    Row("rbac", note=RBAC),
)
ROWS_BY_KEY: dict[str, Row] = {row.key: row for row in ROWS}

# The chart's defaults for the values `convert` maps ("" = the NTH binary's default).
CHART_DEFAULTS: dict[str, Any] = {
    "enableSpotInterruptionDraining": "",
    "enableScheduledEventDraining": "",
    "enableRebalanceMonitoring": False,
    "enableRebalanceDraining": False,
    "enableASGLifecycleDraining": False,
    "cordonOnly": False,
    "taintNode": False,
    "taintEffect": "NoSchedule",
    "excludeFromLoadBalancers": False,
    "dryRun": False,
    "deleteLocalData": "",
    "nodeTerminationGracePeriod": "",
    "instanceMetadataURL": "",
    "logLevel": "info",
    "emitKubernetesEvents": False,
    "webhookURL": "",
    "webhookURLSecretName": "",
    "webhookHeaders": "",
    "webhookTemplate": "",
    "webhookTemplateConfigMapName": "",
    "webhookTemplateConfigMapKey": "",
    "enablePrometheusServer": False,
}
# The NTH binary's own defaults, where the chart leaves a value empty.
BINARY_DEFAULTS: dict[str, Any] = {
    "enableSpotInterruptionDraining": True,
    "enableScheduledEventDraining": True,
    "deleteLocalData": True,
    "nodeTerminationGracePeriod": 120,
}
UNKNOWN = "not a value this converter knows (a newer chart?): not carried over"
SECRET_VALUES = frozenset({"webhookURL", "webhookHeaders", "awsSecretAccessKey", "awsAccessKeyID"})
DROP_IN_PATH = "/etc/nodeagent/conf.d/50-from-nth.conf"
WEBHOOK_URL_FILE = "/etc/nodeagent/webhook-url"
WEBHOOK_HEADERS_FILE = "/etc/nodeagent/webhook-headers"
WEBHOOK_TEMPLATE_FILE = "/etc/nodeagent/webhook-template.json"
METRICS_FILE = "/var/lib/node_exporter/textfile_collector/nodeagent.prom"
RESPONSE_KEYS = {
    "spot-itn": "ON_SPOT_INTERRUPTION",
    "scheduled": "ON_SCHEDULED_EVENT",
    "rebalance": "ON_REBALANCE",
    "asg": "ON_ASG_TERMINATION",
}


# ------------------------------------------------------------------ the result


@dataclass(frozen=True)
class Setting:
    """One line of the drop-in. `active` False: written commented out, for the user to finish."""

    key: str
    value: str
    came_from: str  # the chart values it comes from, as shown in the comment above it
    comment: str = ""
    active: bool = True


@dataclass(frozen=True)
class Listed:
    """Chart values without an equivalent (or that behave differently), with the reason."""

    reason: str
    keys: tuple[str, ...]
    set_by_user: tuple[str, ...] = ()


@dataclass
class Conversion:
    settings: list[Setting] = field(default_factory=list)
    listed: list[Listed] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said first on standard error
    mapped: list[str] = field(default_factory=list)  # chart values that became drop-in lines


# ------------------------------------------------------------------ reading values


def row_for(path: Path) -> Row | None:
    """The row that covers a value: its own, or the nearest enclosing map's."""
    for length in range(len(path), 0, -1):
        prefix = path[:length]
        if all(isinstance(part, str) for part in prefix):
            row = ROWS_BY_KEY.get(".".join(str(part) for part in prefix))
            if row is not None:
                return row
    return None


def _flag(value: Any) -> bool | None:
    """A chart boolean as NTH's binary reads it (Go's ParseBool); None when it is not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    return None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class _Reader:
    """The user's values with the chart defaults under them, and notes on what was read."""

    def __init__(self, values: Mapping[str, Any], conversion: Conversion):
        self.values = values
        self.conversion = conversion

    def given(self, key: str) -> bool:
        return key in self.values and self.values[key] is not None

    def raw(self, key: str) -> Any:
        return self.values[key] if self.given(key) else CHART_DEFAULTS.get(key, "")

    def shown(self, key: str) -> str:
        """How a value is named in a comment: secrets by presence only."""
        value = self.raw(key)
        origin = "" if self.given(key) else " (chart default)"
        if key in SECRET_VALUES:
            return f"{key}={'<set, not shown>' if not _empty(value) else '(empty)'}{origin}"
        if isinstance(value, str):
            return f"{key}={json.dumps(value)}{origin}"
        return f"{key}={json.dumps(value, default=str)}{origin}"

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if _empty(value):
            return bool(BINARY_DEFAULTS.get(key, False))
        parsed = _flag(value)
        if parsed is None:
            default = bool(BINARY_DEFAULTS.get(key, CHART_DEFAULTS.get(key) is True))
            self.conversion.warnings.append(
                f"{key}: {json.dumps(value, default=str)} is not a boolean (NTH would refuse to start); "
                f"read as {str(default).lower()}"
            )
            return default
        return parsed


# ------------------------------------------------------------------ converting


def convert(values: Mapping[str, Any]) -> Conversion:
    """The user's merged chart values -> the drop-in settings and the listed values. Pure."""
    conversion = Conversion()
    read = _Reader(values, conversion)
    _responses(read, conversion)
    _taint(read, conversion)
    _simple(read, conversion)
    _webhook(read, conversion)
    _metrics(read, conversion)
    for setting in conversion.settings:
        _validate(setting, conversion)
    _list_the_rest(values, conversion)
    _placement(values, conversion)
    if read.flag("enableSqsTerminationDraining"):
        conversion.warnings.insert(
            0,
            "these values run NTH in queue-processor (SQS) mode, a cluster-wide Deployment; nodeagent "
            "reads each node's own IMDS instead. The drop-in covers the notices IMDS shows (spot "
            "interruption, rebalance, scheduled events, the ASG target lifecycle state); for EC2 "
            "instance state changes and AWS Health events there is no node-side signal",
        )
    return conversion


def _placement(values: Mapping[str, Any], conversion: Conversion) -> None:
    """NTH's node selector says which nodes it guarded: they are the ones to get the AMI."""
    for key in ("nodeSelector", "linuxNodeSelector", "daemonsetNodeSelector"):
        selector = values.get(key)
        if isinstance(selector, dict) and selector:
            labels = ", ".join(f"{name}={value}" for name, value in selector.items())
            conversion.warnings.append(
                f"{key} ({labels}): NTH ran only on nodes with these labels; bake nodeagent into the AMI "
                "of the node groups whose nodes carry them (docs/migrating-from-nth.md). nodeagent sets "
                "lifecycle=Ec2Spot on spot nodes itself (SPOT_LABEL)"
            )


def _add(conversion: Conversion, setting: Setting, *nth_keys: str) -> None:
    conversion.settings.append(setting)
    for key in nth_keys:
        if key not in conversion.mapped:
            conversion.mapped.append(key)


def _responses(read: _Reader, conversion: Conversion) -> None:
    cordon_only = read.flag("cordonOnly")
    tail = [read.shown("cordonOnly")] if cordon_only else []
    act = "cordon" if cordon_only else "drain"
    spot = act if read.flag("enableSpotInterruptionDraining") else "ignore"
    _add(
        conversion,
        Setting(
            "ON_SPOT_INTERRUPTION", spot, ", ".join([read.shown("enableSpotInterruptionDraining"), *tail])
        ),
        "enableSpotInterruptionDraining",
        "cordonOnly",
    )
    scheduled = act if read.flag("enableScheduledEventDraining") else "ignore"
    _add(
        conversion,
        Setting(
            "ON_SCHEDULED_EVENT",
            scheduled,
            ", ".join([read.shown("enableScheduledEventDraining"), *tail]),
            ROWS_BY_KEY["enableScheduledEventDraining"].note if scheduled != "ignore" else "",
        ),
        "enableScheduledEventDraining",
    )
    monitoring, draining = read.flag("enableRebalanceMonitoring"), read.flag("enableRebalanceDraining")
    rebalance = "ignore"
    if draining:
        rebalance = "cordon" if cordon_only else "drain"
    elif monitoring:
        rebalance = "cordon"
    _add(
        conversion,
        Setting(
            "ON_REBALANCE",
            rebalance,
            ", ".join(
                [read.shown("enableRebalanceMonitoring"), read.shown("enableRebalanceDraining"), *tail]
            ),
            "nodeagent's own default: cordon (it lifts the cordon when the recommendation is withdrawn)"
            if rebalance != "cordon"
            else "",
        ),
        "enableRebalanceMonitoring",
        "enableRebalanceDraining",
    )
    asg = act if read.flag("enableASGLifecycleDraining") else "ignore"
    _add(
        conversion,
        Setting(
            "ON_ASG_TERMINATION",
            asg,
            ", ".join([read.shown("enableASGLifecycleDraining"), *tail]),
            "nodeagent's own default: drain (NTH acts on the ASG target lifecycle state only with "
            "enableASGLifecycleDraining=true)"
            if asg == "ignore"
            else "",
        ),
        "enableASGLifecycleDraining",
    )


def _taint(read: _Reader, conversion: Conversion) -> None:
    if not read.flag("taintNode"):
        _add(
            conversion,
            Setting(
                "TAINT",
                "",
                read.shown("taintNode"),
                "no taint, as NTH; node credentials may not taint anyway (the cordon keeps new pods off)",
            ),
            "taintNode",
        )
        return
    effect = str(read.raw("taintEffect") or "NoSchedule").strip()
    _add(
        conversion,
        Setting(
            "TAINT",
            f"nodeagent.io/interruption=<kind>:{effect}",
            ", ".join([read.shown("taintNode"), read.shown("taintEffect")]),
            "node credentials may not set it (NodeRestriction): the cordon keeps new pods off; "
            "tolerations of NTH's aws-node-termination-handler/* taints match nothing any more",
        ),
        "taintNode",
        "taintEffect",
    )


def _simple(read: _Reader, conversion: Conversion) -> None:
    if read.given("excludeFromLoadBalancers"):
        exclude = "true" if read.flag("excludeFromLoadBalancers") else "false"
        _add(
            conversion,
            Setting(
                "EXCLUDE_FROM_LB",
                exclude,
                read.shown("excludeFromLoadBalancers"),
                ROWS_BY_KEY["excludeFromLoadBalancers"].note,
            ),
            "excludeFromLoadBalancers",
        )
    dry_run = read.flag("dryRun")
    _add(
        conversion,
        Setting(
            "DRY_RUN",
            "true" if dry_run else "false",
            read.shown("dryRun"),
            "every write is a server-side dry run (dryRun=All): checked by the API server, never stored"
            if dry_run
            else "",
        ),
        "dryRun",
    )
    local = read.flag("deleteLocalData")
    _add(
        conversion,
        Setting(
            "EVICT_LOCAL_STORAGE",
            "true" if local else "false",
            read.shown("deleteLocalData"),
            "" if local else "pods with an emptyDir volume stay on the node; the rest are drained",
        ),
        "deleteLocalData",
    )
    window = read.raw("nodeTerminationGracePeriod")
    seconds = BINARY_DEFAULTS["nodeTerminationGracePeriod"] if _empty(window) else window
    _add(
        conversion,
        Setting(
            "DRAIN_WINDOW",
            f"{seconds}s" if isinstance(seconds, int) or str(seconds).strip().isdigit() else str(seconds),
            read.shown("nodeTerminationGracePeriod"),
            "the deadline of notices without a time of their own (rebalance, ASG termination); a spot "
            "interruption keeps its termination time, a scheduled event its NotBefore",
        ),
        "nodeTerminationGracePeriod",
    )
    if not _empty(read.raw("instanceMetadataURL")):
        _add(
            conversion,
            Setting(
                "IMDS_URL", str(read.raw("instanceMetadataURL")).strip(), read.shown("instanceMetadataURL")
            ),
            "instanceMetadataURL",
        )
    level = str(read.raw("logLevel") or "info").strip().lower()
    _add(
        conversion,
        Setting(
            "LOG_LEVEL",
            {"warn": "warning", "fatal": "error", "panic": "error"}.get(level, level),
            read.shown("logLevel"),
        ),
        "logLevel",
    )
    events = read.flag("emitKubernetesEvents")
    _add(
        conversion,
        Setting(
            "EVENTS",
            "true" if events else "false",
            read.shown("emitKubernetesEvents"),
            "" if events else "nodeagent's own default: true (Events on the Node; docs/operating.md)",
        ),
        "emitKubernetesEvents",
    )


def _webhook(read: _Reader, conversion: Conversion) -> None:
    url, secret_name = not _empty(read.raw("webhookURL")), not _empty(read.raw("webhookURLSecretName"))
    if url or secret_name:
        source = "webhookURLSecretName" if secret_name else "webhookURL"
        _add(
            conversion,
            Setting(
                "WEBHOOK_URL_FILE",
                WEBHOOK_URL_FILE,
                read.shown(source),
                ROWS_BY_KEY[source].note,
                active=False,
            ),
            source,
        )
    headers = read.raw("webhookHeaders")
    if not _empty(headers):
        names = _header_names(headers)
        extra = [name for name in names or () if name.lower() != "content-type"]
        if names is None or extra:
            shown = f" (headers: {', '.join(extra)})" if extra else ""
            _add(
                conversion,
                Setting(
                    "WEBHOOK_HEADERS_FILE",
                    WEBHOOK_HEADERS_FILE,
                    read.shown("webhookHeaders") + shown,
                    ROWS_BY_KEY["webhookHeaders"].note,
                    active=False,
                ),
                "webhookHeaders",
            )
        else:
            conversion.mapped.append("webhookHeaders")  # Content-Type only: nodeagent sets it itself
    template_keys = [
        key
        for key in ("webhookTemplate", "webhookTemplateConfigMapName", "webhookTemplateConfigMapKey")
        if not _empty(read.raw(key))
    ]
    if template_keys:
        _add(
            conversion,
            Setting(
                "WEBHOOK_TEMPLATE",
                WEBHOOK_TEMPLATE_FILE,
                ", ".join(read.shown(key) for key in template_keys),
                "rewrite NTH's Go template as a file of ${field} placeholders (docs/operating.md lists "
                "the fields), then set this",
                active=False,
            ),
            *template_keys,
        )


def _header_names(headers: Any) -> list[str] | None:
    """The header names of NTH's JSON object form (values are secrets: never kept)."""
    if isinstance(headers, dict):
        return [str(name) for name in headers]
    try:
        parsed = json.loads(str(headers))
    except ValueError:
        return None
    return [str(name) for name in parsed] if isinstance(parsed, dict) else None


def _metrics(read: _Reader, conversion: Conversion) -> None:
    if read.flag("enablePrometheusServer"):
        _add(
            conversion,
            Setting(
                "METRICS_TEXTFILE",
                METRICS_FILE,
                read.shown("enablePrometheusServer"),
                "NTH served metrics on a port; nodeagent writes this file for node_exporter's textfile "
                "collector: set the directory your node_exporter reads (docs/monitoring.md)",
                active=False,
            ),
            "enablePrometheusServer",
        )


def _validate(setting: Setting, conversion: Conversion) -> None:
    """A value nodeagent would refuse is written commented out, and said."""
    if not setting.active:
        return
    try:
        KEYS_BY_NAME[setting.key].parse(setting.value)
    except ValueError as error:
        index = conversion.settings.index(setting)
        conversion.settings[index] = Setting(
            setting.key,
            setting.value,
            setting.came_from,
            f"not valid for nodeagent ({error}): fix or delete",
            active=False,
        )
        conversion.warnings.append(f"{setting.came_from}: {setting.key} would be refused: {error}")


def _list_the_rest(values: Mapping[str, Any], conversion: Conversion) -> None:
    """Every chart value that did not become a line, grouped by reason; the user's own marked."""
    groups: dict[str, list[str]] = {}
    users: set[str] = set()
    for path in helm_values.flatten(values):
        row = row_for(path)
        if row is None:
            key = helm_values.dotted(path)
            groups.setdefault(UNKNOWN, []).append(key)
            users.add(key)
        else:
            users.add(row.key)
    for row in ROWS:
        if row.key in conversion.mapped:
            if row.note.startswith("differs: "):
                groups.setdefault(f"mapped, but it {row.note}", []).append(row.key)
        elif row.nodeagent:
            reason = f"nothing to carry over at this value (it maps to {', '.join(row.nodeagent)})"
            groups.setdefault(reason, []).append(row.key)
        else:
            groups.setdefault(row.note, []).append(row.key)
    for reason, keys in groups.items():
        conversion.listed.append(Listed(reason, tuple(keys), tuple(key for key in keys if key in users)))


# ------------------------------------------------------------------ output


def render_dropin(conversion: Conversion, version: str, inputs: str) -> str:
    """The conf.d drop-in (standard output)."""
    lines = [
        "# nodeagent drop-in converted from aws-node-termination-handler chart values",
        f"# by `nodeagent migrate-from-nth` (nodeagent {version}) from: {inputs or 'the chart defaults'}.",
        f"# Install it as {DROP_IN_PATH} (root-owned, not group- or world-writable)",
        "# and run `nodeagent check-config`. Each line names the chart values it comes from; delete a",
        "# line to take nodeagent's own default. Commented-out lines need a file of yours first.",
        "# Chart values with no equivalent are listed on standard error.",
    ]
    for setting in conversion.settings:
        lines.append("")
        lines.append(f"# from {setting.came_from}")
        if setting.comment:
            lines.append(f"# {setting.comment}")
        lines.append(f"{'' if setting.active else '#'}{setting.key}={setting.value}")
    return "\n".join(lines) + "\n"


def render_notes(conversion: Conversion) -> str:
    """What standard error says: warnings, then every chart value that did not map, by reason."""
    lines = [f"warning: {warning}" for warning in conversion.warnings]
    lines.append(
        f"{len(conversion.mapped)} chart values became drop-in lines (standard output); "
        "these have no equivalent or behave differently:"
    )
    for listed in conversion.listed:
        marked = [f"{key} (yours)" if key in listed.set_by_user else key for key in listed.keys]
        lines.append(f"- {', '.join(marked)}: {listed.reason}")
    return "\n".join(lines) + "\n"
