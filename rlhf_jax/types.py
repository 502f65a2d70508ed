"""Records that flow through the training loop (pytrees of arrays)."""

from typing import NamedTuple

import jax


class Transition(NamedTuple):
  """One env step of a batch of envs; a rollout stacks them as [T, N, ...].

  `reward` is what PPO optimizes (chosen by `config.reward.source`); `true_reward` is
  the environment's own reward, always kept beside it. `discount` is 0 where an episode
  ended (terminated or cut off); `truncation` is 1 where it was cut off at the episode
  length rather than terminated. `episode_return` holds the finished episode's true
  return at steps where `discount == 0` and is meaningless elsewhere.
  """

  obs: jax.Array  # float32 [..., obs_size] (MinAtar: uint8 0/1 frames)
  action: jax.Array  # float32 [..., action_size], as sent to the env (after tanh)
  raw_action: jax.Array  # float32 [..., action_size], before tanh
  log_prob: jax.Array  # float32 [...], of raw_action under the behaviour policy
  reward: jax.Array  # float32 [...]
  true_reward: jax.Array  # float32 [...]
  discount: jax.Array  # float32 [...]
  truncation: jax.Array  # float32 [...]
  next_obs: jax.Array  # as obs
  episode_return: jax.Array  # float32 [...]
  qpos: jax.Array  # float32 [..., q_size]: the simulator's positions at `obs` (to render)


class Segment(NamedTuple):
  """A stretch of at most K consecutive steps of one episode; a batch stacks them [S, K].

  Steps past the episode's end are padding with `mask == 0`. `true_reward` is for the
  teacher and for diagnostics only; the reward model never reads it. `qpos` is what a
  renderer needs to show the segment to a person (rlhf_jax/labeling/render.py).
  """

  obs: jax.Array  # float32 [..., K, obs_size] (MinAtar: uint8)
  action: jax.Array  # float32 [..., K, action_size]
  next_obs: jax.Array  # as obs
  true_reward: jax.Array  # float32 [..., K]
  mask: jax.Array  # float32 [..., K], 1 for steps of the episode, 0 for padding
  qpos: jax.Array  # float32 [..., K, q_size]: the simulator's positions, to re-render it
