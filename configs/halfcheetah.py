"""PPO on the true reward of halfcheetah (spring backend), sized for a CPU.

  python -m rlhf_jax.train --config=configs/halfcheetah.py --workdir=runs/halfcheetah

Brax's published PPO settings for this task (its training notebook: unroll 20, 32
minibatches, 8 epochs, discount 0.95, reward scaling 1, entropy 1e-3) with 256 envs and a
batch of 256 instead of 2,048 and 512, and 20M env steps instead of 50M (the CPU budget).
Measured results: the README's paper table (experiments/label_efficiency.py).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "halfcheetah"
  config.env.backend = "spring"
  config.total_env_steps = 20_000_000
  config.iterations_per_chunk = 4
  config.ppo.num_envs = 256
  config.ppo.batch_size = 256
  config.ppo.num_minibatches = 32
  config.ppo.unroll_length = 20
  config.ppo.num_updates_per_batch = 8
  config.ppo.discounting = 0.95
  config.ppo.entropy_cost = 1e-3
  config.ppo.reward_scaling = 1.0
  config.ppo.value_hidden_sizes = (256, 256)
  return config
