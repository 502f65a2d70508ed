"""Rollouts: run a policy in a batched env for T steps with one `lax.scan`."""

import jax

from rlhf_jax.types import Transition


def strip_weak_type(x: jax.Array) -> jax.Array:
  return jax.lax.convert_element_type(x, x.dtype) if x.weak_type else x


def make_rollout(env, policy, unroll_length: int):
  """Returns rollout(env_state, key) -> (env_state, Transition [T, N, ...]).

  `policy(obs, key) -> (action, raw_action, log_prob)` acts on the batch of N envs.
  `reward` is filled with the true reward; the caller replaces it with the reward PPO
  should optimize.
  """

  def step(carry, key):
    env_state = carry
    action, raw_action, log_prob = policy(env_state.obs, key)
    # Brax's wrappers return weakly typed flags; strong types keep the scan carry (and the
    # jitted chunk's signature) fixed, so the chunk compiles once.
    next_state = jax.tree.map(strip_weak_type, env.step(env_state, action))
    transition = Transition(
      obs=env_state.obs,
      action=action,
      raw_action=raw_action,
      log_prob=log_prob,
      reward=next_state.reward,
      true_reward=next_state.reward,
      discount=1.0 - next_state.done,
      truncation=next_state.info["truncation"],
      next_obs=next_state.obs,
      episode_return=next_state.info["episode_metrics"]["sum_reward"],
      qpos=env_state.pipeline_state.q,
    )
    return next_state, transition

  def rollout(env_state, key):
    return jax.lax.scan(step, env_state, jax.random.split(key, unroll_length))

  return rollout
