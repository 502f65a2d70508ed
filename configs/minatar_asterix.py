"""PPO on the true reward of MinAtar Asterix (pgx): configs/minatar_breakout.py's settings.

  python -m rlhf_jax.train --config=configs/minatar_asterix.py --workdir=runs/asterix

Measured (seed 0, 2026-12-07, one core of the 2-core CPU, 76 min, 5.3k env steps/s;
`python experiments/label_efficiency.py --envs=minatar_asterix --labels= --seeds=0
--resume --out=docs/minatar`): the final policy scores 31.5 on 128 episodes after 20.4M
env steps, against about 22 for pgx's published PPO at the same budget.
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "minatar_breakout.py"))
  config.env.name = "minatar-asterix"
  return config
