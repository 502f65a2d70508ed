"""PPO on the true reward of walker2d (generalized backend), sized for one CPU core.

  python -m rlhf_jax.train --config=configs/walker2d.py --workdir=runs/walker2d

configs/hopper.py's settings on walker2d (Brax publishes only SAC settings for both).
Measured results: the README's paper table (experiments/label_efficiency.py).
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "hopper.py"))
  config.env.name = "walker2d"
  config.total_env_steps = 8_000_000
  return config
