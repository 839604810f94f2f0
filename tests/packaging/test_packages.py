"""The deb and rpm: built with packaging/build, inspected with dpkg-deb/rpm, installed for real.

The deb is installed on this machine with dpkg (a throwaway sandbox, as root) and purged again;
the rpm goes into a scratch root (rpm --root). Both payloads then run the real agent against the
IMDS and Kubernetes simulators.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.packaging_helpers import (
    NATIVE_SUFFIXES, PACKAGING, PY39, SYSTEM_PYTHON, Packages, build_packages, repo_version,
    require_tool, run, simulators_missing, spot_notice_drains_node, unit_like_sandbox,
)
from tests.helpers import wait_for
from tests.sim_blocker import IMPORT_ALL

UNIT_PATH = "/usr/lib/systemd/system/nodeagent.service"
ONESHOT_PATH = "/usr/lib/systemd/system/nodeagent-spot-label.service"
WANTS_LINK = "etc/systemd/system/multi-user.target.wants/nodeagent.service"
ONESHOT_WANTS_LINK = "etc/systemd/system/multi-user.target.wants/nodeagent-spot-label.service"
SYSUSERS_PATH = "/usr/lib/sysusers.d/nodeagent.conf"
SCRIPTS = ["postinstall.sh", "preremove.sh", "postremove.sh", "posttrans.sh"]


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> Packages:
    require_tool("dpkg-deb")
    require_tool("rpm")
    return build_packages(tmp_path_factory.mktemp("dist"))


def deb_listing(deb: Path) -> Dict[str, List[str]]:
    """path -> the `dpkg-deb -c` columns (mode, owner, size, date, time)."""
    entries = {}
    for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        mode, owner, size, date, clock, path = line.split(None, 5)
        entries[path.split(" -> ")[0].lstrip(".").rstrip("/") or "/"] = [mode, owner, size, date, clock]
    return entries


# --- what the packages contain -------------------------------------------------------------------

def test_deb_metadata(packages, tmp_path):
    info = run(["dpkg-deb", "-I", packages.deb]).stdout
    fields = dict(line.strip().split(": ", 1) for line in info.splitlines()
                  if ": " in line and not line.startswith("  "))
    assert fields["Package"] == "nodeagent"
    assert fields["Version"] == repo_version()
    assert fields["Architecture"] == "all"
    assert fields["Depends"] == "python3 (>= 3.9)"
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", packages.deb, control])
    assert (control / "conffiles").read_text().split() == ["/etc/nodeagent/nodeagent.conf"]
    for script, source in (("postinst", "postinstall.sh"), ("prerm", "preremove.sh"),
                           ("postrm", "postremove.sh")):
        assert os.access(control / script, os.X_OK), script
        assert (control / script).read_text() == (PACKAGING / source).read_text(), script


def test_deb_payload(packages):
    entries = deb_listing(packages.deb)
    assert entries[UNIT_PATH][0] == "-rw-r--r--"
    assert entries["/usr/bin/nodeagent"][0] == "-rwxr-xr-x"
    assert entries["/usr/lib/nodeagent/upgrade-restart"][0] == "-rwxr-xr-x"
    assert entries["/usr/lib/nodeagent/spot-label"][0] == "-rwxr-xr-x"
    assert entries[ONESHOT_PATH][0] == "-rw-r--r--"
    assert entries["/etc/nodeagent/nodeagent.conf"][0] == "-rw-r--r--"
    assert entries["/etc/nodeagent/conf.d"][0] == "drwxr-x---"
    assert "/usr/lib/systemd/system-preset/80-nodeagent.preset" in entries
    assert entries[SYSUSERS_PATH][0] == "-rw-r--r--"
    site = "/usr/lib/nodeagent/site/"
    for module in ("nodeagent/__init__.py", "nodeagent/cli.py", "nodeagent/drill_imds.py",
                   "kubernetes/__init__.py", "yaml/__init__.py", "sdnotify/__init__.py",
                   "charset_normalizer/__init__.py", "certifi/cacert.pem",
                   "requests_aws4auth/__init__.py", "nodeagent/aws/autoscaling.py"):
        assert site + module in entries, module
    assert not [p for p in entries if p.endswith(NATIVE_SUFFIXES) or ".so." in p]
    assert not [p for p in entries if "nodeagent_sim" in p or "/sim/" in p or p.endswith("/demo.py")]
    assert not [p for p in entries if "__pycache__" in p or p.endswith((".pyc", ".pyo"))]
    assert {columns[1] for columns in entries.values()} == {"root/root"}
    # One timestamp for everything: SOURCE_DATE_EPOCH.
    assert len({(columns[3], columns[4]) for columns in entries.values()}) == 1


MAN_PAGE = "/usr/share/man/man8/nodeagent.8.gz"


def test_man_page_is_in_both_packages_and_renders_cleanly(packages, tmp_path):
    """nodeagent(8), generated at build time, ships in the deb and the rpm (the unit's
    Documentation= names it) and renders with no groff warning."""
    assert deb_listing(packages.deb)[MAN_PAGE][0] == "-rw-r--r--"
    assert MAN_PAGE in rpm_query(packages.rpm, "-l").split()
    run(["dpkg-deb", "-x", packages.deb, tmp_path])
    roff = gzip.decompress((tmp_path / MAN_PAGE.lstrip("/")).read_bytes()).decode("utf-8")
    assert roff.startswith(".TH NODEAGENT 8 ") and "DRAIN_MARGIN" in roff
    unit = (tmp_path / UNIT_PATH.lstrip("/")).read_text()
    assert "Documentation=man:nodeagent(8)" in unit
    require_tool("groff")
    page = tmp_path / "nodeagent.8"
    page.write_text(roff)
    result = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def rpm_query(rpm: Path, *args: str) -> str:
    return run(["rpm", "-qp", *args, rpm]).stdout


def test_rpm_metadata(packages):
    assert packages.rpm.name == f"nodeagent-{repo_version()}-1.noarch.rpm"
    assert rpm_query(packages.rpm, "--queryformat", "%{NAME} %{VERSION} %{ARCH}") == \
        f"nodeagent {repo_version()} noarch"
    assert "python3 >= 3.9" in rpm_query(packages.rpm, "-R").splitlines()
    flags = dict(line.split(None, 1)[::-1] for line in rpm_query(
        packages.rpm, "--queryformat", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]").splitlines()
        if len(line.split(None, 1)) == 2)
    assert flags["/etc/nodeagent/nodeagent.conf"] == "cn"  # %config(noreplace)
    scripts = rpm_query(packages.rpm, "--scripts")
    for stage in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet",
                  "posttrans scriptlet"):
        assert stage in scripts, stage


def test_rpm_payload(packages):
    modes = {}
    for line in rpm_query(packages.rpm, "--queryformat", "[%{FILEMODES:perms} %{FILENAMES}\n]").splitlines():
        mode, path = line.split(" ", 1)
        modes[path] = mode
    assert set(rpm_query(packages.rpm, "-l").split()) == set(modes)
    assert modes[UNIT_PATH] == "-rw-r--r--"
    assert modes["/usr/bin/nodeagent"] == "-rwxr-xr-x"
    assert modes["/usr/lib/nodeagent/spot-label"] == "-rwxr-xr-x"
    assert modes[ONESHOT_PATH] == "-rw-r--r--"
    assert modes[SYSUSERS_PATH] == "-rw-r--r--"
    assert modes["/etc/nodeagent/conf.d"] == "drwxr-x---"
    # Owned directories are removed on erase: the package must own its own ones.
    for directory in ("/usr/lib/nodeagent", "/usr/lib/nodeagent/site", "/etc/nodeagent"):
        assert modes[directory].startswith("d"), directory
    assert "/usr/lib/nodeagent/site/nodeagent/drill_imds.py" in modes
    assert not [p for p in modes if "nodeagent_sim" in p or "/sim/" in p or p.endswith("/demo.py")]
    assert not [p for p in modes if p.endswith(NATIVE_SUFFIXES) or ".so." in p or "__pycache__" in p]


def test_rpm_scriptlets_are_the_packaging_scripts(packages):
    """nfpm embeds the same files in both formats; the rpm tests below rely on that."""
    tags = {"POSTIN": "postinstall.sh", "PREUN": "preremove.sh", "POSTUN": "postremove.sh",
            "POSTTRANS": "posttrans.sh"}
    for tag, script in tags.items():
        embedded = rpm_query(packages.rpm, "--queryformat", f"%{{{tag}}}")
        assert embedded.strip() == (PACKAGING / script).read_text().strip(), tag


def deb_md5sums(deb: Path, scratch: Path) -> Dict[str, str]:
    run(["dpkg-deb", "-e", deb, scratch])
    return {path: digest for digest, path in
            (line.split(None, 1) for line in (scratch / "md5sums").read_text().splitlines())}


def test_build_is_reproducible(tmp_path):
    """Two builds (other directories, another umask) give the same bytes. Back to back with one
    SOURCE_DATE_EPOCH, so that a commit or an edit in the work tree between them cannot count."""
    epoch = str(int(time.time()) - 86400)
    first = build_packages(tmp_path / "first", SOURCE_DATE_EPOCH=epoch)
    old_umask = os.umask(0o002)
    try:
        second = build_packages(tmp_path / "second", SOURCE_DATE_EPOCH=epoch)
    finally:
        os.umask(old_umask)
    if first.deb.read_bytes() != second.deb.read_bytes():
        a, b = deb_md5sums(first.deb, tmp_path / "a"), deb_md5sums(second.deb, tmp_path / "b")
        changed = sorted(path for path in set(a) | set(b) if a.get(path) != b.get(path))
        pytest.fail(f"the debs differ; files whose content differs: {changed[:20]}")
    assert first.rpm.read_bytes() == second.rpm.read_bytes()


def test_scripts_are_shellcheck_clean():
    require_tool("shellcheck")
    scripts = [PACKAGING / name for name in SCRIPTS] + [PACKAGING / "build"]
    result = run(["shellcheck", "-s", "sh", *scripts], check=False)
    assert result.returncode == 0, result.stdout


def test_default_config_lists_every_key_commented_out():
    from nodeagent.config import KEYS

    lines = (PACKAGING / "nodeagent.conf").read_text().splitlines()
    for spec in KEYS:
        assert f"#{spec.name}={spec.default}" in lines, f"{spec.name} missing from nodeagent.conf"
    active = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert active == [], "the default config must only document the defaults"


# --- the deb, installed on this machine ----------------------------------------------------------

def dpkg_status(name: str = "nodeagent") -> str:
    result = run(["dpkg-query", "-W", "-f", "${Status} ${Version}", name], check=False)
    return result.stdout if result.returncode == 0 else ""


def purge_deb() -> None:
    run(["dpkg", "--purge", "nodeagent"], check=False)


@contextlib.contextmanager
def host_package_lock(timeout_s: float = 600):
    """One test run at a time may own the host's nodeagent package (two suites running at once on
    one machine would install and purge it under each other)."""
    with open("/run/lock/nodeagent-package-tests.lock" if os.path.isdir("/run/lock")
              else "/tmp/nodeagent-package-tests.lock", "w") as handle:
        def taken() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        wait_for(taken, timeout_s, interval_s=0.5, message="another test run kept the host package lock")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def installed_deb(packages):
    if os.geteuid() != 0 or not shutil.which("dpkg"):
        pytest.skip("installing the deb for real needs root and dpkg")
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 on this machine")
    with host_package_lock():
        purge_deb()
        run(["dpkg", "-i", packages.deb], stdin=subprocess.DEVNULL)
        yield packages
        purge_deb()


def test_deb_install_enables_the_unit_offline(installed_deb):
    """systemd is not PID 1 here: postinst enabled the unit per presets without a running systemd."""
    assert dpkg_status().startswith("install ok installed")
    for relative in (WANTS_LINK, ONESHOT_WANTS_LINK):
        link = Path("/") / relative
        assert link.is_symlink(), relative
        assert os.readlink(link).endswith("/systemd/system/" + link.name)
    # postinst byte-compiled the tree for this host's python3.
    assert list(Path("/usr/lib/nodeagent/site/nodeagent").glob("__pycache__/*.pyc"))


def test_deb_install_creates_the_service_user(installed_deb):
    """User=nodeagent: postinst ran systemd-sysusers (or useradd) with the shipped file, and the
    agent's group may read conf.d (root's to write, nobody else's to read)."""
    import grp
    import pwd

    user = pwd.getpwnam("nodeagent")
    assert 0 < user.pw_uid < 1000 and user.pw_dir == "/var/lib/nodeagent"
    assert user.pw_shell.endswith("nologin")
    conf_d = os.stat("/etc/nodeagent/conf.d")
    assert conf_d.st_uid == 0 and grp.getgrgid(conf_d.st_gid).gr_name == "nodeagent"
    assert conf_d.st_mode & 0o777 == 0o750


