"""PEBBLE on walker2d: SAC (configs/walker2d_sac.py) from 700 oracle labels.

  python -m rlhf_jax.train --config=configs/walker2d_sac_pref.py --workdir=runs/walker2d_pebble
  python experiments/label_efficiency.py --envs=walker2d --learner=sac --seeds=0,1,2

Lee, Smith & Abbeel 2021 as B-Pref runs it: unsupervised pre-training on a state-entropy
reward first (50k env steps here), then SAC on the learned reward; the ensemble updates
every 20,480 env steps (B-Pref: every 20,000) with 64 Adam steps, and each update
relabels the whole replay buffer. As in configs/walker2d_pref.py, the learned reward keeps
its offset (falling ends an episode) and its scale follows a slow running std; segments
are 50 steps (B-Pref's). Expected on a 2-core CPU: see the README's PEBBLE section.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "walker2d_sac.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.normalize_mean = False
  config.reward.normalizer_decay = 0.999
  config.reward.update_every_env_steps = 20_480
  config.reward.train_steps = 64
  config.segments.length = 50
  config.sac.unsupervised_env_steps = 50_000
  return config
