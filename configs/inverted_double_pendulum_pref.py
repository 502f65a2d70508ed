"""inverted_double_pendulum from 700 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/inverted_double_pendulum_pref.py \
      --workdir=runs/idp_pref

configs/inverted_double_pendulum.py with one change: PPO optimizes the reward model
learned from the labels instead of the true reward. Falling ends an episode, so the
learned reward keeps the offset the labels teach (not centered). Segments are 1.5 s (75
steps of 0.02 s). Measured results: the README's paper table
(experiments/label_efficiency.py).
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  here = os.path.dirname(__file__)
  config = config_lib.load(os.path.join(here, "inverted_double_pendulum.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.normalize_mean = False
  return config
