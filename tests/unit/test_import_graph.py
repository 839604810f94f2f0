"""The shipped package's import structure: no circles, and imports at module top.

Read from the source with ast (no imports run), so it is fast and sees every module, including
ones no other test imports. Every import statement counts, wherever it is in the module: at the
top, inside a function (it runs when the function does, so a circle through it only waits), and
under `if TYPE_CHECKING:`. Those never run, but mypy follows them, and a circle through one is
still two modules that each need the other: one of them should give the other a Protocol or a
plain value instead. So a circle is a circle whichever kind of import closes it.

Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first, so an import of a module is
also an edge to each package above it, except the importer's own packages (already being
imported when its body runs). `from package import name` reads a name from the package's
__init__ unless `package.name` is a module.
"""

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nodeagent"

# Modules whose every function-level import has one reason, stated here once. Anywhere else, an
# import inside a function needs a comment saying why, on its line or the line before (a run of
# import lines directly after such a comment shares it).
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
}
PRAGMAS = ("noqa", "type:", "pragma")  # a comment that silences a tool is not a reason


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _packages_above(name: str) -> list:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(node: ast.ImportFrom, module: str) -> str:
    base = node.module or ""
    if node.level:
        is_package = MODULES.get(module, Path()).name == "__init__.py"
        package = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(package + ([base] if base else []))
    return base


def _targets(node: ast.AST, module: str) -> set:
    """The nodeagent modules an import statement runs or reads names from (see the docstring)."""
    named = set()
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(node, module)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            named.add(submodule if submodule in MODULES else base)
    own = set(_packages_above(module)) | {module}
    found = set(named)
    for name in named:
        found |= {package for package in _packages_above(name) if package not in own}
    found |= {name for name in named if name in own and name != module}  # names read from own package
    return {name for name in found if name in MODULES} - {module}


def _all_imports(tree: ast.Module):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _graph() -> dict:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set().union(set(), *[_targets(n, name) for n in _all_imports(tree)])
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


def _module_top_imports(tree: ast.Module) -> set:
    """ids of the imports at module level, and under a module-level `if TYPE_CHECKING:`."""
    top = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top.add(id(node))
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            top |= {id(n) for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    return top


def _comment_lines(source: str) -> dict:
    """line number -> (comment text, whether the comment is the whole line)."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            whole = not token.line[: token.start[1]].strip()
            if not text.startswith(PRAGMAS):
                found[token.start[0]] = (text, whole)
    return found


def _unexplained_local_imports(name: str, source: str) -> list:
    tree = ast.parse(source)
    top = _module_top_imports(tree)
    comments = _comment_lines(source)
    allowed = LOCAL_IMPORTS_ALLOWED.get(name, set())
    explained_until = -1  # the last line of a run of imports that a reason covers
    problems = []
    for node in sorted(_all_imports(tree), key=lambda n: n.lineno):
        if id(node) in top:
            continue
        imported = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        if allowed is None or (imported or "").split(".")[0] in allowed or imported in allowed:
            continue
        on_line = node.lineno in comments
        line_before = comments.get(node.lineno - 1, ("", False))[1]
        if on_line or line_before or node.lineno - 1 == explained_until:
            explained_until = node.end_lineno
            continue
        problems.append(f"{node.lineno} imports {imported}")
    return problems


def test_the_graph_sees_the_package():
    graph = _graph()
    assert "nodeagent.agent" in graph and "nodeagent.respond" in graph["nodeagent.agent"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_reads_imports_anywhere_and_the_packages_they_run():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nodeagent import drill\n"
                     "def f():\n    from nodeagent.config.keys import KEYS\n    import nodeagent.kube.gate\n")
    targets = set().union(*[_targets(n, "nodeagent.timefmt") for n in _all_imports(tree)])
    assert {"nodeagent.drill", "nodeagent.config", "nodeagent.config.keys", "nodeagent.kube"} <= targets
    assert "nodeagent.kube.gate" in targets
    # From inside the package: a sibling module is no edge to the package, a name from it is.
    sibling = ast.parse("from nodeagent.config.keys import KEYS\nfrom nodeagent.config import parsers\n")
    assert set().union(*[_targets(n, "nodeagent.config.settings") for n in _all_imports(sibling)]) == {
        "nodeagent.config.keys", "nodeagent.config.parsers"}
    reads_package = ast.parse("from nodeagent.config import Settings\n")
    assert _targets(_all_imports(reads_package)[0], "nodeagent.config.describe") == {"nodeagent.config"}


def test_no_import_circle_in_nodeagent():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_an_import_circle_hidden_in_a_function_is_found():
    """The config <-> secret_files shape: one side imports the other inside a function."""
    graph = dict(_graph())
    hidden = ast.parse("def load():\n    from nodeagent import status  # builds on this module\n")
    graph["nodeagent.config.layers"] = graph["nodeagent.config.layers"] | _targets(
        _all_imports(hidden)[0], "nodeagent.config.layers")
    cycle = _cycle(graph)
    assert cycle is not None and "nodeagent.status" in cycle and "nodeagent.config.layers" in cycle


def test_reporters_reach_kubernetes_only_through_the_declared_link():
    """Events and the metrics get the responder's API client through ports.KubeLink, passed in by
    the caller, not by importing (and probing for) the Kubernetes responder."""
    graph = _graph()
    for name in ("nodeagent.report", "nodeagent.report.events"):
        assert "nodeagent.kube.responder" not in graph[name], name


def test_imports_are_at_module_top_unless_a_reason_is_stated():
    misplaced = []
    for name, path in MODULES.items():
        problems = _unexplained_local_imports(name, path.read_text(encoding="utf-8"))
        misplaced += [f"{path.relative_to(ROOT)}:{problem}" for problem in problems]
    assert not misplaced, "imports inside functions without a stated reason:\n" + "\n".join(misplaced)


def test_a_local_import_needs_a_comment_on_its_line_or_the_line_before():
    source = (
        "def a():\n    import json\n"
        "def b():\n    import json  # only this command needs it\n"
        "def c():\n    # only this command needs these\n    import json\n    import csv\n\n    import os\n"
        "def d():\n    import json  # noqa: F401\n"
        "def e():\n    x = 1  # a comment about x\n    import json\n"
    )
    assert _unexplained_local_imports("nodeagent.example", source) == [
        "2 imports json", "10 imports os", "12 imports json", "15 imports json"]


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
