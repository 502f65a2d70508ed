"""PPO on the true reward of walker2d (generalized backend), sized for one CPU core.

  python -m rlhf_jax.train --config=configs/walker2d.py --workdir=runs/walker2d

configs/hopper.py's settings on walker2d (Brax publishes only SAC settings for both),
on the generalized backend, which simulates walker2d at about 4k env steps/s on one CPU
core (hopper: 10k). Measured on the 2-core CPU, one run per core (2026-12-03, seed 0, 35
min 53 s): the chunks' true return passes 2,000 at 3.3M env steps and reaches 2,706 at
8.2M, episodes about 950 steps long; the README's paper table has the evaluated returns.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "hopper.py"))
  config.env.name = "walker2d"
  config.total_env_steps = 8_000_000
  return config
