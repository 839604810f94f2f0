"""Packer templates (packer/al2023, packer/ubuntu): `packer fmt` and `packer validate
-syntax-only` with the real tool, structure with python-hcl2, no credentials anywhere under
packer/, and shellcheck on every shell script of the repository's packaging and packer dirs."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import hcl2
import pytest
from hcl2 import SerializationOptions

import nodeagent

REPO = Path(__file__).resolve().parents[2]
PACKER = REPO / "packer"
TEMPLATE_DIRS = {"al2023": PACKER / "al2023", "ubuntu": PACKER / "ubuntu"}
VERIFY_SCRIPT = PACKER / "scripts" / "verify-install.sh"
HCL_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)

# What each build must resolve to; k8s 1.34 stands in for any version.
SSM_PATHS = {
    ("al2023", "x86_64"): "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/standard/recommended/image_id",
    ("al2023", "arm64"): "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/arm64/standard/recommended/image_id",
    ("ubuntu", "x86_64"): "/aws/service/canonical/ubuntu/eks/24.04/1.34/stable/current/amd64/hvm/ebs-gp3/ami-id",
    ("ubuntu", "arm64"): "/aws/service/canonical/ubuntu/eks/24.04/1.34/stable/current/arm64/hvm/ebs-gp3/ami-id",
}
INSTALL = {
    "al2023": ("/tmp/nodeagent.rpm", "sudo dnf install -y /tmp/nodeagent.rpm"),
    "ubuntu": ("/tmp/nodeagent.deb", "install -y ./nodeagent.deb"),
}
ENABLED_UNITS = {
    "al2023": ["nodeagent.service", "nodeagent-spot-label.service"],
    "ubuntu": ["nodeagent.service"],
}
SSH_USER = {"al2023": "ec2-user", "ubuntu": "ubuntu"}
PACKAGE_FILE = {"al2023": "nodeagent-{v}-1.noarch.rpm", "ubuntu": "nodeagent_{v}_all.deb"}
REQUIRED_VARIABLES = {"kubernetes_version", "region", "arch", "instance_type", "subnet_id",
                      "vpc_id", "ami_name_prefix", "extra_tags", "nodeagent_version",
                      "package_path"}


def require(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")


# --- loading and evaluating just enough HCL ----------------------------------------------------


def load_dir(directory: Path) -> Dict[str, List[Any]]:
    """All .pkr.hcl files of one build directory, merged block type by block type."""
    merged: Dict[str, List[Any]] = {}
    for path in sorted(directory.glob("*.pkr.hcl")):
        for key, value in hcl2.loads(path.read_text(), serialization_options=HCL_OPTIONS).items():
            if key != "__comments__":
                merged.setdefault(key, []).extend(value)
    return merged


def labelled(blocks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """[{label: body}, ...] -> {label: body}"""
    return {label: body for block in blocks for label, body in block.items()}


def locals_of(template: Dict[str, List[Any]]) -> Dict[str, Any]:
    merged: Dict[str, Any] = {}
    for block in template.get("locals", []):
        merged.update({k: v for k, v in block.items() if k != "__comments__"})
    return merged


def only_source(template: Dict[str, List[Any]]) -> Tuple[str, Dict[str, Any]]:
    (sources,) = [labelled(template["source"])["amazon-ebs"]]
    (name, body), = sources.items()
    return name, body


TOKEN = re.compile(r'\s*(?:(==|!=|\?|:|\(|\))|"((?:[^"\\]|\\.)*)"|(var|local|path)\.(\w+))')


class Evaluator:
    """Evaluates the expressions the templates use for arch-dependent values: string literals,
    var./local. references, == / !=, ?: and parentheses. Anything else is a test failure."""

    def __init__(self, variables: Mapping[str, str], locals_: Mapping[str, Any], root: Path):
        self.variables = variables
        self.locals = locals_
        self.root = root

    def interpolate(self, text: str) -> str:
        """Replace each ${...} (which may hold string literals with ${...} of their own)."""
        out, position = [], 0
        while True:
            start = text.find("${", position)
            if start < 0:
                return "".join(out) + text[position:]
            out.append(text[position:start])
            depth, index, in_string = 1, start + 2, False
            while depth:
                char = text[index]
                if in_string:
                    if char == "\\":
                        index += 1
                    elif char == '"':
                        in_string = False
                elif char == '"':
                    in_string = True
                elif char == "{":
                    depth += 1
                elif char == "}":
                    depth -= 1
                index += 1
            out.append(self.expression(text[start + 2:index - 1]))
            position = index

    def expression(self, text: str) -> str:
        tokens = []
        position = 0
        while position < len(text.rstrip()):
            match = TOKEN.match(text, position)
            assert match, f"unsupported expression: {text[position:]!r}"
            tokens.append(match.groups())
            position = match.end()
        tree, rest = self._conditional(tokens)
        assert not rest, f"trailing tokens in {text!r}"
        return self._evaluate(tree)

    # Parsing builds a tree, so that only the branch a condition takes is evaluated.
    def _conditional(self, tokens: list) -> Tuple[tuple, list]:
        condition, tokens = self._comparison(tokens)
        if tokens and tokens[0][0] == "?":
            when_true, tokens = self._conditional(tokens[1:])
            assert tokens and tokens[0][0] == ":", "expected ':'"
            when_false, tokens = self._conditional(tokens[1:])
            return ("if", condition, when_true, when_false), tokens
        return condition, tokens

    def _comparison(self, tokens: list) -> Tuple[tuple, list]:
        left, tokens = self._atom(tokens)
        if tokens and tokens[0][0] in ("==", "!="):
            operator = tokens[0][0]
            right, tokens = self._atom(tokens[1:])
            return (operator, left, right), tokens
        return left, tokens

    def _atom(self, tokens: list) -> Tuple[tuple, list]:
        operator, literal, kind, name = tokens[0]
        if operator == "(":
            tree, rest = self._conditional(tokens[1:])
            assert rest and rest[0][0] == ")", "expected ')'"
            return tree, rest[1:]
        if literal is not None:
            return ("literal", literal), tokens[1:]
        assert kind, f"unexpected token {tokens[0]}"
        return ("ref", kind, name), tokens[1:]

    def _evaluate(self, tree: tuple) -> str:
        if tree[0] == "if":
            chosen = tree[2] if self._evaluate(tree[1]) == "true" else tree[3]
            return self._evaluate(chosen)
        if tree[0] in ("==", "!="):
            equal = self._evaluate(tree[1]) == self._evaluate(tree[2])
            return str(equal == (tree[0] == "==")).lower()
        if tree[0] == "literal":
            return self.interpolate(tree[1])
        _, kind, name = tree
        if kind == "var":
            return self.variables[name]
        if kind == "local":
            return self.interpolate(self.locals[name])
        assert (kind, name) == ("path", "root"), f"unsupported reference {kind}.{name}"
        return str(self.root)


def evaluator(os_name: str, arch: str, **overrides: str) -> Evaluator:
    template = load_dir(TEMPLATE_DIRS[os_name])
    variables = {name: body.get("default") for name, body in labelled(template["variable"]).items()}
    variables.update(kubernetes_version="1.34", region="us-east-1", arch=arch, **overrides)
    return Evaluator(variables, locals_of(template), TEMPLATE_DIRS[os_name])


# --- the real packer -----------------------------------------------------------------------------

STRIP_FOR_166 = re.compile(r'^(?:packer|data\s+"[^"]+"\s+"[^"]+")\s*\{.*?^\}\n', re.M | re.S)


def stripped_for_packer_166(text: str) -> str:
    """Debian's packer 1.6.6 predates the packer {} block and HCL2 data sources (1.7): drop
    those top-level blocks. References to data.* stay; syntax-only mode does not resolve them.
    The templates are `packer fmt`-ed, so a top-level block ends at the first '}' in column 0."""
    return STRIP_FOR_166.sub("", text)


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_packer_fmt_check(os_name: str) -> None:
    require("packer")
    result = subprocess.run(["packer", "fmt", "-check", "-diff", str(TEMPLATE_DIRS[os_name])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_packer_fmt_check_can_fail(tmp_path: Path) -> None:
    require("packer")
    template = (TEMPLATE_DIRS["al2023"] / "al2023.pkr.hcl").read_text()
    (tmp_path / "bad.pkr.hcl").write_text(template.replace("  region        =", "region="))
    result = subprocess.run(["packer", "fmt", "-check", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_packer_validate_syntax_only(os_name: str, tmp_path: Path) -> None:
    require("packer")
    copy = tmp_path / os_name
    copy.mkdir()
    for path in TEMPLATE_DIRS[os_name].glob("*.pkr.hcl"):
        (copy / path.name).write_text(stripped_for_packer_166(path.read_text()))
    stripped = "".join(p.read_text() for p in sorted(copy.glob("*.pkr.hcl")))
    assert not re.search(r'^(packer|data)\b', stripped, re.M), "1.7+ blocks left in the copy"
    assert 'source "amazon-ebs"' in stripped and "build {" in stripped and "locals {" in stripped

    result = subprocess.run(["packer", "validate", "-syntax-only", str(copy)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    # The control: the same check fails on a broken copy.
    (copy / "broken.pkr.hcl").write_text('source "amazon-ebs" "x" {\n')
    broken = subprocess.run(["packer", "validate", "-syntax-only", str(copy)],
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0


# --- structure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_required_plugins(os_name: str) -> None:
    (packer_block,) = load_dir(TEMPLATE_DIRS[os_name])["packer"]
    (plugins,) = packer_block["required_plugins"]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"
    assert plugins["amazon"]["version"] == ">= 1.3.0"


@pytest.mark.parametrize("os_name, arch", sorted(SSM_PATHS))
def test_source_ami_comes_from_ssm(os_name: str, arch: str) -> None:
    template = load_dir(TEMPLATE_DIRS[os_name])
    (ssm_name, ssm), = labelled(template["data"])["amazon-parameterstore"].items()
    _, source = only_source(template)

    assert evaluator(os_name, arch).interpolate(ssm["name"]) == SSM_PATHS[(os_name, arch)]
    assert ssm["region"] == "${var.region}"
    assert source["source_ami"] == f"${{data.amazon-parameterstore.{ssm_name}.value}}"
    assert "source_ami_filter" not in source and "owners" not in source


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
@pytest.mark.parametrize("arch, default_type", [("x86_64", "t3.medium"), ("arm64", "t4g.medium")])
def test_instance_type_defaults_by_arch(os_name: str, arch: str, default_type: str) -> None:
    _, source = only_source(load_dir(TEMPLATE_DIRS[os_name]))
    assert evaluator(os_name, arch).interpolate(source["instance_type"]) == default_type
    chosen = evaluator(os_name, arch, instance_type="c7g.large")
    assert chosen.interpolate(source["instance_type"]) == "c7g.large"


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_build_instance_and_ami_require_imdsv2(os_name: str) -> None:
    _, source = only_source(load_dir(TEMPLATE_DIRS[os_name]))
    assert source["imds_support"] == "v2.0"
    (metadata,) = source["metadata_options"]
    assert metadata == {"http_endpoint": "enabled", "http_tokens": "required",
                        "http_put_response_hop_limit": 1}
    assert source["ssh_username"] == SSH_USER[os_name]
    assert source["subnet_id"] == "${var.subnet_id}" and source["vpc_id"] == "${var.vpc_id}"


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_provisioners_install_verify_and_enable(os_name: str) -> None:
    (build,) = load_dir(TEMPLATE_DIRS[os_name])["build"]
    name, _ = only_source(load_dir(TEMPLATE_DIRS[os_name]))
    assert build["sources"] == [f"source.amazon-ebs.{name}"]
    steps = [next(iter(p.items())) for p in build["provisioner"]]
    kinds = [kind for kind, _ in steps]
    assert kinds == ["file", "shell", "shell"], "upload, install + enable, verify"
    (_, upload), (_, install), (_, verify) = steps

    destination, install_command = INSTALL[os_name]
    assert upload == {"source": "${local.package_path}", "destination": destination}
    inline = install["inline"]
    assert inline[0] == "set -eu"
    assert any(install_command in line for line in inline), inline
    (enable,) = [line for line in inline if "systemctl enable" in line]
    assert enable.split()[enable.split().index("enable") + 1:] == ENABLED_UNITS[os_name]

    assert verify["script"] == "${path.root}/../scripts/verify-install.sh"
    assert (TEMPLATE_DIRS[os_name] / "../scripts/verify-install.sh").resolve() == VERIFY_SCRIPT
    assert verify["execute_command"].startswith("chmod +x {{ .Path }}; sudo ")
    assert verify["environment_vars"] == ["ENABLED_UNITS=" + " ".join(ENABLED_UNITS[os_name])]


STUBS = {
    "nodeagent": """#!/bin/sh
