"""hopper from 700 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/hopper_pref.py --workdir=runs/hopper_pref

configs/hopper.py with one change: PPO optimizes the reward model learned from the labels
instead of the true reward. Falling ends an episode, so the learned reward keeps the
offset the labels teach (not centered), and its scale follows a slow running std
(normalizer_decay 0.999; with the library's 0.9 it followed the converged policy's
rollouts and the normalized reward grew until hopping collapsed: 700 labels, seed 2,
eval 1,066 with 0.9 against 2,915 with 0.999, 2026-12-03, true reward 3,064). Half of
the labels are asked before PPO starts (queries.initial_fraction 0.5, the library's
0.25): the reward model then knows from the start that the alive bonus outweighs the
cost of moving (the learned reward's offset is what hopping needs, see the README), and
700-label seeds 0 / 1 / 2 reached 3,234 / 3,290 / 2,770 (mean 3,098) against 1,906 /
3,195 / 2,915 (2,672) with 0.25, true reward 3,394 / 3,510 / 3,064 (2026-12-05, 2-core
CPU, evaluation.py's 128 episodes). Expected on a 2-core CPU: see
experiments/label_efficiency.py's table in the README.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "hopper.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.normalize_mean = False
  config.reward.normalizer_decay = 0.999
  config.queries.initial_fraction = 0.5
  # 1.5 s would be 188 steps at hopper's dt of 0.008 s; the paper's segments were 15-60
  # steps, and shorter ones make each label cheaper to learn from.
  config.segments.length = 60
  # The library default (4 reward-model steps per iteration) is kept: with the earlier
  # spring config, 16 learned no better from 700 labels (return ratio 1.01 against 1.03
  # with 4) and cost about 7% of the loop's throughput.
  return config
