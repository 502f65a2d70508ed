"""PPO on the true reward of inverted_pendulum: the quick CPU run.

  python -m rlhf_jax.train --config=configs/inverted_pendulum.py --workdir=runs/ip

Expected on a 2-core CPU: about 1 minute, true return above 800 (out of 1000).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "inverted_pendulum"
  config.env.backend = "spring"
  config.total_env_steps = 1_000_000
  return config