case $1 in
    version) echo 0.0.0 ;;
    check-config) echo "ENABLED true (default)"; exit "${STUB_CHECK_RC:-0}" ;;
esac
""",
    "systemd-analyze": """#!/bin/sh
echo "systemd-analyze $*" >>"$STUB_LOG"
for arg in "$@"; do last=$arg; done
case $last in
    */cloud-final.service) printf '%s' "${STUB_BOOT_STDERR:-}" >&2 ;;
    *) printf '%s' "${STUB_VERIFY_STDERR:-}" >&2; exit "${STUB_VERIFY_RC:-0}" ;;
esac
""",
    "systemctl": """#!/bin/sh
echo "systemctl $*" >>"$STUB_LOG"
echo "${STUB_ENABLED_STATE:-enabled}"
""",
}


def run_verify_script(tmp_path: Path, **stub_env: str) -> subprocess.CompletedProcess:
    """verify-install.sh with nodeagent, systemd-analyze and systemctl replaced by stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(tmp_path / "log"),
           "NODEADM_DROPIN_DIR": str(tmp_path / "nodeadm.d"), **stub_env}
    return subprocess.run(["sh", str(VERIFY_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_verify_script_passes_a_clean_install(tmp_path: Path) -> None:
    (tmp_path / "nodeadm.d").mkdir()
    (tmp_path / "nodeadm.d" / "50-nodeagent-spot-label.yaml").write_text("left by the build\n")
    result = run_verify_script(
        tmp_path, ENABLED_UNITS="nodeagent.service nodeagent-spot-label.service")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "nodeadm.d").iterdir()) == [], "a drop-in must not be baked in"
    calls = (tmp_path / "log").read_text()
    for unit in ("nodeagent.service", "nodeagent-spot-label.service"):
        assert f"verify --man=false /usr/lib/systemd/system/{unit}" in calls
        assert f"systemctl is-enabled {unit}" in calls
    assert "--generators=true /usr/lib/systemd/system/multi-user.target" in calls


CYCLE = ("multi-user.target: Found ordering cycle on nodeagent.service/start\n"
         "multi-user.target: Found dependency on cloud-final.service/start\n")


@pytest.mark.parametrize(
    "stub_env, message",
    [
        ({"STUB_CHECK_RC": "78"}, ""),
        ({"STUB_VERIFY_STDERR": "nodeagent.service:12: Unknown key name 'Foo'\n"}, "warnings"),
        ({"STUB_VERIFY_RC": "1"}, "exited non-zero"),
        ({"STUB_BOOT_STDERR": CYCLE}, "ordering cycle"),
        ({"STUB_ENABLED_STATE": "disabled"}, "expected enabled"),
    ],
    ids=["check-config", "verify-stderr", "verify-exit", "boot-cycle", "not-enabled"],
)
def test_verify_script_fails_the_build(tmp_path: Path, stub_env: Dict[str, str], message: str) -> None:
    result = run_verify_script(tmp_path, **stub_env)
    assert result.returncode != 0, result.stdout + result.stderr
    assert message in result.stderr


def test_verify_script_only_notes_complaints_about_other_units(tmp_path: Path) -> None:
    other = "kubelet.service:3: Unknown key name 'Foo'\n"
    result = run_verify_script(tmp_path, STUB_BOOT_STDERR=other)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note (not ours)" in result.stdout


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_package_path_defaults_to_the_built_version(os_name: str) -> None:
    template = load_dir(TEMPLATE_DIRS[os_name])
    locals_ = locals_of(template)
    # The template reads the version with this regex from nodeagent/__init__.py.
    match = re.search(r'regex\(\s*"((?:[^"\\]|\\.)*)"', locals_["nodeagent_version"])
    assert match, locals_["nodeagent_version"]
    pattern = match.group(1).encode().decode("unicode_escape")
    assert "file(\"${local.repo_root}/nodeagent/__init__.py\")" in locals_["nodeagent_version"]
    found = re.search(pattern, (REPO / "nodeagent" / "__init__.py").read_text())
    assert found and found.group(1) == nodeagent.__version__
    assert locals_["repo_root"] == "${path.root}/../.."
    assert (TEMPLATE_DIRS[os_name] / "../..").resolve() == REPO

    # With nodeagent_version given, package_path is dist/<package file> under the repo root.
    chosen = evaluator(os_name, "x86_64", nodeagent_version="9.8.7")
    chosen.locals = {**chosen.locals, "nodeagent_version": "${var.nodeagent_version}"}
    package = Path(chosen.interpolate(locals_["package_path"])).resolve()
    assert package == REPO / "dist" / PACKAGE_FILE[os_name].format(v="9.8.7")
    given = evaluator(os_name, "x86_64", package_path="/srv/pkgs/x")
    assert given.interpolate(locals_["package_path"]) == "/srv/pkgs/x"


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_tags_mark_spot_and_version(os_name: str) -> None:
    template = load_dir(TEMPLATE_DIRS[os_name])
    common = locals_of(template)["common_tags"]
    assert common["lifecycle"] == "Ec2Spot"
    assert common["nodeagent_version"] == "${local.nodeagent_version}"
    assert common["kubernetes_version"] == "${var.kubernetes_version}"
    _, source = only_source(template)
    for key in ("tags", "snapshot_tags"):
        # common tags first, extra_tags last so that the user's tags win.
        assert re.fullmatch(r"\$\{merge\(local\.common_tags, \{.*\}, var\.extra_tags\)\}",
                            source[key]), source[key]


@pytest.mark.parametrize("os_name", sorted(TEMPLATE_DIRS))
def test_variables(os_name: str) -> None:
    variables = labelled(load_dir(TEMPLATE_DIRS[os_name])["variable"])
    assert REQUIRED_VARIABLES <= set(variables)
    assert "default" not in variables["kubernetes_version"] and "default" not in variables["region"]
    assert variables["subnet_id"]["default"] == "" and variables["vpc_id"]["default"] == ""
    assert variables["extra_tags"]["type"] == "${map(string)}"
    assert variables["extra_tags"]["default"] == {}
    assert variables["arch"]["default"] == "x86_64"
    (validation,) = variables["arch"]["validation"]
    assert '["x86_64", "arm64"]' in validation["condition"]


def test_both_directories_declare_the_same_variables() -> None:
    """The two build directories are self-contained (Packer evaluates every data source in a
    directory, whatever -only says), so their variables are duplicated: keep them in step."""
    def comparable(os_name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        template = hcl2.loads((TEMPLATE_DIRS[os_name] / "variables.pkr.hcl").read_text(),
                              serialization_options=HCL_OPTIONS)
        variables = labelled(template["variable"])
        variables.pop("package_path")
        locals_ = locals_of(template)
        locals_.pop("package_path")
        return variables, locals_

    assert comparable("al2023") == comparable("ubuntu")


# --- no credentials ------------------------------------------------------------------------------

ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")
ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
SECRET_KEY = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
CREDENTIAL_FIELDS = re.compile(
    r"\b(access_key|secret_key|token|aws_access_key_id|aws_secret_access_key|"
    r"aws_session_token|owners)\s*=", re.I)


def credential_findings(text: str) -> List[str]:
    found = []
    for name, pattern in (("account id", ACCOUNT_ID), ("access key id", ACCESS_KEY_ID),
                          ("secret key", SECRET_KEY), ("credential field", CREDENTIAL_FIELDS)):
        found += [f"{name}: {m.group(0)}" for m in pattern.finditer(text)]
    return found


def test_credential_scan_catches_planted_secrets() -> None:
    planted = ('owners = ["123456789012"]\naccess_key = "AKIAABCDEFGHIJKLMNOP"\n'
               'secret = "abcdEFGHijklMNOPqrstUVWXyz0123456789/+ab"\n')
    kinds = {finding.split(":")[0] for finding in credential_findings(planted)}
    assert kinds == {"account id", "access key id", "secret key", "credential field"}


def test_no_credentials_or_account_ids_under_packer() -> None:
    files = [p for p in PACKER.rglob("*") if p.is_file()]
    assert len(files) >= 10
    findings = {str(p.relative_to(REPO)): credential_findings(p.read_text()) for p in files}
    assert {path: found for path, found in findings.items() if found} == {}


# --- shellcheck ----------------------------------------------------------------------------------


def shell_scripts() -> List[Path]:
    """packaging/*.sh, packer/scripts/*.sh, and any file there whose first line is a sh/bash
    shebang (packaging/spot-label has no extension)."""
    found = set(REPO.glob("packaging/*.sh")) | set(REPO.glob("packer/scripts/*.sh"))
    for path in [*REPO.glob("packaging/*"), *REPO.glob("packer/scripts/*")]:
        if path.is_file():
            with path.open("rb") as handle:
                first = handle.readline()
            if re.match(rb"#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b", first):
                found.add(path)
    return sorted(found)


def test_shell_scripts_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"packaging/spot-label", "packer/scripts/verify-install.sh"} <= names


@pytest.mark.parametrize("path", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shell_script_is_shellcheck_clean(path: Path) -> None:
    require("shellcheck")
    result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
