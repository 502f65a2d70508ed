"""walker2d from 700 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/walker2d_pref.py --workdir=runs/walker2d_pref

configs/walker2d.py with one change: PPO optimizes the reward model learned from the
labels instead of the true reward, unscaled (walker2d.py's reward scaling of 0.1 is for
the true reward; the learned one already has unit scale). As in configs/hopper_pref.py,
falling ends an episode, so the learned reward keeps the offset the labels teach (not
centered), its scale follows a slow running std (normalizer_decay 0.999, measured on
hopper and inverted_double_pendulum, not yet here), and segments are 60 steps. Measured
results: the README's paper table (experiments/label_efficiency.py).
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "walker2d.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.normalize_mean = False
  config.reward.normalizer_decay = 0.999
  config.segments.length = 60
  config.ppo.reward_scaling = 1.0  # the learned reward already has unit scale
  return config
