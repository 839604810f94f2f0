"""Layered configuration: defaults < nodeagent.conf < conf.d/*.conf < NODEAGENT_<KEY> < CLI flags.

Parsing is pure: `load_settings` takes the file contents, the environment and the flags as
arguments, so it can be tested with no disk at all. `read_config_files` is the only I/O.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
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
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; a FIFO or /dev/zero must not hang or fill memory


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


def _optional_duration_between(low: float, high: float) -> Callable[[str], float | None]:
    within = _duration_between(low, high)

    def parse(text: str) -> float | None:
        return within(text) if text.strip() else None

    return parse


def _optional_https_url(text: str) -> str:
    value = _url(text) if text.strip() else ""
    if value and not value.lower().startswith("https://"):
        raise ValueError(f"{text!r} is not an https:// URL (the AWS API is only called over TLS)")
    return value


def _hook_name(text: str) -> str:
    """Lifecycle hook and Auto Scaling group names: 1..255 printable characters, no spaces at the ends."""
    value = text.strip()
    if value and not (len(value) <= 255 and re.fullmatch(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?", value)):
        raise ValueError(f"{text!r} is not a valid name (up to 255 printable ASCII characters)")
    return value


def _share(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0.1 <= value <= 0.9:
        raise ValueError(f"{value:g} is out of range (0.1..0.9)")
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
        "POLL_INTERVAL_ASG",
        "",
        _optional_duration_between(0.1, 60),
        "how often the ASG target lifecycle state is polled; empty = POLL_INTERVAL. A longer one "
        "suits a sub-second POLL_INTERVAL kept for spot notices (1s: a third fewer IMDS requests at 250ms)",
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
    KeySpec(
        "DRAIN_PARALLELISM",
        "32",
        lambda t: _int_between(t, 1, 256),
        "most API requests in flight at once; fewer while the API server throttles",
    ),
    KeySpec(
        "API_QPS",
        "50",
        lambda t: _int_between(t, 1, 1000),
        "most API requests per second, on average (as the kubelet's own client)",
    ),
    KeySpec(
        "API_BURST", "100", lambda t: _int_between(t, 1, 10000), "API requests allowed at once above API_QPS"
    ),
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
    KeySpec("WEBHOOK_URL", "", _optional_url, "webhook receiver URL", secret=True),
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
        "extra headers, 'Name: value; Name2: value2'",
        secret=True,
    ),
    KeySpec(
        "WEBHOOK_URL_FILE",
        "",
        _optional_path,
        "file holding WEBHOOK_URL, owner-only (0600); default: the credential webhook-url, "
        "if the unit loads one",
    ),
    KeySpec(
        "WEBHOOK_HEADERS_FILE",
        "",
        _optional_path,
        "file holding WEBHOOK_HEADERS, owner-only (0600); default: the credential webhook-headers, if loaded",
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
    KeySpec(
        "ASG_LIFECYCLE_HOOK",
        "",
        _hook_name,
        "termination lifecycle hook to complete (CONTINUE) once an ASG termination's drain ends, "
        "heartbeating it while the drain runs; empty = off (docs/asg-lifecycle.md)",
    ),
    KeySpec(
        "ASG_NAME",
        "",
        _hook_name,
        "the Auto Scaling group; empty = IMDS tag aws:autoscaling:groupName (needs instance metadata tags)",
    ),
    KeySpec(
        "ASG_HEARTBEAT_TIMEOUT",
        "1h",
        _duration_between(30, 7200),
        "the hook's heartbeat timeout, as configured on the hook",
    ),
    KeySpec(
        "ASG_HEARTBEAT_SHARE",
        "0.5",
        _share,
        "heartbeat once a drain has held the instance this share of ASG_HEARTBEAT_TIMEOUT (0.1..0.9)",
    ),
    KeySpec(
        "ASG_HEARTBEAT_MAX",
        "2h",
        _duration_between(30, 172800),
        "never heartbeat the hold past this long from the termination (AWS caps it too: 48h or 100 timeouts)",
    ),
    KeySpec("ASG_FIPS", "false", parse_bool, "use the autoscaling-fips endpoint"),
    KeySpec(
        "ASG_ENDPOINT_URL",
        "",
        _optional_https_url,
        "Auto Scaling endpoint override (https://); empty = by region and partition",
    ),
    KeySpec(
        "ASG_CA_BUNDLE",
        "",
        _optional_path,
        "CA bundle to verify the Auto Scaling endpoint; empty = the system's",
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
    poll_interval_asg: float | None  # None: POLL_INTERVAL
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
    api_qps: int
    api_burst: int
    spot_label: bool
    spot_label_at_boot: bool
    uncordon_after_reboot: bool
    exec_plugin_timeout: float
    events: bool
    webhook_url: str
    webhook_format: str
    webhook_template: str
    webhook_headers: str
    webhook_url_file: str
    webhook_headers_file: str
    metrics_textfile: str
    withdrawn_after_polls: int
    withdrawn_after: float
    asg_lifecycle_hook: str
    asg_name: str
    asg_heartbeat_timeout: float
    asg_heartbeat_share: float
    asg_heartbeat_max: float
    asg_fips: bool
    asg_endpoint_url: str
    asg_ca_bundle: str
    # key -> where its value came from ("default", a file path, "env NODEAGENT_X", "flag")
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

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


KEY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SHOWABLE_KEY = re.compile(r"[A-Z]+(_[A-Z]+)*")  # like every real key; no digits, so no key id or token


def parse_config_text(source: ConfigSource) -> list[tuple[str, str, int]]:
    """KEY=value lines -> [(key, value, line_no)]. Comments, blanks, CRLF and `export` are fine.

    Lines end at "\\n" only (a "\\r" before it is dropped), as the shell that reads the same file
    at boot (packaging/spot-label) sees them: form feeds, NEL or U+2028 do not start a line. A bad
    line is reported by file and line number, never quoted: it may hold a secret."""
    entries = []
    for line_no, raw_line in enumerate(source.text.split("\n"), start=1):
        line = raw_line[:-1] if raw_line.endswith("\r") else raw_line
        line = line.strip(" \t")
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip(" \t")
        if "=" not in line:
            raise ConfigError(
                "CONFIG_FILE",
                f"{source.origin}:{line_no}: expected KEY=value "
                "(the line is not shown: it may hold a secret)",
            )
        key, value = line.split("=", 1)
        key = key.strip(" \t")
        if not KEY_NAME.fullmatch(key):
            raise ConfigError(
                "CONFIG_FILE",
                f"{source.origin}:{line_no}: the text before '=' is not a KEY name "
                "(the line is not shown: it may hold a secret)",
            )
        value = value.strip(" \t")
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
            if not SHOWABLE_KEY.fullmatch(key):  # e.g. a pasted token before an '=': not echoed
                raise ConfigError(
                    "CONFIG_FILE",
                    f"unknown key, not shown: keys are upper-case words joined by '_' (from {origin})",
                )
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
    """nodeagent.conf then conf.d/*.conf in lexical order. Missing files are fine; files and
    directories that anyone but root (or the user running the command) could change are refused
    (see trust_problem), and one that cannot be read is an error, never silently skipped."""
    base = Path(config_dir)
    _check_directory(base)
    candidates = [base / "nodeagent.conf"]
    drop_in_dir = base / "conf.d"
    if _check_directory(drop_in_dir):
        try:
            names = sorted(name for name in os.listdir(drop_in_dir) if name.endswith(".conf"))
        except OSError as error:
            raise ConfigError("CONFIG_FILE", f"cannot read directory {drop_in_dir}: {_why(error)}") from None
        candidates += [drop_in_dir / name for name in names]
    return [source for source in (_read_one(path) for path in candidates) if source is not None]


def _why(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied (run as root, or with sudo); its settings would be missing"
    return str(error.strerror or error)


def trust_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a config file or directory cannot be trusted, or None. Pure.

    The config decides which kubeconfig (and so which exec plugin) runs with the node's
    identity, where the state goes and where the webhook posts: a file that another non-root
    user owns, or that a group or everyone may write, would hand them that."""
    if st.st_uid not in (0, euid):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o002:
        return "writable by everyone"
    if st.st_mode & 0o020:
        return f"writable by group {st.st_gid}"
    return None


def _refuse_untrusted(path: Path, st: os.stat_result) -> None:
    problem = trust_problem(st, os.geteuid())
    if problem:
        what = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        raise ConfigError(
            "CONFIG_FILE",
            f"refusing config {what} {path}: {problem} (make it root-owned "
            "and not group/world-writable: chown root:root, chmod go-w)",
        )


def _check_directory(path: Path) -> bool:
    """True when the directory exists (and may be trusted)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ConfigError("CONFIG_FILE", f"cannot read directory {path}: {_why(error)}") from None
    if not stat.S_ISDIR(st.st_mode):
        return False
    _refuse_untrusted(path, st)
    return True


def _read_one(path: Path) -> ConfigSource | None:
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError("CONFIG_FILE", f"{path} is a directory, expected a KEY=value file") from None
    except OSError as error:
        raise ConfigError("CONFIG_FILE", f"cannot read {path}: {_why(error)}") from None
    try:
        st = os.fstat(fd)  # the file that was opened, not whatever the name points to now
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError("CONFIG_FILE", f"{path} is a directory, expected a KEY=value file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("CONFIG_FILE", f"{path} is not a regular file")
        _refuse_untrusted(path, st)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError("CONFIG_FILE", f"cannot read {path}: {_why(error)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("CONFIG_FILE", f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError("CONFIG_FILE", f"{path} is not UTF-8 (byte {error.start})") from None
    return ConfigSource(str(path), text.lstrip("\ufeff"))


def load(environ: Mapping[str, str], flags: Mapping[str, str] | None = None) -> Settings:
    from nodeagent import secret_files  # it builds on this module

    config_dir = environ.get(ENV_PREFIX + "CONFIG_DIR", DEFAULT_CONFIG_DIR)
    return secret_files.resolve(load_settings(read_config_files(config_dir), environ, flags), environ)


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
    "API_QPS",
    "API_BURST",
    "ASG_LIFECYCLE_HOOK",
    "ASG_NAME",
    "ASG_HEARTBEAT_TIMEOUT",
    "ASG_HEARTBEAT_SHARE",
    "ASG_HEARTBEAT_MAX",
    "ASG_FIPS",
    "ASG_ENDPOINT_URL",
    "ASG_CA_BUNDLE",
)


UNITLESS_KEYS = ("ASG_HEARTBEAT_SHARE",)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    return [key for key in RESTART_ONLY_KEYS if getattr(old, key.lower()) != getattr(new, key.lower())]


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for check-config and status; secrets are masked."""
    rows = []
    for spec in KEYS:
        value = getattr(settings, spec.name.lower())
        if spec.secret and value:
            shown = "<set, hidden>"
        elif value is None:  # an optional key left empty (POLL_INTERVAL_ASG: POLL_INTERVAL applies)
            shown = ""
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, float) and spec.name not in UNITLESS_KEYS:
            shown = f"{value:g}s"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        rows.append((spec.name, shown, settings.sources.get(spec.name, "default")))
    return rows
