"""PPO on the true reward of ant (spring backend), sized for a CPU.

  python -m rlhf_jax.train --config=configs/ant.py --workdir=runs/ant

Brax's published PPO settings for ant (discount 0.97, entropy 1e-2, reward scaling 10, 4
epochs) with 256 envs unrolled 20 steps and 8 minibatches of 256 instead of 4,096 envs,
unrolls of 5 and 32 minibatches of 2,048, and 10M env steps instead of 50M. Measured on
the 2-core CPU, one run per core at about 16k env steps/s (experiments/label_efficiency.py
--envs=ant --labels= --seeds=0, 2026-12-06, 10 min 30 s): the chunks' true return passes
3,000 at 6.3M env steps and is 5,102 at 9.6M, still rising; the final policy scores 5,346
on 128 evaluation episodes. Also used by experiments/benchmark.py.
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
