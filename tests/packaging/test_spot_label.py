"""The boot-time spot-label oneshot: packaging/spot-label against the IMDS simulator, and
systemd/nodeagent-spot-label.service ordered against nodeadm, cloud-init and the agent."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
import yaml

from nodeagent import config
from nodeagent_sim.imds import ImdsSim

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packaging" / "spot-label"
ONESHOT_UNIT = REPO / "systemd" / "nodeagent-spot-label.service"
AGENT_UNIT = REPO / "systemd" / "nodeagent.service"
DROPIN_NAME = "50-nodeagent-spot-label.yaml"
LABEL_FLAG = "--node-labels=lifecycle=Ec2Spot"
SHELLS = [name for name in ("dash", "bash") if shutil.which(name)]
TOKEN_PATH = "/latest/api/token"
LIFE_CYCLE_PATH = "/latest/meta-data/instance-life-cycle"


@dataclass(frozen=True)
class Root:
    """A temporary stand-in for / : the config dir and nodeadm's drop-in dir."""

    config_dir: Path
    dropin_dir: Path

    @property
    def dropin(self) -> Path:
        return self.dropin_dir / DROPIN_NAME

    def write_conf(self, relative: str, text: str) -> None:
        path = self.config_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def root(tmp_path: Path) -> Root:
    config_dir = tmp_path / "etc" / "nodeagent"
    (config_dir / "conf.d").mkdir(parents=True)
    return Root(config_dir=config_dir, dropin_dir=tmp_path / "etc" / "eks" / "nodeadm.d")


@pytest.fixture
def sim():
    with ImdsSim(life_cycle="spot") as running:
        yield running


