"""inverted_pendulum from 100 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/inverted_pendulum_pref.py --workdir=runs/ip_pref

configs/inverted_pendulum.py with one change: PPO optimizes the reward model learned from
the labels (25 from the random policy, 75 more during training) instead of the true
reward. This is the README's main job. Expected on a 2-core CPU in about two minutes
(about 1.5 of them training; 2026-12-03: 112 s in all, 56 s of it initializing and
compiling): the true return climbs from about 50 to 470-570 by 2M env steps (the
true-reward run reaches about 880), and the learned segment return correlates about 0.99
with the true one. Add --baseline=WORKDIR of a configs/inverted_pendulum.py run to draw
its curve in return.png.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "inverted_pendulum.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 100
  # Falling ends an episode early, so the labels teach a reward for staying up: its offset
  # (which centering would erase) is the point.
  config.reward.normalize_mean = False
  return config
