"""PPO on the true reward of inverted_double_pendulum (spring backend), sized for a CPU.

  python -m rlhf_jax.train --config=configs/inverted_double_pendulum.py --workdir=runs/idp

Brax's published PPO settings for this task (its training notebook: unroll 5, 32
minibatches, 4 epochs, discount 0.97, reward scaling 10, entropy 1e-2) with 256 envs
instead of 2,048 and a batch of 256 instead of 1,024: on 2 CPU cores the physics
saturates the machine long before that many envs (README: throughput). Measured results:
the README's paper table (experiments/label_efficiency.py).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "inverted_double_pendulum"
  config.env.backend = "spring"
  config.total_env_steps = 10_000_000
  config.ppo.num_envs = 256
  config.ppo.batch_size = 256
  config.ppo.num_minibatches = 32
  config.ppo.unroll_length = 5
  config.ppo.num_updates_per_batch = 4
  config.ppo.discounting = 0.97
  config.ppo.entropy_cost = 1e-2
  config.ppo.reward_scaling = 10.0
  config.ppo.value_hidden_sizes = (256, 256)
  return config
