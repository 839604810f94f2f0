"""The aws-node-termination-handler (NTH) Helm chart's values, and what each becomes in nodeagent.

`ROWS` says, for every value of the chart's default values.yaml (and the newer chart values people
set most), which nodeagent keys it becomes or why it has none; `CHART_DEFAULTS` and
`BINARY_DEFAULTS` are what NTH does when a value is not set. Data only: nth_migrate.py converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
