"""MinAtar Breakout from 5,500 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/minatar_breakout_pref.py --workdir=runs/breakout_pref

configs/minatar_breakout.py with PPO on the reward learned from the labels: the ensemble's
members are conv nets over the frame (and the one-hot action), segments are 25 steps (the
paper's Atari clips), and 5,500 labels is the paper's Atari budget, all kept for training
(queries.buffer_size). The reward model trains every 32,768 env steps (4 iterations)
rather than every iteration: its conv members cost more per labelled pair than MLPs, and
on the 2-core CPU (2026-12-06, one iteration's parts timed alone, shared with two other
runs) 4 reward-model steps took 840 ms against PPO's 1,080 ms rollout and update; with
the updates spread, the loop's cost beside PPO's falls from about 1.3 s to 0.6 s an
iteration. The other games' `_pref` configs take this one's `reward` and `queries`.
experiments/label_efficiency.py runs it at other budgets (--labels=1400,5500).

Expected: not yet measured.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "minatar_breakout.py"))
  config.reward.source = "learned"
  config.reward.update_every_env_steps = 32_768
  config.queries.total_labels = 5500
  config.queries.buffer_size = 5500
  return config
