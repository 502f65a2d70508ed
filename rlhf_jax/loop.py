"""The training loop: the one place where envs, rollouts, rewards and PPO are strung.

`make_trainer(config)` reads the config at trace time and returns pure functions:

  init(key) -> TrainState
  iteration(state) -> (state, metrics)      one rollout + one PPO update
  chunk(state) -> (state, metrics)          `iterations_per_chunk` iterations in a
                                            `lax.scan`, jitted with the state donated

Only the metrics of a chunk reach the host.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp

from rlhf_jax import config as config_lib
from rlhf_jax import envs, ppo, rollout
from rlhf_jax.types import Transition


@flax.struct.dataclass
class TrainState:
  ppo: ppo.PPOState
  env_state: Any
  key: jax.Array
  iteration: jax.Array  # int32 []; env steps = iteration * env_steps_per_iteration


class Trainer(NamedTuple):
  init: Callable
  iteration: Callable
  chunk: Callable
  env: Any
  networks: Any
  env_steps_per_iteration: int


def true_reward(transitions: Transition) -> jax.Array:
  return transitions.true_reward


REWARD_FUNCTIONS = {"true": true_reward}


def episode_metrics(transitions: Transition) -> dict:
  """Sums of finished episodes' true returns and their count (summed again per chunk)."""
  ended = 1.0 - transitions.discount
  return {
    "episode_return_sum": jnp.sum(ended * transitions.episode_return),
    "episodes": jnp.sum(ended),
  }


def make_trainer(config) -> Trainer:
  config_lib.validate(config)
  env = envs.make_env(
    config.env.name,
    config.env.backend,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
  )
  ppo_config = config.ppo
  networks = ppo.make_networks(env.observation_size, env.action_size, ppo_config)
  optimizer = ppo.make_optimizer(ppo_config)
  update = ppo.make_update_fn(networks, optimizer, ppo_config)
  reward_fn = REWARD_FUNCTIONS[config.reward.source]
  num_unrolls = config_lib.num_unrolls_per_iteration(config)
  steps_per_iteration = config_lib.env_steps_per_iteration(config)

  def init(key) -> TrainState:
    key_ppo, key_env, key_loop = jax.random.split(key, 3)
    env_state = env.reset(jax.random.split(key_env, ppo_config.num_envs))
    ppo_state = ppo.init_state(key_ppo, networks, optimizer, env.observation_size)
    return TrainState(ppo_state, env_state, key_loop, jnp.zeros((), jnp.int32))

  def iteration(state: TrainState):
    key, key_rollout, key_update = jax.random.split(state.key, 3)
    params = state.ppo.params

    def policy(obs, key_sample):
      return ppo.sample_actions(networks, state.ppo.normalizer, params.policy, obs, key_sample)

    unroll = rollout.make_rollout(env, policy, ppo_config.unroll_length)
    env_state, transitions = jax.lax.scan(
      unroll, state.env_state, jax.random.split(key_rollout, num_unrolls)
    )
    # [U, T, N, ...] -> [T, U * N, ...]: sequences of T steps, batched along axis 1.
    transitions = jax.tree.map(
      lambda x: jnp.swapaxes(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:]), transitions
    )
    transitions = transitions._replace(reward=reward_fn(transitions))
    ppo_state, ppo_metrics = update(state.ppo, transitions, key_update)

    metrics = {
      **ppo_metrics,
      **episode_metrics(transitions),
      "true_reward_per_step": jnp.mean(transitions.true_reward),
      "reward_per_step": jnp.mean(transitions.reward),
    }
    return TrainState(ppo_state, env_state, key, state.iteration + 1), metrics

  def chunk(state: TrainState):
    state, metrics = jax.lax.scan(
      lambda s, _: iteration(s), state, None, length=config.iterations_per_chunk
    )
    summed = {"episode_return_sum", "episodes"}
    return state, {k: jnp.sum(v) if k in summed else jnp.mean(v) for k, v in metrics.items()}

  return Trainer(
    init=jax.jit(init),
    iteration=iteration,
    chunk=jax.jit(chunk, donate_argnums=0),
    env=env,
    networks=networks,
    env_steps_per_iteration=steps_per_iteration,
  )


def chunk_summary(metrics: dict) -> dict:
  """Host side: turns a chunk's device metrics into plain floats with `true_return`.

  `true_return` is the mean true return of the episodes that ended in the chunk, or
  None when none ended.
  """
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  episodes = metrics.pop("episodes")
  return_sum = metrics.pop("episode_return_sum")
  metrics["episodes"] = int(episodes)
  metrics["true_return"] = return_sum / episodes if episodes else None
  return metrics
