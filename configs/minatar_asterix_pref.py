"""MinAtar Asterix from 5,500 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/minatar_asterix_pref.py --workdir=runs/asterix_pref

configs/minatar_asterix.py with the preference settings of configs/minatar_breakout_pref.py
(its `reward` and `queries`: 5,500 oracle labels, conv reward members, 25-step segments).

Expected: not yet measured.
"""

import os

from rlhf_jax import config as config_lib

HERE = os.path.dirname(__file__)


def get_config():
  config = config_lib.load(os.path.join(HERE, "minatar_asterix.py"))
  preferences = config_lib.load(os.path.join(HERE, "minatar_breakout_pref.py"))
  config.reward = preferences.reward
  config.queries = preferences.queries
  return config
