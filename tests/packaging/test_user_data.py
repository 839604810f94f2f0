"""Launch-template user-data examples (packer/user-data/*.mime): MIME structure, the NodeConfig
part, shellcheck on every shell part, and the shell parts run against a temporary root, with the
resulting config checked by `nodeagent check-config` and the agent's own loader."""
from __future__ import annotations

import email
import email.policy
import ipaddress
import os
import shutil
import stat
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from nodeagent import config
from nodeagent.config import EX_CONFIG
from nodeagent_sim.imds import ImdsSim

REPO = Path(__file__).resolve().parents[2]
USER_DATA = REPO / "packer" / "user-data"
SPOT_LABEL = REPO / "packaging" / "spot-label"
EXAMPLES = sorted(USER_DATA.glob("*.mime"))
EXAMPLE_IDS = [path.name for path in EXAMPLES]
CONF_NAME = "50-user-data.conf"
LABEL_FLAG = "--node-labels=lifecycle=Ec2Spot"

EXPECTED_PARTS = {
    "al2023": ["application/node.eks.aws", "text/x-shellscript"],
    "ubuntu": ["text/x-shellscript", "text/x-shellscript"],
}
# What the stand-in for `aws ssm get-parameter` returns: the secret lives in Parameter Store.
SSM_URL = "https://hooks.example.com/services/FROM-SSM-5ecret"
AWS_STUB = """#!/bin/sh
printf '%s\\n' "$*" >>"$AWS_CALLS"
printf 'aws %s\\n' "$*" >>"$CALLS_IN_ORDER"
[ -n "${AWS_FAIL:-}" ] && { echo "An error occurred (ParameterNotFound)" >&2; exit 254; }
printf '%s\\n' "$SSM_URL"
"""
# What each example must configure, as the agent reads it (nodeagent.config.Settings fields).
EXPECTED_SETTINGS: Dict[str, Dict[str, object]] = {
    "al2023-all-toggles.mime": {
        "enabled": True,
        "dry_run": False,
        "on_rebalance": "drain",
        "drain_margin": 30.0,
        "force_at_deadline": "true",
        "webhook_url": SSM_URL,
        "webhook_format": "slack",
        "log_level": "debug",
        "asg_lifecycle_hook": "nodeagent-drain",
        "asg_heartbeat_timeout": 300.0,
        "asg_name": "",
    },
    "al2023-disabled.mime": {"enabled": False},
    "al2023-dry-run.mime": {"dry_run": True, "log_level": "debug"},
    "al2023-rebalance-drain.mime": {
        "on_rebalance": "drain",
        "drain_margin": 30.0,
        "force_at_deadline": "false",
    },
    "ubuntu-all-toggles.mime": {
        "enabled": True,
        "dry_run": False,
        "on_rebalance": "drain",
        "drain_margin": 30.0,
        "force_at_deadline": "true",
        "webhook_url": SSM_URL,
        "log_level": "info",
        "asg_lifecycle_hook": "nodeagent-drain",
        "asg_heartbeat_timeout": 300.0,
    },
}
# The toggles the brief asks the examples to cover.
TOGGLES = {"ENABLED", "DRY_RUN", "ON_REBALANCE", "DRAIN_MARGIN", "FORCE_AT_DEADLINE",
           "WEBHOOK_FORMAT", "LOG_LEVEL", "ASG_LIFECYCLE_HOOK"}


def parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(path: Path) -> List[EmailMessage]:
    return list(parse(path).iter_parts())


def shell_parts(path: Path) -> List[str]:
    return [part.get_content() for part in parts(path)
            if part.get_content_type() == "text/x-shellscript"]


def toggles_part(path: Path) -> str:
    """The shell part that writes nodeagent's conf.d file (exactly one per example)."""
    writers = [text for text in shell_parts(path) if CONF_NAME in text]
    assert len(writers) == 1, f"{path.name}: expected one shell part writing {CONF_NAME}"
    return writers[0]


def os_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


# iptables and ip6tables: log the call; `-C` (is the rule there?) says no, everything else works.
IPTABLES_STUB = """#!/bin/sh
printf '%s %s\\n' "$(basename "$0")" "$*" >>"$CALLS_IN_ORDER"
for arg in "$@"; do [ "$arg" = -C ] && exit 1; done
exit 0
"""


def run_part(text: str, tmp_path: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    """One shell part with `aws`, `iptables` and `ip6tables` replaced by stand-ins (the host's
    firewall is never touched), cloud-init's per-boot directory under tmp_path, and AWS_REGION
    set so that the part never asks IMDS (no test may reach 169.254.169.254)."""
    script = tmp_path / "part.sh"
    script.write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, stub in (("aws", AWS_STUB), ("iptables", IPTABLES_STUB), ("ip6tables", IPTABLES_STUB)):
        (bin_dir / name).write_text(stub)
        (bin_dir / name).chmod(0o755)
    full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "AWS_REGION": "us-east-1",
            "AWS_CALLS": str(tmp_path / "aws-calls"), "SSM_URL": SSM_URL,
            "CALLS_IN_ORDER": str(tmp_path / "calls-in-order"),
            "CLOUD_PER_BOOT_DIR": str(tmp_path / "per-boot"), **env}
    return subprocess.run(["sh", str(script)], env=full, capture_output=True, text=True, timeout=90)