def test_installed_launcher_version_and_check_config(installed_deb, tmp_path):
    assert run(["/usr/bin/nodeagent", "version"]).stdout.strip() == repo_version()
    checked = run(["/usr/bin/nodeagent", "check-config"])  # the shipped, all-commented config
    assert "POLL_INTERVAL" in checked.stdout
    bad = tmp_path / "etc"
    (bad / "conf.d").mkdir(parents=True)
    (bad / "conf.d" / "50-test.conf").write_text("POLL_INTERVALL=2s\n")
    result = run(["/usr/bin/nodeagent", "check-config"], check=False,
                 env=dict(os.environ, NODEAGENT_CONFIG_DIR=str(bad)))
    assert result.returncode == 78
    assert "POLL_INTERVALL" in result.stdout + result.stderr


def test_installed_launcher_sees_only_the_vendored_tree(installed_deb):
    """-I -S: nothing comes from the host's or the test environment's site-packages."""
    result = run([SYSTEM_PYTHON, "-I", "-S", "-v", "/usr/bin/nodeagent", "version"])
    loaded = [line for line in result.stderr.splitlines() if line.startswith("# code object from")
              or " matches " in line]
    assert any("/usr/lib/nodeagent/site/nodeagent/" in line for line in loaded)
    assert not [line for line in loaded if "site-packages" in line or "dist-packages" in line]


