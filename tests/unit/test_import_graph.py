"""The shipped package's import structure: no circles, and imports at module top.

Read from the source with ast (no imports run), so it is fast and sees every module, including
ones no other test imports.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nodeagent"

# Function-level imports allowed, and why (anything else goes at the top of the module).
LOCAL_IMPORTS_ALLOWED = {
    # Each command imports its module when it runs: `status`, `check-config` and `version` start
    # without the daemon, and `demo`/`imds-sim` report a missing nodeagent_sim plainly.
    "nodeagent.cli": None,
    # kubernetes is imported only after light_import.prepare() (skips ~30 MB of API models), and
    # import_client_modules() exists to import the client's modules on the main thread. The
    # token keeper and the API client use the library only once the kubeconfig has loaded it.
    "nodeagent.kube.kubeconfig": {"kubernetes", "yaml", "urllib3"},
    "nodeagent.kube.tokens": {"kubernetes"},
    "nodeagent.kube.client": {"kubernetes"},
    # secret_files builds on config (it resolves the *_FILE keys config.load has parsed).
    "nodeagent.config": {"nodeagent"},
    # The AWS client behind ASG_LIFECYCLE_HOOK loads only on nodes that configure a hook.
    "nodeagent.agent": {"nodeagent.lifecycle_hook"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.AST, module: str) -> set:
    """The nodeagent modules an import statement loads."""
    found = set()
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")[: -node.level]
            base = ".".join(package + ([base] if base else []))
        found = {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES}


def _top_level_imports(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):  # e.g. `if TYPE_CHECKING:` blocks do not run
            continue


def _type_checking_imports(tree: ast.Module):
    """Imports under a module-level `if TYPE_CHECKING:`: for the type checker, never run."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom)))


def _graph() -> dict:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set().union(*[_targets(n, name) for n in _top_level_imports(tree)]) - {name}
    return graph


def _cycle(graph: dict):
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_the_package():
    graph = _graph()
    assert "nodeagent.agent" in graph and "nodeagent.respond" in graph["nodeagent.agent"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_in_nodeagent():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_reporters_reach_kubernetes_only_through_the_declared_link():
    """Events and the metrics get the responder's API client through ports.KubeLink, passed in by
    the caller, not by importing (and probing for) the Kubernetes responder."""
    graph = _graph()
    for name in ("nodeagent.report", "nodeagent.report.events"):
        assert "nodeagent.kube.responder" not in graph[name], name


def test_imports_are_at_module_top_unless_a_reason_is_stated():
    misplaced = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(map(id, _top_level_imports(tree))) | set(map(id, _type_checking_imports(tree)))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
                continue
            allowed = LOCAL_IMPORTS_ALLOWED.get(name, set())
            imported = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if allowed is None or imported in allowed or (imported or "").split(".")[0] in allowed:
                continue
            misplaced.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {imported}")
    assert not misplaced, "imports inside functions without a stated reason:\n" + "\n".join(misplaced)


def test_a_node_without_a_lifecycle_hook_does_not_load_the_aws_client():
    """What the daemon imports at start; the AWS client (SigV4, XML) is for ASG_LIFECYCLE_HOOK only."""
    code = "import sys, nodeagent.cli, nodeagent.agent; print(sorted(m for m in sys.modules if m.startswith(" \
           "('nodeagent.aws', 'nodeagent.lifecycle_hook', 'requests_aws4auth', 'xml.etree'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_node_with_a_lifecycle_hook_gets_one():
    """The other half of the lazy import above: configured, the hook is built (not started)."""
    import threading

    from nodeagent import agent, config
    from nodeagent.clock import SystemClock
    from nodeagent.lifecycle_hook import LifecycleHook
    from nodeagent.notice_store import NoticeStore
    from tests.fakes import MemoryFiles

    settings = config.load_settings([], {}, {"ASG_LIFECYCLE_HOOK": "drain-hook"})
    store = NoticeStore(MemoryFiles(None))
    hook = agent._lifecycle_hook(settings, store, SystemClock(), threading.Event(), lambda: [], lambda told: None)
    assert isinstance(hook, LifecycleHook)
    off = config.load_settings([], {}, {})
    assert agent._lifecycle_hook(off, store, SystemClock(), threading.Event(), lambda: [], lambda told: None) is None
