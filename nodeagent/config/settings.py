"""Settings: every key's parsed value, one typed field per key of the table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nodeagent.config.keys import KEYS, KeySpec


# The fields are spelled out, not generated from KEYS: mypy checks every `settings.<field>` use
# against these types, which a class built at run time (dataclasses.make_dataclass) would hide
# from it. tests/unit/test_config.py holds the two lists to the same set of names and types.
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

    def value(self, spec: KeySpec) -> object:
        """The parsed value of one key of the table."""
        return getattr(self, spec.field)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The restart-only keys whose value differs: a reload keeps their old value until a restart."""
    return [spec.name for spec in KEYS if spec.restart_only and old.value(spec) != new.value(spec)]
