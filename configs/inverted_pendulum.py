"""PPO on the true reward of inverted_pendulum: the quick CPU run.

  python -m rlhf_jax.train --config=configs/inverted_pendulum.py --workdir=runs/ip

Expected on a 2-core CPU: under a minute; the true return (mean of the episodes that end
in a chunk; 1000 is the cap) climbs from about 40 to above 800 by 2M env steps.
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "inverted_pendulum"
  config.env.backend = "spring"
  config.env.episode_length = 1000
  config.total_env_steps = 2_000_000
  config.ppo.value_hidden_sizes = (64, 64)
  config.ppo.reward_scaling = 0.1
  return config
