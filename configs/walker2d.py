"""PPO on the true reward of walker2d (generalized backend), sized for one CPU core.

  python -m rlhf_jax.train --config=configs/walker2d.py --workdir=runs/walker2d

configs/hopper.py's settings on walker2d (Brax publishes only SAC settings for both),
on the generalized backend, with the reward scaled by 0.1. Unscaled (2026-12-06, seeds
0 / 1 / 2, 8.2M env steps; docs/paper/walker2d_reward_scaling_1/) its final policies
scored 2,843 / 4,075 / 1,734: seed 2 crept from 1,060 at 2.9M env steps to 1,593 at 7.9M.
Scaled by 0.1, the same seed 2's chunks passed 2,000 at 2.3M env steps and reached 3,772
at 6.2M (one core, about 11k env steps/s): with a discount of 0.995 the unscaled returns
to fit are in the hundreds, and the value network caught up slowly. The README's paper
table has the evaluated returns over 3 seeds.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "hopper.py"))
  config.env.name = "walker2d"
  config.total_env_steps = 8_000_000
  config.ppo.reward_scaling = 0.1
  return config
