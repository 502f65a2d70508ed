"""swimmer from 700 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/swimmer_pref.py --workdir=runs/swimmer_pref

configs/swimmer.py with one change: PPO optimizes the reward model learned from the
labels instead of the true reward. Episodes have a fixed length, so the learned reward is
centered as in the paper. Segments are 1.5 s (38 steps).

Measured (experiments/label_efficiency.py --envs=swimmer, 2-core CPU, one run per core,
2026-12-07): final policies, 700 labels 21.4 / 47.6 / 259.8 (seeds 0-2, 0.45 of the true
reward's 247.2), 350 labels 60.8 / 43.7, 1,400 labels 139.0 / 101.3 (seeds 0-1), still
climbing at 5.2M env steps, though the learned reward correlates 0.97-1.00 with the true
one on stored segments. Not yet tried here: the slow normalizer (reward.normalizer_decay
0.999) that held the other tasks' preference runs.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "swimmer.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  return config
