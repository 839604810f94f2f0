"""Runs INSIDE the test container as imds-sim.service: `nodeagent imds-sim` on 127.0.0.1:1338
for the scenario's instance (spot). Its control API takes the notices (POST /_sim/spot)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nodeagent_sim.imds import main_imds_sim  # noqa: E402

if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        scenario = json.load(handle)
    sys.exit(main_imds_sim(1338, instance_id=scenario["instance_id"], availability_zone=scenario["zone"],
                           local_hostname=scenario["node"], life_cycle="spot"))
