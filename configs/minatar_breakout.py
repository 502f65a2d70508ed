"""PPO on the true reward of MinAtar Breakout (pgx), categorical policy on a conv torso.

  python -m rlhf_jax.train --config=configs/minatar_breakout.py --workdir=runs/breakout

Hyperparameters are common MinAtar PPO settings, not tuned here:
64 envs x 128 steps an iteration in 8 minibatches of whole sequences, 4 epochs, Adam 5e-4
with the gradient norm clipped at 0.5, γ 0.99, λ 0.95, clip 0.2, entropy 0.01; frames
are not normalized (they are 0/1). MinAtar has no time limit: episodes are cut at 10,000
steps only so that none runs forever.

The budget is pgx's published PPO baseline's (examples/minatar-ppo: 20M env steps; its
figures' final evaluation returns are about 50 on Breakout, 22 on Asterix, 63 on Freeway,
54 on Seaquest and 145 on Space Invaders). The other games' configs
(`configs/minatar_<game>.py`) are this one with another `env.name`; `_pref` adds the
learned reward (configs/minatar_breakout_pref.py).

Measured (experiments/label_efficiency.py --envs=minatar_breakout --labels= --seeds=0
--out=docs/minatar, 2026-12-06, one core of the 2-core CPU, shared part of the time):
seed 0's final policy scores 37.5 on 128 episodes (actions sampled, as pgx's evaluation
does) against pgx's ~50, 0.75x; its training episodes' return climbs 15 (2M env steps),
20 (8M), 28 (14M), 40 (18M), still rising; 5,777 env steps/s over the run.
"""

from rlhf_jax.config import default_config


def get_config():
  config = default_config()
  config.env.name = "minatar-breakout"
  config.env.backend = "pgx"  # ignored for MinAtar games; says where the game comes from
  config.env.episode_length = 10_000
  config.total_env_steps = 20_000_000
  ppo = config.ppo
  ppo.num_envs = 64
  ppo.unroll_length = 128
  ppo.batch_size = 8
  ppo.num_minibatches = 8
  ppo.num_updates_per_batch = 4
  ppo.learning_rate = 5e-4
  ppo.max_grad_norm = 0.5
  ppo.discounting = 0.99
  ppo.gae_lambda = 0.95
  ppo.clipping_epsilon = 0.2
  ppo.entropy_cost = 0.01
  ppo.normalize_observations = False
  ppo.policy_hidden_sizes = (128,)
  ppo.value_hidden_sizes = (128,)
  return config
