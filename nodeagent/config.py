"""Layered configuration: defaults < nodeagent.conf < conf.d/*.conf < NODEAGENT_<KEY> < CLI flags.

Parsing is pure: `load_settings` takes the file contents, the environment and the flags as
arguments, so it can be tested with no disk at all. `read_config_files` is the only I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

EX_CONFIG = 78
DEFAULT_CONFIG_DIR = "/etc/nodeagent"
ENV_PREFIX = "NODEAGENT_"
RESPONSES = ("drain", "cordon", "ignore")
SPOT_GATES = ("label", "imds", "label-or-imds", "label-and-imds", "off")
TRISTATE = ("auto", "true", "false")


class ConfigError(Exception):
    """A bad key or value. `key` names it; the message says what was wrong."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config: {key}: {message}")
        self.key = key


def parse_duration(text: str) -> float:
    """'90s', '2m', '1.5s', '500ms', '1h' or a bare number of seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 2m, 1.5s, 500ms)")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _enum(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of: {', '.join(choices)}")
        return value

    return parse


def _duration_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if not low <= seconds <= high:
            raise ValueError(f"{text!r} is out of range ({low:g}s..{high:g}s)")
        return seconds

    return parse


def _url(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError(f"{text!r} is not an http(s) URL")
    return value.rstrip("/")


def _imds_url(text: str) -> str:
    value = _url(text)
    if not value.lower().startswith("http://"):
        raise ValueError(f"{text!r} is not an http:// URL (IMDS has no TLS endpoint)")
    return value


def _optional_url(text: str) -> str:
    return _url(text) if text.strip() else ""


def _path(text: str) -> str:
    value = text.strip()
    if not value.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    return value


def _optional_path(text: str) -> str:
    return _path(text) if text.strip() else ""


def _node_name(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
        raise ValueError(f"{text!r} is not a valid node name")
    return value


def _taint(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(
        r"[A-Za-z0-9./_-]+(=[A-Za-z0-9<>._-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)", value
    ):
        raise ValueError(f"{text!r} is not a taint (key[=value]:NoSchedule)")
    return value


def _log_level(text: str) -> str:
    return _enum(("debug", "info", "warning", "error"))(text)


def _string(text: str) -> str:
    return text.strip()


def _priority_classes(text: str) -> str:
    """Comma-separated PriorityClass names (DNS subdomains). A typo such as ';' for ',' would
    otherwise silently put no pod in the last tier."""
    for name in (part.strip() for part in text.split(",")):
        if name and not (
            len(name) <= 253
            and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
        ):
            raise ValueError(f"{name!r} is not a PriorityClass name (comma-separated lowercase DNS names)")
    return text.strip()


def _headers(text: str) -> str:
    """'Name: value; Name2: value2'. The error never quotes a value: they are secrets."""
    for index, entry in enumerate((e for e in text.split(";") if e.strip()), start=1):
        name, sep, value = entry.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name.strip()):
            raise ValueError(f"entry {index} is not 'Name: value' (entries are separated by ';')")
        if "\r" in value or "\n" in value:
            raise ValueError(f"entry {index} ({name.strip()}) has a line break in its value")
    return text.strip()


@dataclass(frozen=True)
class KeySpec:
    name: str
    default: str
    parse: Callable[[str], object]
    help: str
    secret: bool = False


KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "ENABLED", "true", parse_bool, "false: `run` exits 0 at once (turn the agent off per node group)"
    ),
    KeySpec("IMDS_URL", "http://169.254.169.254", _imds_url, "instance metadata endpoint (plain http://)"),
    KeySpec(
        "POLL_INTERVAL",
        "1s",
        _duration_between(0.1, 60),
        "how often IMDS is polled for spot interruptions and ASG terminations (seconds of warning "
        "at most), and for any notice being responded to",
    ),
    KeySpec(
        "POLL_INTERVAL_REBALANCE",
        "5s",
        _duration_between(0.1, 300),
        "how often the rebalance recommendation is polled: it is advisory and comes well before "
        "any interruption (POLL_INTERVAL while one is being responded to)",
    ),
    KeySpec(
        "POLL_INTERVAL_SCHEDULED",
        "30s",
        _duration_between(0.1, 600),
        "how often scheduled maintenance events are polled: they are announced days ahead "
        "(POLL_INTERVAL while one is being responded to)",
    ),
    KeySpec("IMDS_ALLOW_V1", "false", parse_bool, "fall back to IMDSv1 when the token PUT is refused"),
    KeySpec("KUBECONFIG", "/var/lib/kubelet/kubeconfig", _path, "kubeconfig (the kubelet's own)"),
    KeySpec("NODE_NAME", "", _node_name, "this node's name; empty = ask the API (SelfSubjectReview)"),
    KeySpec("STATE_DIR", "/var/lib/nodeagent", _path, "where state.json lives"),
    KeySpec("DRY_RUN", "false", parse_bool, "server-side dryRun=All for every write"),
    KeySpec("LOG_LEVEL", "info", _log_level, "debug, info, warning, error"),
    KeySpec("ON_SPOT_INTERRUPTION", "drain", _enum(RESPONSES), "drain, cordon or ignore"),
    KeySpec("ON_REBALANCE", "cordon", _enum(RESPONSES), "drain, cordon or ignore"),
    KeySpec("ON_SCHEDULED_EVENT", "drain", _enum(RESPONSES), "drain, cordon or ignore"),
    KeySpec("ON_ASG_TERMINATION", "drain", _enum(RESPONSES), "drain, cordon or ignore"),
    KeySpec("SPOT_GATE", "label-or-imds", _enum(SPOT_GATES), "how a spot node is recognised"),
    KeySpec(
        "DRAIN_MARGIN", "15s", _duration_between(0, 600), "pods must be gone this long before the deadline"
    ),
    KeySpec(
        "DRAIN_WINDOW", "120s", _duration_between(1, 86400), "deadline for notices with no time of their own"
    ),
    KeySpec(
        "FORCE_AT_DEADLINE",
        "auto",
        _enum(TRISTATE),
        "delete PDB-blocked pods at their last safe moment (auto: not for rebalance)",
    ),
    KeySpec(
        "EXCLUDE_FROM_LB",
        "auto",
        _enum(TRISTATE),
        "label node.kubernetes.io/exclude-from-external-load-balancers (auto: spot only)",
    ),
    KeySpec(
        "TAINT",
        "nodeagent.io/interruption=<kind>:NoSchedule",
        _taint,
        "taint to try (node credentials cannot; cordon is the fallback); empty disables",
    ),
    KeySpec("EVICT_LOCAL_STORAGE", "true", parse_bool, "evict pods with emptyDir volumes"),
    KeySpec("EVICT_UNMANAGED", "true", parse_bool, "evict pods with no controller"),
    KeySpec(
        "LAST_TIER_PRIORITY_CLASSES",
        "system-cluster-critical,system-node-critical",
        _priority_classes,
        "priority classes evicted after everything else",
    ),
    KeySpec("DRAIN_PARALLELISM", "32", lambda t: _int_between(t, 1, 256), "evictions in flight at once"),
    KeySpec(
        "SPOT_LABEL", "true", parse_bool, "set lifecycle=Ec2Spot through the API when a spot node lacks it"
    ),
    KeySpec(
        "SPOT_LABEL_AT_BOOT", "true", parse_bool, "boot oneshot writes the nodeadm drop-in with the label"
    ),
    KeySpec(
        "UNCORDON_AFTER_REBOOT",
        "true",
        parse_bool,
        "uncordon once a scheduled event has happened: at the first start after a scheduled reboot, "
        "or when IMDS marks the event completed",
    ),
    KeySpec(
        "EXEC_PLUGIN_TIMEOUT", "20s", _duration_between(1, 300), "give up on a credential plugin after this"
    ),
    KeySpec("EVENTS", "true", parse_bool, "write Kubernetes Events on the Node"),
    KeySpec("WEBHOOK_URL", "", _optional_url, "webhook receiver (never logged)", secret=True),
    KeySpec("WEBHOOK_FORMAT", "json", _enum(("json", "slack")), "json or slack"),
    KeySpec(
        "WEBHOOK_TEMPLATE",
        "",
        _optional_path,
        "file with a `${field}` template (string.Template) for the webhook body; must render to JSON",
    ),
    KeySpec(
        "WEBHOOK_HEADERS",
        "",
        _headers,
        "extra headers, 'Name: value; Name2: value2' (never logged)",
        secret=True,
    ),
    KeySpec("METRICS_TEXTFILE", "", _optional_path, "node_exporter textfile to write (no listening port)"),
    KeySpec(
        "WITHDRAWN_AFTER_POLLS",
        "3",
        lambda t: _int_between(t, 1, 100),
        "a rebalance or scheduled event counts as withdrawn only when this many answered polls "
        "in a row miss it",
    ),
    KeySpec(
        "WITHDRAWN_AFTER",
        "5s",
        _duration_between(0, 3600),
        "... and it has been missing for at least this long (an explicit 'canceled' acts at once)",
    ),
)
KEYS_BY_NAME: dict[str, KeySpec] = {spec.name: spec for spec in KEYS}


def _int_between(text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range ({low}..{high})")
    return value


@dataclass(frozen=True)
class Settings:
    enabled: bool
    imds_url: str
    poll_interval: float
    poll_interval_rebalance: float
    poll_interval_scheduled: float
    imds_allow_v1: bool
    kubeconfig: str
    node_name: str
    state_dir: str
    dry_run: bool
    log_level: str
    on_spot_interruption: str
    on_rebalance: str
    on_scheduled_event: str
    on_asg_termination: str
    spot_gate: str
    drain_margin: float
    drain_window: float
    force_at_deadline: str
    exclude_from_lb: str
    taint: str
    evict_local_storage: bool
    evict_unmanaged: bool
    last_tier_priority_classes: str
    drain_parallelism: int
    spot_label: bool
    spot_label_at_boot: bool
    uncordon_after_reboot: bool
    exec_plugin_timeout: float
    events: bool
    webhook_url: str
    webhook_format: str
    webhook_template: str
    webhook_headers: str
    metrics_textfile: str
    withdrawn_after_polls: int
    withdrawn_after: float
    # key -> where its value came from ("default", a file path, "env NODEAGENT_X", "flag")
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def response_for(self, kind: str) -> str:
        return {
            "spot-itn": self.on_spot_interruption,
            "rebalance": self.on_rebalance,
            "scheduled": self.on_scheduled_event,
            "asg": self.on_asg_termination,
        }[kind]

    def force_for(self, kind: str) -> bool:
        if self.force_at_deadline == "auto":
            return kind != "rebalance"
        return self.force_at_deadline == "true"

    def exclude_lb_for(self, kind: str) -> bool:
        if self.exclude_from_lb == "auto":
            return kind == "spot-itn"
        return self.exclude_from_lb == "true"

    def last_tier(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.last_tier_priority_classes.split(",") if c.strip())


@dataclass(frozen=True)
class ConfigSource:
    """One KEY=value file: where it came from and its text."""

    origin: str
    text: str


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS_BY_NAME, n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def parse_config_text(source: ConfigSource) -> list[tuple[str, str, int]]:
    """KEY=value lines -> [(key, value, line_no)]. Comments, blanks, CRLF and `export` are fine."""
    entries = []
    for line_no, raw_line in enumerate(source.text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        if "=" not in line:
            raise ConfigError(line.split()[0], f"{source.origin}:{line_no}: expected KEY=value")
        key, value = line.split("=", 1)
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        entries.append((key, value, line_no))
    return entries


def load_settings(
    files: Sequence[ConfigSource],
    environ: Mapping[str, str],
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Merge all layers and validate every key. Raises ConfigError naming the key."""
    raw: dict[str, str] = {spec.name: spec.default for spec in KEYS}
    sources: dict[str, str] = {spec.name: "default" for spec in KEYS}

    def put(key: str, value: str, origin: str) -> None:
        if key not in KEYS_BY_NAME:
            raise ConfigError(key, f"unknown key (from {origin}){_suggest(key)}")
        raw[key] = value
        sources[key] = origin

    for source in files:
        for key, value, line_no in parse_config_text(source):
            put(key, value, f"{source.origin}:{line_no}")
    for env_key, value in environ.items():
        if not env_key.startswith(ENV_PREFIX) or env_key == ENV_PREFIX + "CONFIG_DIR":
            continue
        put(env_key[len(ENV_PREFIX) :], value, f"env {env_key}")
    for key, value in (flags or {}).items():
        put(key, value, "flag")

    # Any: each key's parser returns its Settings field's type (the KEYS table pairs them).
    values: dict[str, Any] = {}
    for spec in KEYS:
        try:
            values[spec.name.lower()] = spec.parse(raw[spec.name])
        except ValueError as error:
            text = str(error)
            if spec.secret and raw[spec.name].strip():  # parsers quote bad values; not a secret's
                text = text.replace(repr(raw[spec.name]), "<hidden>").replace(
                    raw[spec.name].strip(), "<hidden>"
                )
            raise ConfigError(spec.name, f"{text} (from {sources[spec.name]})") from None
    return Settings(sources=sources, **values)


