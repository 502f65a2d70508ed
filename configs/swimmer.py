"""PPO on the true reward of swimmer (generalized backend, its only one), sized for a CPU.

  python -m rlhf_jax.train --config=configs/swimmer.py --workdir=runs/swimmer

Brax publishes no PPO settings for swimmer. Its reward is the forward speed, which pays
off only over long stretches of a gait, so the discount is long (0.999; MuJoCo's Swimmer
is known to need 0.999-0.9999 in PPO), and each update takes many small gradient steps:
32 minibatches of 8 envs' 128-step unrolls (1,024 steps each), 10 epochs, 320 gradient
steps per 32,768 env steps, like RL Zoo's 64-step minibatches. Episodes never end early.
Measured on the 2-core CPU, seed 0, one run per core at 16.5k env steps/s (2026-12-07):
the chunks' true return passes 300 at 1.6M and levels off at 345-350 from 2.9M (MuJoCo's
Swimmer reaches about 350 with PPO at discount 0.9999); final policies of seeds 0 / 1 / 2:
348.7 / 125.0 / 267.9 (seed 1 keeps a slow gait), Brax's PPO with these settings 356.1 /
133.9 / 204.7 (experiments/compare_brax_ppo.py). The same run with 4 minibatches of
64 envs (40 gradient steps an update) reached only 51 at 3.3M; with 32 minibatches at
discount 0.9999 it swam backwards (-25 at 4.9M).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "swimmer"
  config.env.backend = "generalized"
  config.total_env_steps = 5_000_000
  config.ppo.num_envs = 64
  config.ppo.batch_size = 8
  config.ppo.num_minibatches = 32
  config.ppo.unroll_length = 128
  config.ppo.num_updates_per_batch = 10
  config.ppo.discounting = 0.999
  config.ppo.entropy_cost = 1e-3
  config.ppo.clipping_epsilon = 0.2
  config.ppo.policy_hidden_sizes = (64, 64)
  config.ppo.value_hidden_sizes = (256, 256)
  return config
