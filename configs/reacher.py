"""PPO on the true reward of reacher (spring backend), sized for a CPU.

  python -m rlhf_jax.train --config=configs/reacher.py --workdir=runs/reacher

Rewards are negative (distance to the target plus control cost); higher is better.
Expected on a 2-core CPU: see the README's table (experiments/compare_brax_ppo.py).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "reacher"
  config.env.backend = "spring"
  config.env.action_repeat = 4
  config.total_env_steps = 8_000_000
  config.iterations_per_chunk = 2
  config.ppo.num_envs = 256
  config.ppo.batch_size = 256
  config.ppo.num_minibatches = 8
  config.ppo.unroll_length = 50
  config.ppo.num_updates_per_batch = 8
  config.ppo.discounting = 0.95
  config.ppo.entropy_cost = 1e-3
  config.ppo.reward_scaling = 5.0
  config.ppo.value_hidden_sizes = (256, 256)
  return config
