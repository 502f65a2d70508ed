"""inverted_pendulum from 100 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/inverted_pendulum_pref.py --workdir=runs/ip_pref

configs/inverted_pendulum.py with one change: PPO optimizes the reward model learned from
the labels (25 from the random policy, 75 more during training) instead of the true
reward. Expected on a 2-core CPU in about a minute and a half (about 77k env steps/s,
against about 94k for true-reward PPO): the true return climbs from about 45 to about 470
by 2M env steps (the true-reward run reaches about 890), and the learned segment return
correlates about 0.99 with the true one.
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
