"""PPO on the true reward of MinAtar Seaquest (pgx): configs/minatar_breakout.py's settings.

  python -m rlhf_jax.train --config=configs/minatar_seaquest.py --workdir=runs/seaquest

Expected: not yet measured (pgx's published PPO reaches the return that
configs/minatar_breakout.py's docstring quotes at the same 20M env steps).
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "minatar_breakout.py"))
  config.env.name = "minatar-seaquest"
  return config