def test_installed_deb_drains_on_a_spot_notice(installed_deb, tmp_path):
    missing = simulators_missing()
    if missing:
        pytest.skip(missing)
    spot_notice_drains_node(["/usr/bin/nodeagent"], tmp_path)


def test_deb_upgrade_remove_reinstall_purge(installed_deb, tmp_path):
    conf = Path("/etc/nodeagent/nodeagent.conf")
    conf.write_text(conf.read_text() + "# local edit\n")
    drop_in = Path("/etc/nodeagent/conf.d/50-local.conf")
    drop_in.write_text("DRY_RUN=true\n")
    drop_in.chmod(0o600)  # written when the agent ran as root: only root could read it
    link = Path("/") / WANTS_LINK
    # The admin disables the unit: an upgrade must keep that choice.
    run(["systemctl", "--root=/", "disable", "nodeagent.service"])
    assert not link.exists()

    upgrade = build_packages(tmp_path, release="2")
    run(["dpkg", "-i", upgrade.deb], stdin=subprocess.DEVNULL)
    assert dpkg_status() == f"install ok installed {repo_version()}-2"
    assert conf.read_text().endswith("# local edit\n")
    assert drop_in.read_text() == "DRY_RUN=true\n"
    # ... and now the agent (group nodeagent) may read it; still nobody else.
    assert oct(drop_in.stat().st_mode & 0o777) == oct(0o640)
    import grp
    assert grp.getgrgid(drop_in.stat().st_gid).gr_name == "nodeagent"
    assert not link.exists(), "an upgrade re-enabled a unit the admin had disabled"
    run(["systemctl", "--root=/", "enable", "nodeagent.service"])

    run(["dpkg", "-r", "nodeagent"], stdin=subprocess.DEVNULL)
    assert dpkg_status().startswith("deinstall ok config-files")
    assert conf.read_text().endswith("# local edit\n"), "remove must keep the config"
    assert drop_in.exists()
    for gone in ("/usr/lib/nodeagent", "/usr/bin/nodeagent", UNIT_PATH, ONESHOT_PATH,
                 "/usr/lib/systemd/system-preset/80-nodeagent.preset"):
        assert not os.path.lexists(gone), gone
    assert not link.is_symlink(), "remove must disable the unit"
    assert not (Path("/") / ONESHOT_WANTS_LINK).is_symlink()

    # Reinstalling after a remove applies the presets again.
    run(["dpkg", "-i", upgrade.deb], stdin=subprocess.DEVNULL)
    assert link.is_symlink()
    state = Path("/var/lib/nodeagent")
    state.mkdir(exist_ok=True)
    (state / "state.json").write_text('{"busy": false}')

    drop_in.unlink()
    run(["dpkg", "-P", "nodeagent"], stdin=subprocess.DEVNULL)
    assert dpkg_status() == ""
    for gone in ("/etc/nodeagent", "/var/lib/nodeagent", "/var/cache/nodeagent",
                 "/var/lib/misc/nodeagent.package-removed",
                 "/usr/lib/nodeagent", "/usr/bin/nodeagent", UNIT_PATH, str(link),
                 "/" + ONESHOT_WANTS_LINK):
        assert not os.path.lexists(gone), gone


