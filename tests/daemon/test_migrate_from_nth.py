"""`nodeagent migrate-from-nth` through the real CLI process: the spot workshop's install
(`--set nodeSelector.lifecycle=Ec2Spot`) and a values file become a drop-in that `nodeagent
check-config` accepts; bad input exits 2 with one line and prints no drop-in."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, daemon_env

FIXTURE = REPO / "tests" / "fixtures" / "nth-chart-values.yaml"
WEBHOOK = "https://hooks.example.test/services/T0SECRET/B0SECRET/xoxb-5ecret"


def nodeagent(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodeagent", *args], env=daemon_env(tmp_path), cwd=str(REPO),
                          input=stdin, capture_output=True, text=True, timeout=60)


def install(tmp_path: Path, dropin: str) -> Path:
    conf_d = tmp_path / "etc" / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    path = conf_d / "50-from-nth.conf"
    path.write_text(dropin, encoding="utf-8")
    return path


def check_config(tmp_path: Path) -> dict:
    result = nodeagent(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()}


def test_the_spot_workshops_install_becomes_a_drop_in_check_config_accepts(tmp_path):
    result = nodeagent(tmp_path, "migrate-from-nth", "--set", "nodeSelector.lifecycle=Ec2Spot")
    assert result.returncode == 0, result.stderr
    assert "--set nodeSelector.lifecycle=Ec2Spot" in result.stdout  # the header names the input
    assert "nodeSelector (yours)" in result.stderr and "AMI" in result.stderr
    install(tmp_path, result.stdout)
    rows = check_config(tmp_path)
    assert "ignore" in rows["ON_REBALANCE"] and "50-from-nth.conf" in rows["ON_REBALANCE"]
    assert "false" in rows["EVENTS"] and "50-from-nth.conf" in rows["EVENTS"]
    assert "120s" in rows["DRAIN_WINDOW"]


def test_values_files_then_set_pairs_later_wins_and_secrets_stay_out(tmp_path):
    first = tmp_path / "base.yaml"
    first.write_text("enableRebalanceMonitoring: true\nnodeTerminationGracePeriod: 90\n"
                     f"webhookURL: {WEBHOOK}\nlogLevel: debug\n", encoding="utf-8")
    second = tmp_path / "prod.yaml"
    second.write_text("nodeTerminationGracePeriod: 240\ncordonOnly: false\n", encoding="utf-8")
    result = nodeagent(tmp_path, "migrate-from-nth", "-f", str(FIXTURE), "-f", str(first), "--values", str(second),
                       "--set", "enableRebalanceDraining=true,dryRun=true", "--set", f"webhookURL={WEBHOOK}")
    assert result.returncode == 0, result.stderr
    assert "SECRET" not in result.stdout + result.stderr and "5ecret" not in result.stdout + result.stderr
    assert "webhookURL=<not shown>" in result.stdout and "#WEBHOOK_URL_FILE=" in result.stdout
    install(tmp_path, result.stdout)
    rows = check_config(tmp_path)
    assert "240s" in rows["DRAIN_WINDOW"]  # the later file wins
    assert "drain" in rows["ON_REBALANCE"]  # --set on top of the files
    assert "true" in rows["DRY_RUN"] and "debug" in rows["LOG_LEVEL"]


def test_values_from_standard_input(tmp_path):
    result = nodeagent(tmp_path, "migrate-from-nth", "-f", "-", stdin="enableSpotInterruptionDraining: false\n")
    assert result.returncode == 0, result.stderr
    assert "ON_SPOT_INTERRUPTION=ignore" in result.stdout.splitlines()


def test_bad_input_exits_2_with_one_line_and_no_drop_in(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a:\n  b: [1, 2\n", encoding="utf-8")
    fifo = tmp_path / "values.fifo"
    os.mkfifo(fifo)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n", encoding="utf-8")
    cases = [
        (["-f", str(tmp_path / "missing.yaml")], "missing.yaml: No such file or directory"),
        (["-f", str(bad_yaml)], "bad.yaml: not valid YAML at line 3"),
        (["-f", str(listing)], "the top level is a list"),
        (["-f", str(tmp_path)], "Is a directory"),
        (["-f", str(fifo)], "not a regular file"),
        (["--set", "nodeSelector.lifecycle"], "has no value"),
        (["--set", "a={x,y"], "'{' without '}'"),
    ]
    for args, problem in cases:
        result = nodeagent(tmp_path, "migrate-from-nth", *args)
        assert result.returncode == 2, (args, result)
        assert result.stdout == "", args
        assert problem in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
