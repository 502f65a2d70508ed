"""PPO on the true reward of ant (spring backend), sized for a CPU; used by
experiments/benchmark.py (not yet trained to a reference return here).

  python -m rlhf_jax.train --config=configs/ant.py --workdir=runs/ant
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "ant"
  config.env.backend = "spring"
  config.total_env_steps = 10_000_000
  config.iterations_per_chunk = 5
  config.ppo.num_envs = 256
  config.ppo.batch_size = 256
  config.ppo.num_minibatches = 8
  config.ppo.unroll_length = 20
  config.ppo.num_updates_per_batch = 4
  config.ppo.discounting = 0.97
  config.ppo.entropy_cost = 1e-2
  config.ppo.reward_scaling = 10.0
  config.ppo.value_hidden_sizes = (256, 256)
  return config