def run_spot_label(
    root: Root,
    imds_url: Optional[str],
    *args: str,
    shell: str = "sh",
    env: Optional[Dict[str, str]] = None,
) -> subprocess.CompletedProcess:
    # A clean environment: nothing NODEAGENT_* leaks in from the developer's shell.
    full_env = {
        "PATH": os.environ["PATH"],
        "NODEAGENT_CONFIG_DIR": str(root.config_dir),
        "NODEADM_DROPIN_DIR": str(root.dropin_dir),
    }
    if imds_url is not None:
        full_env["NODEAGENT_IMDS_URL"] = imds_url
    full_env.update(env or {})
    return subprocess.run(
        [shell, str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=90
    )


def imds_requests(sim: ImdsSim) -> List[tuple]:
    return [(entry[1], entry[2], entry[3]) for entry in sim.request_log]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the script --------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_spot_instance_gets_nodeconfig_dropin(root: Root, sim: ImdsSim, shell: str) -> None:
    result = run_spot_label(root, sim.url, shell=shell)

    assert result.returncode == 0, result.stderr
    assert root.dropin.is_file(), result.stderr
    doc = yaml.safe_load(root.dropin.read_text())
    assert doc == {
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {"kubelet": {"flags": [LABEL_FLAG]}},
    }
    assert stat.S_IMODE(root.dropin.stat().st_mode) == 0o644
    # The rename leaves nothing else behind for nodeadm to read.
    assert [p.name for p in root.dropin_dir.iterdir()] == [DROPIN_NAME]
    # IMDSv2: token first, then the GET (the simulator refuses token-less GETs).
    assert imds_requests(sim) == [("PUT", TOKEN_PATH, 200), ("GET", LIFE_CYCLE_PATH, 200)]
    assert "wrote" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_on_demand_writes_nothing_and_removes_a_stale_dropin(
    root: Root, sim: ImdsSim, shell: str
) -> None:
    root.dropin_dir.mkdir(parents=True)
    root.dropin.write_text("stale\n")
    sim.set_life_cycle("on-demand")

    result = run_spot_label(root, sim.url, shell=shell)

    assert result.returncode == 0, result.stderr
    assert list(root.dropin_dir.iterdir()) == []
    assert "on-demand" in result.stderr


def test_on_demand_without_dropin_dir_creates_nothing(root: Root, sim: ImdsSim) -> None:
    sim.set_life_cycle("on-demand")
    result = run_spot_label(root, sim.url)
    assert result.returncode == 0, result.stderr
    assert not root.dropin_dir.exists()


@pytest.mark.parametrize(
    "where, value",
    [
        ("conf.d/50-user-data.conf", "false"),
        ("conf.d/50-user-data.conf", "off"),
        ("nodeagent.conf", "No"),
        ("nodeagent.conf", "0"),
        ("env", "false"),
    ],
)
def test_spot_label_at_boot_false_writes_nothing(
    root: Root, sim: ImdsSim, where: str, value: str
) -> None:
    env = {}
    if where == "env":
        env["NODEAGENT_SPOT_LABEL_AT_BOOT"] = value
    else:
        root.write_conf(where, f"SPOT_LABEL_AT_BOOT={value}\n")

    result = run_spot_label(root, sim.url, env=env)

    assert result.returncode == 0, result.stderr
    assert not root.dropin.exists()
    assert imds_requests(sim) == [], "IMDS need not be asked when labelling is off"
    assert "SPOT_LABEL_AT_BOOT" in result.stderr


def test_disabled_agent_writes_nothing_and_removes_a_stale_dropin(root: Root, sim: ImdsSim) -> None:
    root.dropin_dir.mkdir(parents=True)
    root.dropin.write_text("stale\n")
    root.write_conf("conf.d/50-user-data.conf", "ENABLED=false\n")

    result = run_spot_label(root, sim.url)

    assert result.returncode == 0, result.stderr
    assert not root.dropin.exists()
    assert imds_requests(sim) == []


# Layouts of nodeagent.conf and conf.d; the script must reach the same SPOT_LABEL_AT_BOOT as
# the agent's own loader (nodeagent.config), which is the reference.
LAYOUTS = {
    "later conf.d file wins": {
        "nodeagent.conf": "SPOT_LABEL_AT_BOOT=true\n",
        "conf.d/10-a.conf": "SPOT_LABEL_AT_BOOT=true\n",
        "conf.d/20-b.conf": "SPOT_LABEL_AT_BOOT=false\n",
    },
    "conf.d beats nodeagent.conf": {
        "nodeagent.conf": "SPOT_LABEL_AT_BOOT=false\n",
        "conf.d/10-a.conf": "SPOT_LABEL_AT_BOOT=yes\n",
    },
    "byte order, not numeric order": {
        "conf.d/9-late.conf": "SPOT_LABEL_AT_BOOT=false\n",
        "conf.d/10-early.conf": "SPOT_LABEL_AT_BOOT=true\n",
    },
    "upper case sorts before lower case": {
        "conf.d/a.conf": "SPOT_LABEL_AT_BOOT=false\n",
        "conf.d/B.conf": "SPOT_LABEL_AT_BOOT=true\n",
    },
    "only *.conf counts": {
        "conf.d/10-a.conf": "SPOT_LABEL_AT_BOOT=true\n",
        "conf.d/99-z.conf.disabled": "SPOT_LABEL_AT_BOOT=false\n",
    },
    "quotes, export, blanks, comments, CRLF": {
        "conf.d/10-a.conf": '# off for now\r\n  export SPOT_LABEL_AT_BOOT = "false"  \r\n\r\n',
    },
    "single quotes and a last line without newline": {
        "conf.d/10-a.conf": "LOG_LEVEL=debug\nSPOT_LABEL_AT_BOOT='off'",
    },
    "comment lines are not settings": {
        "conf.d/10-a.conf": "#SPOT_LABEL_AT_BOOT=false\n",
    },
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_config_layering_matches_the_agent(root: Root, sim: ImdsSim, layout: str) -> None:
    for relative, text in LAYOUTS[layout].items():
        root.write_conf(relative, text)
    expected = config.load({"NODEAGENT_CONFIG_DIR": str(root.config_dir)}).spot_label_at_boot

    result = run_spot_label(root, sim.url)

    assert result.returncode == 0, result.stderr
    assert root.dropin.exists() == expected, result.stderr


# A file that starts with a UTF-8 byte order mark (Windows editors write one): the agent's loader
# skips it, and so must the script (else "\ufeffENABLED" is an unknown key and the node is labelled).
BOM_LAYOUTS = {
    "BOM then ENABLED=false": {"conf.d/50-user-data.conf": "\ufeffENABLED=false\n"},
    "BOM then SPOT_LABEL_AT_BOOT=off, CRLF": {"conf.d/50-user-data.conf": "\ufeffSPOT_LABEL_AT_BOOT=off\r\n"},
    "BOM in nodeagent.conf": {"nodeagent.conf": "\ufeffENABLED=no\n"},
    "BOM, then a comment": {"conf.d/50-user-data.conf": "\ufeff# off\nENABLED=false\n"},
    "a BOM only at the start counts": {"conf.d/50-user-data.conf": "LOG_LEVEL=info\n"},
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("layout", sorted(BOM_LAYOUTS))
def test_byte_order_mark_is_read_as_the_agent_reads_it(root: Root, sim: ImdsSim, layout: str,
                                                       shell: str) -> None:
    for relative, text in BOM_LAYOUTS[layout].items():
        root.write_conf(relative, text)
    settings = config.load({"NODEAGENT_CONFIG_DIR": str(root.config_dir)})
    expected = settings.enabled and settings.spot_label_at_boot

    result = run_spot_label(root, sim.url, shell=shell)

    assert result.returncode == 0, result.stderr
    assert root.dropin.exists() == expected, result.stderr


def test_imds_url_comes_from_the_config_file(root: Root, sim: ImdsSim) -> None:
    root.write_conf("conf.d/50-user-data.conf", f"IMDS_URL={sim.url}/\n")
    result = run_spot_label(root, imds_url=None)
    assert result.returncode == 0, result.stderr
    assert root.dropin.is_file(), result.stderr


def test_config_files_are_read_not_executed(root: Root, sim: ImdsSim, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    root.write_conf(
        "conf.d/50-user-data.conf",
        f"touch {marker}\n"
        f"LOG_LEVEL=$(touch {marker})\n"
        f"SPOT_LABEL_AT_BOOT=`touch {marker}`true\n"
        f"ENABLED=true; touch {marker}\n",
    )

    result = run_spot_label(root, sim.url)

    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "a config line was executed"
    # Unreadable booleans keep their default (true), so the spot label is still written.
    assert root.dropin.is_file(), result.stderr
    assert "not a boolean" in result.stderr


def test_unreachable_imds_never_fails_the_boot(root: Root) -> None:
    result = run_spot_label(root, closed_port_url())
    assert result.returncode == 0
    assert not root.dropin_dir.exists()
    assert "did not answer" in result.stderr


def test_transient_imds_errors_are_retried(root: Root, sim: ImdsSim) -> None:
    sim.inject(2, status=500, path_prefix=TOKEN_PATH, method="PUT")
    sim.inject(1, status=503, path_prefix="instance-life-cycle", method="GET")

    result = run_spot_label(root, sim.url)

    assert result.returncode == 0, result.stderr
    assert root.dropin.is_file(), result.stderr
    statuses = [status for _, _, status in imds_requests(sim)]
    assert statuses.count(500) == 2 and statuses.count(503) == 1


def test_hung_imds_is_given_up_on(root: Root, sim: ImdsSim) -> None:
    # The PUT is never answered: curl's timeouts bound each try, so the script gives up
    # (here the generous subprocess timeout in run_spot_label is the only clock).
    sim.hang_token_put(True)
    result = run_spot_label(root, sim.url)
    assert result.returncode == 0
    assert not root.dropin_dir.exists()
    assert "did not answer" in result.stderr


def test_token_refused_never_fails_the_boot(root: Root, sim: ImdsSim) -> None:
    sim.set_v1_only(True, status=403)
    result = run_spot_label(root, sim.url)
    assert result.returncode == 0
    assert not root.dropin_dir.exists()


@pytest.mark.parametrize(
    "life_cycle, conf, expected",
    [
        ("spot", "", LABEL_FLAG + "\n"),
        ("on-demand", "", ""),
        ("spot", "SPOT_LABEL_AT_BOOT=false\n", ""),
        ("spot", "ENABLED=false\n", ""),
    ],
)
def test_print_flag_for_bootstrap_sh(
    root: Root, sim: ImdsSim, life_cycle: str, conf: str, expected: str
) -> None:
    sim.set_life_cycle(life_cycle)
    root.write_conf("conf.d/50-user-data.conf", conf)

    result = run_spot_label(root, sim.url, "--print-flag")

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert not root.dropin_dir.exists(), "--print-flag only prints"


def test_unknown_argument_is_logged_not_fatal(root: Root, sim: ImdsSim) -> None:
    result = run_spot_label(root, sim.url, "--bogus")
    assert result.returncode == 0
    assert "unknown argument" in result.stderr
    assert not root.dropin_dir.exists()


def test_spot_label_is_shellcheck_clean() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    result = subprocess.run(
        ["shellcheck", "--shell=sh", str(SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(SCRIPT, os.X_OK), "packaging/spot-label must be executable"


# --- the units -----------------------------------------------------------------------------------

# Stand-ins for the units nodeagent is ordered against. nodeadm's two mirror amazon-eks-ami
# templates/al2023/runtime/rootfs/etc/systemd/system; cloud-final's [Unit] differs by variant
# (cloud-init systemd/cloud-final.service.tmpl: ubuntu/debian add After=multi-user.target);
# cloud-init.target is After=multi-user.target and the cloud-init generator links it into
# multi-user.target.wants.
STAND_INS = {
    "nodeadm-config.service": """
        [Unit]
        Before=cloud-init.service
        [Service]
        Type=oneshot
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
    """,
    "nodeadm-run.service": """
        [Unit]
        After=nodeadm-config.service cloud-final.service
        Requires=nodeadm-config.service
        [Service]
        Type=oneshot
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
    """,
    "kubelet.service": """
        [Unit]
        After=containerd.service
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
    """,
    "cloud-init.target": """
        [Unit]
        After=multi-user.target
    """,
}
CLOUD_FINAL_UNIT = """
    [Unit]
    After=network-online.target cloud-config.service rc-local.service
    {ubuntu_only}
    Wants=network-online.target
    [Service]
    Type=oneshot
    RemainAfterExit=yes
    ExecStart=/bin/true
    [Install]
    WantedBy=cloud-init.target
"""
# variant -> (cloud-final.service, stand-ins enabled in multi-user.target). Canonical's Ubuntu
# EKS image has no nodeadm; its kubelet is a snap, so kubelet.service is absent there too.
VARIANTS = {
    "amazon": (
        CLOUD_FINAL_UNIT.format(ubuntu_only=""),
        ("nodeadm-config.service", "nodeadm-run.service", "kubelet.service", "cloud-init.target"),
    ),
    "ubuntu": (
        CLOUD_FINAL_UNIT.format(ubuntu_only="After=multi-user.target"),
        ("cloud-init.target",),
    ),
}


def parse_unit(text: str) -> Dict[str, List[str]]:
    """'Section.Key' -> every whitespace-separated value, repeated keys appended."""
    values: Dict[str, List[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).extend(value.split())
    return values


def runnable_copy(text: str, exec_map: Dict[str, str]) -> str:
    """The unit with Exec*= programs swapped for ones that exist here (verify checks them)."""
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().startswith("Exec"):
            prefix = value[: len(value) - len(value.lstrip("-@:+!"))]
            program, _, rest = value[len(prefix):].partition(" ")
            if program in exec_map:
                program = exec_map[program]
            elif program.startswith("/") and not os.access(program, os.X_OK):
                program = "/bin/true"
            line = f"{key}={prefix}{program}{(' ' + rest) if rest else ''}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def require_systemd_analyze() -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")


def require_agent_unit() -> str:
    """The agent's unit: it is in the tree, so its absence is a failure, never a skip."""
    assert AGENT_UNIT.is_file(), f"{AGENT_UNIT} is missing"
    return AGENT_UNIT.read_text()


def build_unit_dir(tmp_path: Path, variant: str, ours: Dict[str, str]) -> Path:
    """A unit directory as a booted node sees it: stand-ins, our units, and the .wants links
    that `systemctl enable` and the cloud-init generator would make."""
    unit_dir = tmp_path / f"units-{variant}"
    wants = unit_dir / "multi-user.target.wants"
    wants.mkdir(parents=True)
    (unit_dir / "cloud-init.target.wants").mkdir()
    cloud_final, enabled = VARIANTS[variant]
    stand_ins = {name: STAND_INS[name] for name in enabled}
    for name, text in {**stand_ins, "cloud-final.service": cloud_final}.items():
        (unit_dir / name).write_text("\n".join(l.strip() for l in text.strip().splitlines()) + "\n")
    for name, text in ours.items():
        (unit_dir / name).write_text(text)
    for name in (*enabled, *ours):
        (wants / name).symlink_to(unit_dir / name)
    (unit_dir / "cloud-init.target.wants" / "cloud-final.service").symlink_to(
        unit_dir / "cloud-final.service")
    shutil.copy("/lib/systemd/system/multi-user.target", unit_dir / "multi-user.target")
    return unit_dir


def verify(unit_dir: Path, names: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=false", *[str(unit_dir / n) for n in names]],
        capture_output=True, text=True, timeout=60,
    )


def test_oneshot_unit_is_verify_clean(tmp_path: Path) -> None:
    require_systemd_analyze()
    unit = tmp_path / ONESHOT_UNIT.name
    unit.write_text(runnable_copy(ONESHOT_UNIT.read_text(),
                                  {"/usr/lib/nodeagent/spot-label": str(SCRIPT)}))
    result = verify(tmp_path, [unit.name])
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "systemd-analyze verify complained"


def test_oneshot_unit_declares_the_intended_order() -> None:
    unit = parse_unit(ONESHOT_UNIT.read_text())
    assert unit["Service.Type"] == ["oneshot"]
    assert unit["Service.RemainAfterExit"] == ["yes"]
    assert unit["Service.ExecStart"] == ["/usr/lib/nodeagent/spot-label"]
    assert "cloud-final.service" in unit["Unit.After"]
    assert "nodeadm-run.service" in unit["Unit.Before"]
    # nodeadm-run.service is WantedBy=multi-user.target in amazon-eks-ami.
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    assert unit["Unit.ConditionFileIsExecutable"] == ["/usr/bin/nodeadm"]


def test_agent_unit_declares_the_intended_order() -> None:
    unit = parse_unit(require_agent_unit())
    assert {"cloud-final.service", "kubelet.service"} <= set(unit["Unit.After"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_boot_transaction_has_no_ordering_cycle(tmp_path: Path, variant: str) -> None:
    """Both units enabled next to nodeadm, cloud-init and the kubelet: systemd-analyze verify
    builds the multi-user.target transaction and reports any ordering cycle on stderr."""
    require_systemd_analyze()
    ours = {ONESHOT_UNIT.name: runnable_copy(ONESHOT_UNIT.read_text(),
                                             {"/usr/lib/nodeagent/spot-label": str(SCRIPT)})}
    ours[AGENT_UNIT.name] = runnable_copy(require_agent_unit(), {})
    unit_dir = build_unit_dir(tmp_path, variant, ours)

    result = verify(unit_dir, ["multi-user.target", "cloud-final.service", *ours])

    assert "cycle" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cycle_check_catches_a_unit_with_default_dependencies(tmp_path: Path, variant: str) -> None:
    """The control for the test above: the same oneshot without DefaultDependencies=no is in
    a cycle on Ubuntu and fine on Amazon Linux."""
    require_systemd_analyze()
    text = runnable_copy(ONESHOT_UNIT.read_text(), {"/usr/lib/nodeagent/spot-label": str(SCRIPT)})
    text = text.replace("DefaultDependencies=no\n", "")
    unit_dir = build_unit_dir(tmp_path, variant, {ONESHOT_UNIT.name: text})

    result = verify(unit_dir, ["multi-user.target", "cloud-final.service", ONESHOT_UNIT.name])

    assert ("ordering cycle" in result.stderr) == (variant == "ubuntu"), result.stderr