def check_config(config_dir: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NODEAGENT_")}
    env["NODEAGENT_CONFIG_DIR"] = str(config_dir)
    return subprocess.run([sys.executable, "-m", "nodeagent", "check-config"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_there_are_examples_for_both_images() -> None:
    assert {os_of(path) for path in EXAMPLES} == set(EXPECTED_PARTS)
    assert set(EXAMPLE_IDS) == set(EXPECTED_SETTINGS)


@pytest.mark.parametrize("path", EXAMPLES, ids=EXAMPLE_IDS)
def test_mime_structure(path: Path) -> None:
    message = parse(path)
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/mixed"
    assert message.defects == []
    assert [part.get_content_type() for part in message.iter_parts()] == EXPECTED_PARTS[os_of(path)]
    for part in message.iter_parts():
        assert part.defects == []
        if part.get_content_type() == "text/x-shellscript":
            assert part.get_content().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("path", [p for p in EXAMPLES if os_of(p) == "al2023"],
                         ids=[p.name for p in EXAMPLES if os_of(p) == "al2023"])
def test_nodeconfig_part(path: Path) -> None:
    (node_config,) = [part for part in parts(path)
                      if part.get_content_type() == "application/node.eks.aws"]
    doc = yaml.safe_load(node_config.get_content())
    assert doc["apiVersion"] == "node.eks.aws/v1alpha1"
    assert doc["kind"] == "NodeConfig"
    cluster = doc["spec"]["cluster"]
    # A custom AMI gets no merge from EKS: all four must be supplied.
    assert set(cluster) == {"name", "apiServerEndpoint", "certificateAuthority", "cidr"}
    assert cluster["apiServerEndpoint"].startswith("https://")
    ipaddress.ip_network(cluster["cidr"])


@pytest.mark.parametrize("path", EXAMPLES, ids=EXAMPLE_IDS)
def test_shell_parts_are_shellcheck_clean(path: Path, tmp_path: Path) -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    for index, text in enumerate(shell_parts(path)):
        script = tmp_path / f"{path.stem}-part{index}.sh"
        script.write_text(text)
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_examples_cover_the_toggles() -> None:
    complete = toggles_part(USER_DATA / "al2023-all-toggles.mime")
    assert {key for key in TOGGLES if f"\n{key}=" in complete} == TOGGLES


@pytest.mark.parametrize("path", EXAMPLES, ids=EXAMPLE_IDS)
def test_toggles_part_writes_a_config_the_agent_accepts(path: Path, tmp_path: Path) -> None:
    config_dir = tmp_path / "etc" / "nodeagent"

    result = run_part(toggles_part(path), tmp_path, {"NODEAGENT_CONFIG_DIR": str(config_dir)})

    assert result.returncode == 0, result.stderr
    written = config_dir / "conf.d" / CONF_NAME
    assert stat.S_IMODE(written.stat().st_mode) == 0o640, "root and the agent's group only"
    secret = config_dir / "secrets" / "webhook-url"
    if "webhook_url" in EXPECTED_SETTINGS[path.name]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, "the secret: its owner's alone"
        assert "--with-decryption" in (tmp_path / "aws-calls").read_text()
    else:
        assert not secret.exists() and not (tmp_path / "aws-calls").exists()
    checked = check_config(config_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert CONF_NAME in checked.stdout, "check-config names the file each value came from"
    assert "5ecret" not in checked.stdout + checked.stderr, "the webhook URL was shown"
    settings = config.load({"NODEAGENT_CONFIG_DIR": str(config_dir)})
    for field, expected in EXPECTED_SETTINGS[path.name].items():
        assert getattr(settings, field) == expected, field


def test_check_config_rejects_a_bad_toggle(tmp_path: Path) -> None:
    """The control for the test above: the same check fails on a bad value, naming it."""
    config_dir = tmp_path / "etc" / "nodeagent"
    part = toggles_part(USER_DATA / "al2023-rebalance-drain.mime")
    part = part.replace("ON_REBALANCE=drain", "ON_REBALANCE=sometimes")

    assert run_part(part, tmp_path, {"NODEAGENT_CONFIG_DIR": str(config_dir)}).returncode == 0
    checked = check_config(config_dir)

    assert checked.returncode == EX_CONFIG, checked.stdout + checked.stderr
    assert "ON_REBALANCE" in checked.stdout + checked.stderr


# --- Ubuntu: the bootstrap.sh part ---------------------------------------------------------------

BOOTSTRAP_STUB = """#!/bin/sh
# Records its arguments, one per line, like /etc/eks/bootstrap.sh would receive them.
for arg in "$@"; do printf '%s\\n' "$arg"; done >"$ARGS_OUT"
"""


@pytest.mark.parametrize(
    "life_cycle, extra_conf, labelled",
    [("spot", "", True), ("on-demand", "", False), ("spot", "SPOT_LABEL_AT_BOOT=false\n", False)],
)
def test_ubuntu_bootstrap_part_adds_the_spot_label(
    tmp_path: Path, life_cycle: str, extra_conf: str, labelled: bool
) -> None:
    example = USER_DATA / "ubuntu-all-toggles.mime"
    toggles, bootstrap = shell_parts(example)
    config_dir = tmp_path / "etc" / "nodeagent"
    stub = tmp_path / "bootstrap.sh"
    stub.write_text(BOOTSTRAP_STUB)
    stub.chmod(0o755)
    args_out = tmp_path / "bootstrap-args"

    with ImdsSim(life_cycle=life_cycle) as sim:
        env = {"NODEAGENT_CONFIG_DIR": str(config_dir), "NODEAGENT_IMDS_URL": sim.url,
               "EKS_BOOTSTRAP": str(stub), "NODEAGENT_SPOT_LABEL": str(SPOT_LABEL),
               "ARGS_OUT": str(args_out)}
        # cloud-init runs the parts in order; a later conf.d file stands in for more toggles.
        assert run_part(toggles, tmp_path, env).returncode == 0
        (config_dir / "conf.d" / "60-more.conf").write_text(extra_conf)
        result = run_part(bootstrap, tmp_path, env)

    assert result.returncode == 0, result.stderr
    args = args_out.read_text().splitlines()
    assert args[0] == "my-cluster"
    kubelet_args = args[args.index("--kubelet-extra-args") + 1].split()
    assert (LABEL_FLAG in kubelet_args) == labelled
    if not labelled:
        assert kubelet_args == []


@pytest.mark.parametrize("path", EXAMPLES, ids=EXAMPLE_IDS)
def test_no_secret_in_user_data(path: Path) -> None:
    """User-data is readable by any local process through IMDS, and by pods
    where the hop limit allows. No example may carry a webhook URL or header values."""
    text = path.read_text()
    for key in ("WEBHOOK_URL", "WEBHOOK_HEADERS"):
        assert not [line for line in text.splitlines() if line.strip().startswith(key + "=")], key
    assert "hooks.example.com" not in text and "Bearer" not in text
    if "WEBHOOK_URL_FILE" in text:  # where it comes from instead, and the risk, said plainly
        assert "aws ssm get-parameter" in text and "--with-decryption" in text
        assert "readable" in text and "IMDS" in text
        assert "every local user" in text and "--uid-owner nodeagent" in text


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "aws ssm get-parameter" in p.read_text()],
                         ids=lambda p: p.name)
def test_imds_is_closed_to_other_local_users_before_the_secret_is_read(path: Path, tmp_path: Path) -> None:
    """The instance role reads the webhook parameter, and anything that reaches IMDS has the
    instance role: without a node-level restriction every local user could read the secret from
    SSM, whatever the file's mode. The part installs a per-boot guard and runs it before it asks
    SSM: for IPv4 and IPv6 IMDS, root and the nodeagent user pass, everything else is rejected."""
    config_dir = tmp_path / "etc" / "nodeagent"
    result = run_part(toggles_part(path), tmp_path, {"NODEAGENT_CONFIG_DIR": str(config_dir)})
    assert result.returncode == 0, result.stderr
    guard = tmp_path / "per-boot" / "10-nodeagent-imds-guard.sh"
    assert guard.stat().st_mode & 0o111, "cloud-init runs only executable per-boot scripts"
    calls = (tmp_path / "calls-in-order").read_text().splitlines()
    first_aws = next(i for i, call in enumerate(calls) if call.startswith("aws ssm get-parameter"))
    for tool, imds in (("iptables", "169.254.169.254"), ("ip6tables", "fd00:ec2::254")):
        rules = [call.split(" ", 1)[1] for call in calls[:first_aws] if call.startswith(tool + " ")]
        chain = [rule for rule in rules if rule.startswith("-w -A NODEAGENT-IMDS")]
        assert chain == ["-w -A NODEAGENT-IMDS -m owner --uid-owner 0 -j RETURN",
                         "-w -A NODEAGENT-IMDS -m owner --uid-owner nodeagent -j RETURN",
                         "-w -A NODEAGENT-IMDS -j REJECT"], rules
        assert f"-w -I OUTPUT 1 -d {imds} -j NODEAGENT-IMDS" in rules, rules
    assert "could not" not in result.stderr and "not restricted" not in result.stderr, result.stderr


def test_a_missing_parameter_leaves_a_valid_config_without_a_webhook(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc" / "nodeagent"
    part = toggles_part(USER_DATA / "al2023-all-toggles.mime")
    result = run_part(part, tmp_path, {"NODEAGENT_CONFIG_DIR": str(config_dir), "AWS_FAIL": "1"})
    assert result.returncode == 0, result.stderr
    assert "no webhook" in result.stderr
    assert not (config_dir / "secrets" / "webhook-url").exists()
    checked = check_config(config_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert config.load({"NODEAGENT_CONFIG_DIR": str(config_dir)}).webhook_url == ""
