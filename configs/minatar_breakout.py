"""PPO on the true reward of MinAtar Breakout (pgx), categorical policy on a conv torso.

  python -m rlhf_jax.train --config=configs/minatar_breakout.py --workdir=runs/breakout

pgx's published PPO settings for MinAtar (its examples/minatar-ppo: the budget and every
hyperparameter): 4,096 envs x 128 steps an iteration, GAE (γ 0.99, λ 0.95) computed once
per iteration, then 3 epochs of 128 minibatches of 4,096 single steps shuffled across envs
and time (`ppo.minibatches = "transitions"`), clip 0.2 for the policy and the value,
entropy 0.01, Adam 3e-4 with the gradient norm clipped at 0.5, and pgx's network (a 2x2
conv of 32 filters, 2x2 average pooling, dense 64, tanh layers of 64 and 64;
`ppo.torso = "pgx"`, one tower each for policy and value where pgx shares the torso).
Frames are not normalized (they are 0/1). MinAtar has no time limit: episodes are cut at
10,000 steps only so that none runs forever. pgx's figures' final evaluation returns at
20M env steps are about 50 on Breakout, 22 on Asterix, 63 on Freeway, 54 on Seaquest and
145 on Space Invaders. The other games' configs (`configs/minatar_<game>.py`) are this one
with another `env.name`; `_pref` adds the learned reward (configs/minatar_breakout_pref.py).

Measured (seed 0, 2026-12-07, one core of the 2-core CPU, 6.0-6.6k env steps/s, 55 min):
the final policy scores 51.1 on 128 episodes (actions sampled, as pgx's evaluation does)
against pgx's ~50; the training episodes' return is 3.7 at 3.7M env steps, 13.6 at 11M,
28.1 at 18.4M, still rising steeply, as pgx's curves do. The earlier settings (64 envs x
128 steps, 8 minibatches of whole 128-step sequences, 4 epochs, Adam 5e-4, MinAtar's conv
16 3x3 + dense 128) scored 37.5 (0.75x) with a faster start (20 at 5M env steps) and 5.8k
env steps/s (docs/minatar/earlier_settings/, README).
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "minatar-breakout"
  config.env.backend = "pgx"  # ignored for MinAtar games; says where the game comes from
  config.env.episode_length = 10_000
  config.total_env_steps = 20_000_000
  ppo = config.ppo
  ppo.num_envs = 4096
  ppo.unroll_length = 128
  ppo.minibatches = "transitions"
  ppo.num_minibatches = 128  # of 4,096 steps each
  ppo.batch_size = 32  # x num_minibatches = one unroll of all envs an iteration
  ppo.num_updates_per_batch = 3
  ppo.learning_rate = 3e-4
  ppo.max_grad_norm = 0.5
  ppo.discounting = 0.99
  ppo.gae_lambda = 0.95
  ppo.clipping_epsilon = 0.2
  ppo.value_clipping = 0.2
  ppo.entropy_cost = 0.01
  ppo.normalize_observations = False
  ppo.torso = "pgx"
  ppo.policy_hidden_sizes = (64, 64)
  ppo.value_hidden_sizes = (64, 64)
  config.iterations_per_chunk = 1  # 524,288 env steps
  return config
