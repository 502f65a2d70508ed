"""One process of tests/test_multihost.py: `python tests/multihost_worker.py PORT ID WORKDIR`.

Joins a 2-process JAX cluster on 127.0.0.1:PORT through `rlhf_jax.train --multihost`'s
own initialization, trains the tiny PPO config (the preference loop's shardings are
tests/eight_devices.py's), and prints one JSON line with what
this process ended with."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlhf_jax import sharding  # noqa: E402

port, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sharding.initialize_multihost(f"127.0.0.1:{port}", 2, process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rlhf_jax import checkpoint, train  # noqa: E402
from tests.test_loop import tiny_config  # noqa: E402

result = train.train(tiny_config(), workdir)
params = result.state.agent.params
local = [
  np.asarray(leaf.addressable_data(0)).ravel()[:4].tolist() for leaf in jax.tree.leaves(params)
]
report = {
  "process": jax.process_index(),
  "devices": jax.device_count(),
  "fingerprint": int(checkpoint.fingerprint(result.state)),
  "params": local,
  "records": len(result.records),
}
print("RESULT " + json.dumps(report), flush=True)
