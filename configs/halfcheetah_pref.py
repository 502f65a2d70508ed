"""halfcheetah from 700 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/halfcheetah_pref.py --workdir=runs/halfcheetah_pref

configs/halfcheetah.py with one change: PPO optimizes the reward model learned from the
labels instead of the true reward. Episodes have a fixed length, so the learned reward is
centered as in the paper. Segments are 1.5 s (30 steps). Measured (experiments/
label_efficiency.py --envs=halfcheetah --labels=700, 2026-12-06/07, one core of the 2-core
CPU each, about 10k env steps/s): final policies 2,674 / 3,983 / 4,155 on 128 episodes
(seeds 0-2, mean 3,604) against the true reward's 3,769 / 3,854 / 4,537 (4,054): 0.89.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "halfcheetah.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  # Few, large iterations (163,840 env steps each): the reward model needs more steps in each.
  config.reward.train_steps = 32
  return config
