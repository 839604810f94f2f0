"""aws-node-termination-handler (NTH) Helm chart values -> a nodeagent conf.d drop-in.

nth_chart.py's `ROWS` says, for every value of the chart's default values.yaml (and the newer
chart values people set most), which nodeagent keys it becomes or why it has none. `convert` is
pure: the user's values (already merged as Helm merges them, see helm_values) in, a `Conversion`
out; `render_dropin` and `render_notes` turn it into the drop-in (standard output) and the notes
(standard error).

The drop-in reproduces what the NTH release did: where NTH's behaviour differs from nodeagent's
own default (rebalance recommendations are ignored unless enabled, no Events unless enabled), the
line says so, and deleting it gives nodeagent's default. Secrets (the webhook URL and headers)
are never copied: the drop-in says which file to put them in.

Why one module of this size: it has one job, turning NTH's values into nodeagent's, and most of
its length is one small function per group of related values (responses, taint, webhook,
metrics...), each of which must agree with the others on what counts as given; the chart's table
is apart (nth_chart.py), and the output is two short functions over the Conversion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeagent import helm_values
from nodeagent.config import KEYS_BY_NAME
from nodeagent.helm_values import Path
from nodeagent.nth_chart import (
    BINARY_DEFAULTS,
    CHART_DEFAULTS,
    ROWS,
    ROWS_BY_KEY,
    SECRET_VALUES,
    UNKNOWN,
    Row,
)

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
