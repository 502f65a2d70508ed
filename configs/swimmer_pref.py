"""swimmer from 700 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/swimmer_pref.py --workdir=runs/swimmer_pref

configs/swimmer.py with one change: PPO optimizes the reward model learned from the
labels instead of the true reward. Episodes have a fixed length, so the learned reward is
centered as in the paper, and its scale follows a slow running std (normalizer_decay
0.999, as in configs/hopper_pref.py). Segments are 1.5 s (38 steps).

With the library's fast normalizer (decay 0.9; experiments/label_efficiency.py
--envs=swimmer, 2-core CPU, one run per core, 2026-12-07, docs/paper/normalizer_decay_0.9/
swimmer/): final policies, 700 labels 21.4 / 47.6 / 259.8 (seeds 0-2, 0.45 of the true
reward's 247.2), 350 labels 60.8 / 43.7, 1,400 labels 139.0 / 101.3 (seeds 0-1), though
the learned reward correlated 0.97-1.00 with the true one on stored segments. The slow
normalizer took seed 0 at 700 labels from chunk returns of 16-21 to 179 at 5.2M env
steps. With it (this config, same commands, 2026-12-07): 700 labels 171.6 / 72.9 / 288.8
(0.72 of the true reward), 350 labels 220.5 / 49.7, 1,400 labels 22.9 / 172.9; the README's
paper table.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "swimmer.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.normalizer_decay = 0.999
  return config
