"""inverted_pendulum from 100 preference labels of a simulated (oracle) teacher.

  python -m rlhf_jax.train --config=configs/inverted_pendulum_pref.py --workdir=runs/ip_pref

The same run as configs/inverted_pendulum.py, except that PPO optimizes the reward model
learned from the labels. Expected on a 2-core CPU: see the docstring's numbers below.
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
  config.reward.source = "learned"
  config.queries.total_labels = 100
  # Falling ends an episode early; the learned offset is the reward for staying up.
  config.reward.normalize_mean = False
  return config
