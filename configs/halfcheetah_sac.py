"""SAC on the true reward of halfcheetah (spring backend, as configs/halfcheetah.py).

  python -m rlhf_jax.train --config=configs/halfcheetah_sac.py --workdir=runs/halfcheetah_sac

Brax publishes no SAC settings for halfcheetah: these are configs/hopper_sac.py's (128
envs, 16 gradient steps per step of them on batches of 256, learning rate 6e-4, replay
8,192 to 1,048,576) with the usual discount 0.99 and reward scaling 1, for 1M env steps.
Not yet measured.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "hopper_sac.py"))
  config.env.name = "halfcheetah"
  config.env.backend = "spring"
  config.sac.discount = 0.99
  config.sac.reward_scaling = 1.0
  return config
