"""Code run in a subprocess: make nodeagent_sim unimportable, as on a packaged node, then import
every module of nodeagent (from sys.path[0] onwards) and print the failures as JSON."""

IMPORT_ALL = r'''
import importlib, json, pkgutil, sys, traceback

class BlockSimulators:
    def find_spec(self, name, path=None, target=None):
        if name == "nodeagent_sim" or name.startswith("nodeagent_sim."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not in the package)", name=name)
        return None

sys.meta_path.insert(0, BlockSimulators())
import nodeagent
failed = {}
# __main__ runs the CLI when imported; it imports only nodeagent.cli, which is walked.
names = ["nodeagent"] + [m.name for m in pkgutil.walk_packages(nodeagent.__path__, "nodeagent.")
                        if m.name != "nodeagent.__main__"]
for name in names:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=3)
print(json.dumps({"modules": names, "failed": failed, "file": nodeagent.__file__,
                  "sim_loaded": sorted(m for m in sys.modules if m.startswith("nodeagent_sim"))}))
'''

RUN_CLI_BLOCKED = r'''
import sys

class BlockSimulators:
    def find_spec(self, name, path=None, target=None):
        if name == "nodeagent_sim" or name.startswith("nodeagent_sim."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockSimulators())
from nodeagent.cli import main
sys.exit(main(sys.argv[1:]))
'''
