"""SAC on the true reward of walker2d (generalized backend), sized for one CPU core.

  python -m rlhf_jax.train --config=configs/walker2d_sac.py --workdir=runs/walker2d_sac
  python experiments/compare_brax_sac.py --envs=walker2d --seeds=0,1,2

Brax's published walker2d SAC settings (its training notebook: 128 envs, 32 gradient
steps per step of them on batches of 128, discount 0.997, learning rate 6e-4, reward
scaling 5, replay 8,192 to 1,048,576), run for 1M env steps instead of the published
7.9M, so that a run fits a CPU core (about 1,500 env steps/s on one core of the 2-core
CPU).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.learner = "sac"
  config.env.name = "walker2d"
  config.env.backend = "generalized"
  config.total_env_steps = 1_000_000
  config.iterations_per_chunk = 200  # 25,600 env steps per chunk
  sac = config.sac
  sac.num_envs = 128
  sac.batch_size = 128
  sac.grad_updates_per_step = 32
  sac.learning_rate = 6e-4
  sac.discount = 0.997
  sac.reward_scaling = 5.0
  sac.min_replay_size = 8192
  sac.max_replay_size = 1_048_576
  return config