# --- the rpm, installed into a scratch root ---------------------------------------------------------

def rpm_install(rpm: Path, root: Path) -> None:
    # --noscripts: the scratch root has no /bin/sh; the scriptlets are run explicitly below.
    run(["rpm", "--root", root, "--initdb"])
    run(["rpm", "-ivh", "--root", root, "--nodeps", "--noscripts", rpm])


@pytest.fixture(scope="module")
def rpm_root(packages, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rpmroot")
    rpm_install(packages.rpm, root)
    return root


def payload(root: Path, python: Path = PY39) -> List[str]:
    if not python.exists():
        pytest.skip(f"{python} is not installed")
    return [str(python), "-I", "-S", str(root / "usr/bin/nodeagent")]


def test_rpm_payload_runs_on_python39(rpm_root):
    env = dict(os.environ, NODEAGENT_CONFIG_DIR=str(rpm_root / "etc/nodeagent"))
    assert run(payload(rpm_root) + ["version"], env=env).stdout.strip() == repo_version()
    checked = run(payload(rpm_root) + ["check-config"], env=env)
    assert "ENABLED" in checked.stdout


@pytest.mark.parametrize("version", ["3.10.13", "3.12.1", "3.13.0"])
def test_rpm_payload_runs_on_other_pythons(rpm_root, version):
    python = Path(f"/root/.pyenv/versions/{version}/bin/python3")
    assert run(payload(rpm_root, python) + ["version"]).stdout.strip() == repo_version()


def test_payload_imports_every_module_without_the_simulators(rpm_root):
    """The shipped tree alone (-I -S: no site-packages, so no editable nodeagent_sim either)."""
    site = rpm_root / "usr/lib/nodeagent/site"
    assert not [p for p in site.rglob("*") if "nodeagent_sim" in p.name or p.name == "demo.py"
                or (p.is_dir() and p.name == "sim")]
    python = PY39 if PY39.exists() else Path(SYSTEM_PYTHON)
    code = f"import sys; sys.path.insert(0, {str(site)!r})\n" + IMPORT_ALL
    report = json.loads(run([str(python), "-I", "-S", "-c", code]).stdout)
    assert report["file"] == str(site / "nodeagent/__init__.py")
    assert "nodeagent.drill_imds" in report["modules"] and "nodeagent.drill" in report["modules"]
    # the lifecycle hook's AWS side, with the vendored requests-aws4auth
    assert "nodeagent.aws.autoscaling" in report["modules"] and "nodeagent.lifecycle_hook" in report["modules"]
    assert report["failed"] == {}, "\n".join(report["failed"].values())
    assert report["sim_loaded"] == []


@pytest.mark.parametrize("command", [["demo"], ["imds-sim", "--port", "0"]])
def test_payload_demo_says_it_runs_from_a_source_checkout(rpm_root, command):
    result = run(payload(rpm_root) + command, check=False)
    assert result.returncode == 1, result
    assert "source checkout" in result.stderr and "pip install -e ." in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_payload_drill_dry_run_against_a_kubernetes_api(rpm_root, tmp_path):
    """`nodeagent drill --dry-run` from the shipped tree alone: its own IMDS responder, no simulator."""
    missing = simulators_missing()
    if missing:
        pytest.skip(missing)
    from tests.cluster import Cluster

    with Cluster(tmp_path, replace_evicted=True) as cluster:
        cluster.add_workload(count=4)
        before = cluster.node()
        env = cluster.env()  # IMDS_URL: the loopback simulator, never 169.254.169.254
        result = run(payload(rpm_root) + ["drill", "--dry-run", "--in", "30s"], env=env, check=False, timeout=120)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "drill PASSED" in out and "drill IMDS http://127.0.0.1:" in out, out
        assert "Traceback" not in out
        assert cluster.node()["spec"] == before["spec"]  # dryRun=All: nothing changed
        assert sorted(cluster.evictable_left()) == sorted(cluster.workload)
        evictions = [r for r in list(cluster.kube.requests) if r.subresource == "eviction"]
        assert len(evictions) == len(cluster.workload), out  # sent, all with dryRun=All


def test_launcher_refuses_python38(rpm_root):
    result = run(payload(rpm_root, Path("/root/.pyenv/versions/3.8.18/bin/python3")) + ["version"],
                 check=False)
    assert result.returncode == 1 and "needs Python >= 3.9" in result.stderr


def test_rpm_payload_drains_on_a_spot_notice(rpm_root, tmp_path):
    missing = simulators_missing()
    if missing:
        pytest.skip(missing)
    spot_notice_drains_node(payload(rpm_root), tmp_path)


def test_rpm_payload_drains_inside_a_unit_like_sandbox(rpm_root, tmp_path):
    """Read-only system, /proc reduced to process directories, no capabilities, no_new_privs:
    the hardening in the unit must not break the agent."""
    missing = simulators_missing()
    if missing:
        pytest.skip(missing)
    spot_notice_drains_node(unit_like_sandbox(tmp_path) + payload(rpm_root), tmp_path)


def test_systemctl_root_enable(rpm_root):
    require_tool("systemctl")
    link = rpm_root / WANTS_LINK
    run(["systemctl", f"--root={rpm_root}", "enable", "nodeagent.service"])
    assert os.readlink(link) == UNIT_PATH
    run(["systemctl", f"--root={rpm_root}", "disable", "nodeagent.service"])
    assert not link.is_symlink()


def scriptlet(packages: Packages, tag: str, root: Path, *args: str) -> None:
    """Run one scriptlet as embedded in the rpm, with rpm's arguments, against the scratch root
    (DPKG_ROOT is the scripts' alternate-root switch)."""
    text = rpm_query(packages.rpm, "--queryformat", f"%{{{tag}}}")
    env = dict(os.environ, DPKG_ROOT=str(root))
    result = run(["sh", "-c", text, tag, *args], env=env)
    assert result.stderr == "", result.stderr


def test_rpm_scriptlet_arguments(packages, tmp_path):
    require_tool("systemctl")
    root = tmp_path / "root"
    rpm_install(packages.rpm, root)
    link = root / WANTS_LINK
    marker = root / "var/lib/misc/nodeagent.package-removed"

    scriptlet(packages, "POSTIN", root, "1")  # install: enabled per the shipped preset
    assert link.is_symlink() and (root / ONESHOT_WANTS_LINK).is_symlink()
    if shutil.which("systemd-sysusers"):  # the user, in the alternate root's own passwd
        assert "nodeagent:" in (root / "etc/passwd").read_text()
    run(["systemctl", f"--root={root}", "disable", "nodeagent.service"])
    scriptlet(packages, "POSTIN", root, "2")  # upgrade: the new version's %post ...
    scriptlet(packages, "PREUN", root, "1")  # ... then the old version's %preun and %postun
    scriptlet(packages, "POSTUN", root, "1")
    scriptlet(packages, "POSTTRANS", root)
    assert not link.exists(), "an upgrade re-enabled a unit the admin had disabled"
    assert not marker.exists()

    run(["systemctl", f"--root={root}", "enable", "nodeagent.service"])
    scriptlet(packages, "PREUN", root, "0")  # erase
    scriptlet(packages, "POSTUN", root, "0")
    assert not link.is_symlink() and marker.exists()
    assert not (root / ONESHOT_WANTS_LINK).is_symlink()

    preset = root / "etc/systemd/system-preset/50-local.preset"
    preset.parent.mkdir(parents=True)
    preset.write_text("disable nodeagent.service\n")
    scriptlet(packages, "POSTIN", root, "1")  # an admin's preset wins over ours
    assert not link.is_symlink() and not marker.exists()
    assert (root / ONESHOT_WANTS_LINK).is_symlink(), "only the unit the admin named is disabled"


def test_rpm_erase_leaves_nothing(packages, tmp_path):
    root = tmp_path / "root"
    rpm_install(packages.rpm, root)
    run(["rpm", "-e", "--root", root, "--noscripts", "nodeagent"])
    rpm_database = (".rpmdb", "rpm")  # root/.rpmdb (Debian's rpm) or var/lib/rpm
    left = [p for p in root.rglob("*") if p.is_file()
            and not set(p.relative_to(root).parts) & set(rpm_database)]
    assert left == []
    assert not (root / "usr/lib/nodeagent").exists() and not (root / "etc/nodeagent").exists()


# --- restarting after an upgrade, never during a drain ------------------------------------------------

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
if [ "$1" = is-active ]; then [ -e "{active}" ]; exit $?; fi
if [ "$1" = show ]; then cat "{unit_env}" 2>/dev/null; exit 0; fi
# Like systemctl: a restart without --no-block waits for the new process's READY=1, which never
# comes while IMDS is unreachable (the unit's TimeoutStartSec=infinity).
if [ "$1" = try-restart ] && [ -e "{imds_down}" ]; then sleep 3600; fi
exit 0
"""


@pytest.fixture
def stub_systemd(tmp_path):
    """Stand-ins for systemctl and systemd-run that log their arguments; `active` toggles the unit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, active = tmp_path / "calls.log", tmp_path / "active"
    unit_env, imds_down = tmp_path / "unit-environment", tmp_path / "imds-down"
    log.write_text("")
    for name in ("systemctl", "systemd-run"):
        (bin_dir / name).write_text(STUB.format(log=log, active=active, unit_env=unit_env,
                                                imds_down=imds_down))
        (bin_dir / name).chmod(0o755)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d" / "50-state.conf").write_text(f"STATE_DIR={state_dir}\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "NODEAGENT_CONFIG_DIR": str(etc),
           "NODEAGENT_RESTART_POLL": "0.05"}

    class Stub:
        def __init__(self):
            self.env, self.active, self.state = env, active, state_dir / "state.json"
            self.unit_env, self.imds_down, self.root = unit_env, imds_down, tmp_path

        def calls(self) -> List[str]:
            return log.read_text().splitlines()

        def helper(self, *args: str, wait: bool = True, **extra: str):
            command = [str(PACKAGING / "upgrade-restart"), *args]
            process = subprocess.Popen(command, env=dict(self.env, **extra), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            if wait:
                process.wait(timeout=30)
            return process

    if not SYSTEM_PYTHON.exists():
        pytest.skip("the helper runs on /usr/bin/python3")
    return Stub()


RESTART = "systemctl --no-block try-restart nodeagent.service"


def test_upgrade_restart_leaves_a_stopped_unit_alone(stub_systemd):
    assert stub_systemd.helper().returncode == 0
    assert stub_systemd.calls() == ["systemctl show -p Environment --value nodeagent.service",
                                    "systemctl is-active --quiet nodeagent.service"]


def test_upgrade_restart_restarts_an_idle_agent(stub_systemd):
    stub_systemd.active.touch()
    stub_systemd.state.write_text(json.dumps({"busy": False, "notices": {}}))
    assert stub_systemd.helper().returncode == 0
    assert stub_systemd.calls()[-1] == RESTART


@pytest.mark.parametrize("state", ['{"busy": true}', '{"busy": tr'], ids=["draining", "unreadable"])
def test_upgrade_restart_defers_while_draining(stub_systemd, state):
    stub_systemd.active.touch()
    stub_systemd.state.write_text(state)
    assert stub_systemd.helper().returncode == 0
    calls = stub_systemd.calls()
    assert not [c for c in calls if "try-restart" in c or c.startswith("systemctl restart")]
    deferred = [c for c in calls if c.startswith("systemd-run ")]
    assert len(deferred) == 1
    assert "--unit=nodeagent-upgrade-restart" in deferred[0]
    assert deferred[0].endswith("upgrade-restart --wait")


def test_upgrade_restart_waits_for_the_drain_to_end(stub_systemd):
    stub_systemd.active.touch()
    stub_systemd.state.write_text('{"busy": true}')
    waiter = stub_systemd.helper("--wait", wait=False)

    def looks() -> int:
        return len([c for c in stub_systemd.calls() if "is-active" in c])

    wait_for(lambda: looks() >= 5, 30)  # the helper has looked at the unit and the state file 5 times
    assert waiter.poll() is None, "gave up or restarted while still busy"
    assert not [c for c in stub_systemd.calls() if "try-restart" in c]
    stub_systemd.state.write_text('{"busy": false}')
    assert waiter.wait(timeout=30) == 0
    assert stub_systemd.calls()[-1] == RESTART


def test_upgrade_restart_restarts_after_the_bound_when_busy_never_ends(stub_systemd):
    """The state file is the service user's: an agent that keeps "busy": true forever must not
    keep the old code running. After NODEAGENT_RESTART_MAX_WAIT the waiter restarts anyway."""
    stub_systemd.active.touch()
    stub_systemd.state.write_text('{"busy": true}')
    waiter = stub_systemd.helper("--wait", NODEAGENT_RESTART_MAX_WAIT="0.3")
    assert waiter.returncode == 0
    assert stub_systemd.calls()[-1] == RESTART
    assert "still busy after 0.3s: restarting anyway" in waiter.stdout.read()


def test_upgrade_restart_passes_its_bound_to_the_waiter(stub_systemd):
    """systemd-run does not hand the package manager's environment to the transient unit."""
    stub_systemd.active.touch()
    stub_systemd.state.write_text('{"busy": true}')
    assert stub_systemd.helper(NODEAGENT_RESTART_MAX_WAIT="7").returncode == 0
    deferred = [c for c in stub_systemd.calls() if c.startswith("systemd-run ")]
    assert len(deferred) == 1 and "--setenv=NODEAGENT_RESTART_MAX_WAIT=7" in deferred[0].split(), deferred
    assert "--setenv=NODEAGENT_RESTART_POLL=0.05" in deferred[0].split(), deferred


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink_to_a_busy_file(path: Path) -> None:
    target = path.parent / "elsewhere.json"
    target.write_text('{"busy": false}')  # followed, it would say idle
    path.symlink_to(target)


def _nested(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("plant", [_fifo, _symlink_to_a_busy_file, _nested], ids=["fifo", "symlink", "nested"])
def test_upgrade_restart_reads_the_state_file_as_untrusted(stub_systemd, plant):
    """It runs as root and the state directory is the service user's: a FIFO must not hang it
    (the deb's postinst with it), a symlink is not followed, a nesting too deep for the parser is
    not a traceback. Each counts as busy: the restart is deferred to the bounded waiter."""
    stub_systemd.active.touch()
    plant(stub_systemd.state)
    helper = stub_systemd.helper(wait=False)
    try:
        returncode = helper.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("upgrade-restart hung on the state file")
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    output = helper.stdout.read()
    assert returncode == 0, output
    assert "Traceback" not in output, output
    assert "counted as busy" in output, output
    calls = stub_systemd.calls()
    assert not [c for c in calls if "try-restart" in c], calls
    assert [c for c in calls if c.startswith("systemd-run ")], calls


def test_upgrade_restart_stops_waiting_when_the_unit_stops(stub_systemd):
    stub_systemd.active.touch()
    stub_systemd.state.write_text('{"busy": true}')
    waiter = stub_systemd.helper("--wait", wait=False)
    assert wait_for(lambda: len(stub_systemd.calls()) >= 2, 10)
    stub_systemd.active.unlink()
    assert waiter.wait(timeout=30) == 0
    assert not [c for c in stub_systemd.calls() if "try-restart" in c]


def test_upgrade_restart_never_waits_for_ready(stub_systemd):
    """The restarted agent waits for IMDS before READY=1 (TimeoutStartSec=infinity);
    a plain `systemctl try-restart` waits with it and the deb postinst / rpm %posttrans hang."""
    stub_systemd.active.touch()
    stub_systemd.imds_down.touch()
    stub_systemd.state.write_text('{"busy": false}')
    helper = stub_systemd.helper(wait=False)
    try:
        assert helper.wait(timeout=20) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("upgrade-restart blocked on the restart: " + repr(stub_systemd.calls()))
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    assert stub_systemd.calls()[-1] == RESTART


@pytest.mark.parametrize("how", ["STATE_DIR", "CONFIG_DIR"])
def test_upgrade_restart_reads_the_state_dir_of_the_unit(stub_systemd, how):
    """A drop-in's Environment=NODEAGENT_STATE_DIR= (or a NODEAGENT_CONFIG_DIR= whose
    files set STATE_DIR) moves the state; the helper must look there, not at the config files'
    idle state, or it restarts the agent in the middle of a drain."""
    stub_systemd.active.touch()
    stub_systemd.state.write_text('{"busy": false}')  # what the config files point at: idle
    draining = stub_systemd.root / "state elsewhere"  # a space: the value is quoted by systemctl
    draining.mkdir()
    (draining / "state.json").write_text('{"busy": true}')
    if how == "STATE_DIR":
        stub_systemd.unit_env.write_text(
            f'HOME=/var/lib/nodeagent "NODEAGENT_STATE_DIR={draining}"\n')
    else:
        etc = stub_systemd.root / "etc-unit"
        (etc / "conf.d").mkdir(parents=True)
        (etc / "conf.d" / "10-state.conf").write_text(f"\ufeffexport STATE_DIR='{draining}'\n")
        stub_systemd.unit_env.write_text(f'"NODEAGENT_CONFIG_DIR={etc}"\n')
    helper = stub_systemd.helper()
    assert helper.returncode == 0
    calls = stub_systemd.calls()
    assert not [c for c in calls if "try-restart" in c], "restarted a draining agent: " + repr(calls)
    assert [c for c in calls if c.startswith("systemd-run ")], calls
