"""Runs inside `unshare --net`: the IMDS simulator on the real address, the agent on its defaults."""
from __future__ import annotations

import os
import sys
import tempfile

from nodeagent_sim.imds import ImdsSim
from tests.helpers import Daemon


def main() -> int:
    sim = ImdsSim(host="169.254.169.254", port=80).start()
    state = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update(NODEAGENT_CONFIG_DIR=state, NODEAGENT_STATE_DIR=state, PYTHONUNBUFFERED="1")
    agent = Daemon(env, args=("run", "--log-only")).start()
    try:
        agent.wait_line(r"ready: watching IMDS", timeout_s=20)
        sim.schedule_spot(120, "terminate")
        agent.wait_line(r"notice spot-itn", timeout_s=20)
    except AssertionError as error:
        print(error)
    finally:
        code = agent.stop()
        sim.stop()
    print(agent.output())
    return 0 if agent.find(r"notice spot-itn") and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
