"""Runs inside `unshare --net`: the IMDS simulator on the real address, the agent on its defaults."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from nodeagent_sim.imds import ImdsSim


def main() -> int:
    sim = ImdsSim(host="169.254.169.254", port=80).start()
    state = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update(NODEAGENT_CONFIG_DIR=state, NODEAGENT_STATE_DIR=state, PYTHONUNBUFFERED="1")
    agent = subprocess.Popen([sys.executable, "-m", "nodeagent", "run", "--log-only"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2.5)
        sim.schedule_spot(120, "terminate")
        time.sleep(2.5)
    finally:
        agent.terminate()
        output, _ = agent.communicate(timeout=20)
        sim.stop()
    print(output)
    return 0 if "notice spot-itn" in output and agent.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
