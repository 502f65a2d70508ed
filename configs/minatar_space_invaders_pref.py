"""MinAtar Space Invaders from 5,500 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/minatar_space_invaders_pref.py \
      --workdir=runs/space_invaders_pref

configs/minatar_space_invaders.py with PPO on the reward learned from the labels: the ensemble's
members are conv nets over the frame (and the one-hot action), segments are 25 steps (the
paper's Atari clips), and 5,500 labels is the paper's Atari budget.
experiments/label_efficiency.py runs it at other budgets (--labels=1400,5500).

Expected: not yet measured.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "minatar_space_invaders.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 5500
  return config