def read_config_files(config_dir: str) -> list[ConfigSource]:
    """nodeagent.conf then conf.d/*.conf in lexical order. Missing files are fine."""
    base = Path(config_dir)
    candidates = [base / "nodeagent.conf"]
    drop_in_dir = base / "conf.d"
    if drop_in_dir.is_dir():
        candidates += sorted(drop_in_dir.glob("*.conf"))
    sources = []
    for path in candidates:
        if not path.exists():
            continue
        if path.is_dir():
            raise ConfigError("CONFIG_FILE", f"{path} is a directory, expected a KEY=value file")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ConfigError("CONFIG_FILE", f"cannot read {path}: {error.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError("CONFIG_FILE", f"{path} is not UTF-8 (byte {error.start})") from None
        sources.append(ConfigSource(str(path), text.lstrip("\ufeff")))
    return sources


def load(environ: Mapping[str, str], flags: Mapping[str, str] | None = None) -> Settings:
    config_dir = environ.get(ENV_PREFIX + "CONFIG_DIR", DEFAULT_CONFIG_DIR)
    return load_settings(read_config_files(config_dir), environ, flags)


def parse_set_flags(pairs: Sequence[str]) -> dict[str, str]:
    """The command line's `--set KEY=value` pairs as flags for `load` (keys upper-cased)."""
    flags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(key or pair, "--set takes KEY=value")
        flags[key.strip().upper()] = value
    return flags


def load_with_set_flags(environ: Mapping[str, str], pairs: Sequence[str]) -> Settings:
    """What each command runs with: the config files, the environment, then its --set pairs."""
    return load(environ, parse_set_flags(pairs))


# Read once at startup (the API client, the state file); a reload says they wait for a restart.
RESTART_ONLY_KEYS = (
    "ENABLED",
    "KUBECONFIG",
    "NODE_NAME",
    "STATE_DIR",
    "EXEC_PLUGIN_TIMEOUT",
    "DRAIN_PARALLELISM",
)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    return [key for key in RESTART_ONLY_KEYS if getattr(old, key.lower()) != getattr(new, key.lower())]


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for check-config and status; secrets are masked."""
    rows = []
    for spec in KEYS:
        value = getattr(settings, spec.name.lower())
        if spec.secret and value:
            shown = "<set, hidden>"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, float):
            shown = f"{value:g}s"
        else:
            shown = str(value)
        rows.append((spec.name, shown, settings.sources.get(spec.name, "default")))
    return rows
