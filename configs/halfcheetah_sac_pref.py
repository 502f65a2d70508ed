"""PEBBLE on halfcheetah: SAC (configs/halfcheetah_sac.py) from 700 oracle labels.

  python -m rlhf_jax.train --config=configs/halfcheetah_sac_pref.py --workdir=runs/hc_pebble
  python experiments/label_efficiency.py --envs=halfcheetah --learner=sac --seeds=0,1,2

As configs/hopper_sac_pref.py (50k env steps of pre-training, an ensemble update with 64
Adam steps and a relabeling every 20,480 env steps, 50-step segments), except that
episodes have a fixed length: the learned reward is centered, as in the paper. Not yet
measured.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "halfcheetah_sac.py"))
  config.reward.source = "learned"
  config.queries.total_labels = 700
  config.reward.update_every_env_steps = 20_480
  config.reward.train_steps = 64
  config.segments.length = 50
  config.sac.unsupervised_env_steps = 50_000
  return config
