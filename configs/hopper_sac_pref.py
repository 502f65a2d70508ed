"""PEBBLE on hopper: SAC (configs/hopper_sac.py) from 700 oracle labels.

  python -m rlhf_jax.train --config=configs/hopper_sac_pref.py --workdir=runs/hopper_pebble
  python experiments/label_efficiency.py --envs=hopper --learner=sac --seeds=0,1,2

Lee, Smith & Abbeel 2021 as B-Pref runs it: unsupervised pre-training on a state-entropy
reward first (50k env steps here), then SAC on the learned reward; the ensemble updates
every 20,480 env steps (B-Pref: every 20,000) with 64 Adam steps, and each update
relabels the whole replay buffer. As in configs/hopper_pref.py, the learned reward keeps
its offset (falling ends an episode) and its scale follows a slow running std; segments
are 50 steps (B-Pref's).

Measured (2-core CPU, one core per run, 2026-12-04): final eval returns 2,462 / 2,155 /
2,255 on seeds 0-2 (configs/hopper_sac.py on the true reward: 2,596 / 2,912 / 846), about
850-1,300 env steps/s; the README's PEBBLE section has the table.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "hopper_sac.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.normalize_mean = False
  config.reward.normalizer_decay = 0.999
  config.reward.update_every_env_steps = 20_480
  config.reward.train_steps = 64
  config.segments.length = 50
  config.sac.unsupervised_env_steps = 50_000
  return config
