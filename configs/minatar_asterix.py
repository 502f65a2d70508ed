"""PPO on the true reward of MinAtar Asterix (pgx): configs/minatar_breakout.py's settings.

  python -m rlhf_jax.train --config=configs/minatar_asterix.py --workdir=runs/asterix

Expected: not yet measured (pgx's published PPO reaches the return that
configs/minatar_breakout.py's docstring quotes at the same 20M env steps).
"""

import os

from rlhf_jax import config as config_lib


def get_config():
  config = config_lib.load(os.path.join(os.path.dirname(__file__), "minatar_breakout.py"))
  config.env.name = "minatar-asterix"
  return config
