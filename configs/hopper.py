"""PPO on the true reward of hopper (spring backend), sized for a CPU.

  python -m rlhf_jax.train --config=configs/hopper.py --workdir=runs/hopper

Expected on a 2-core CPU: see the README's table (experiments/compare_brax_ppo.py).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "hopper"
  config.env.backend = "spring"
  config.total_env_steps = 3_000_000
  config.ppo.num_envs = 256
  config.ppo.batch_size = 256
  config.ppo.num_minibatches = 8
  config.ppo.unroll_length = 20
  config.ppo.num_updates_per_batch = 4
  config.ppo.value_hidden_sizes = (256, 256)
  return config
