"""The learners the loop can string: PPO (on-policy) and SAC (off-policy, replay buffer).

`make_learner(config, env, shard, rings)` reads `config.learner` and returns a `Learner`, the few
functions `loop.py` needs, whatever the algorithm:

  init(key) -> agent                         the learner's whole state, a pytree
  act(agent, obs, key) -> (action, raw_action, log_prob)
  update(agent, transitions [U, T, N], key) -> (agent, metrics)
                                             transitions carry the reward to learn from
  relabel(agent, reward_fn, when) -> agent   SAC: where `when`, every stored transition's
                                             reward becomes reward_fn(obs, action,
                                             next_obs) (PEBBLE); None for PPO, which
                                             keeps no old steps
  brax_params(agent) -> tuple                the parameters Brax's inference function takes
  make_inference_fn                          Brax's, for `evaluation.evaluate`

and the rollout shape of one iteration: `num_unrolls` unrolls of `unroll_length` steps of
`num_envs` envs.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
from brax.training.acme import running_statistics
from brax.training.agents.ppo import networks as brax_ppo_networks
from brax.training.agents.sac import networks as brax_sac_networks

from rlhf_jax import config as config_lib
from rlhf_jax import envs, policy, ppo, sac
from rlhf_jax.types import Transition

LEARNERS = config_lib.LEARNERS
RELABEL_BATCH = 16_384  # replay rows the reward model takes at once when relabeling


class Learner(NamedTuple):
  networks: Any
  init: Callable
  act: Callable
  update: Callable
  relabel: Callable | None
  brax_params: Callable
  make_inference_fn: Callable
  num_envs: int
  num_unrolls: int
  unroll_length: int


def make_learner(config, env, shard=lambda tree, axis: tree, rings: int = 1) -> Learner:
  """`shard`: sharding.data_splitter of the mesh; `rings`: the size of its `data` axis,
  the number of rings of SAC's replay buffer (one per device)."""
  if config.learner == "ppo":
    return _ppo(config, env, shard)
  if config.learner == "sac":
    return _sac(config, env, shard, rings)
  raise ValueError(f"config.learner={config.learner!r} is unknown; choose one of {LEARNERS}.")


def _ppo(config, env, shard) -> Learner:
  ppo_config = config.ppo
  networks = ppo.make_networks(  # MinAtar's frames: a conv torso and a categorical policy
    env.observation_size, env.action_size, ppo_config, envs.frame_shape(env)
  )
  optimizer = ppo.make_optimizer(ppo_config)
  update_fn = ppo.make_update_fn(networks, optimizer, ppo_config, shard)

  def as_ppo_batch(x):  # [U, T, N, ...] -> [T, U * N, ...]: sequences of T steps
    return jnp.swapaxes(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:])

  return Learner(
    networks=networks,
    init=lambda key: ppo.init_state(key, networks, optimizer, env.observation_size),
    act=lambda agent, obs, key: policy.sample_actions(
      networks, agent.normalizer, agent.params.policy, obs, key
    ),
    update=lambda agent, transitions, key: update_fn(
      agent, jax.tree.map(as_ppo_batch, transitions), key
    ),
    relabel=None,
    brax_params=lambda agent: (agent.normalizer, agent.params.policy, agent.params.value),
    make_inference_fn=brax_ppo_networks.make_inference_fn,
    num_envs=ppo_config.num_envs,
    num_unrolls=config_lib.num_unrolls_per_iteration(config),
    unroll_length=ppo_config.unroll_length,
  )


@flax.struct.dataclass
class SACAgent:
  state: sac.SACState
  replay: sac.ReplayBuffer
  gradient_steps: jax.Array  # int32 []
  env_steps: jax.Array  # int32 []: stored so far (unsupervised pre-training counts them)


def _sac(config, env, shard, rings: int) -> Learner:
  if envs.is_discrete(env):
    raise ValueError(
      f"config.learner='sac' needs continuous actions; {config.env.name!r} has discrete "
      "ones: use config.learner='ppo'."
    )
  sac_config = config.sac
  networks = sac.make_networks(env.observation_size, env.action_size, sac_config)
  optimizers = sac.make_optimizers(sac_config)
  update_fn = sac.make_update_fn(networks, optimizers, sac_config, env.action_size)
  steps_per_update = sac_config.grad_updates_per_step * sac_config.unroll_length

  def init(key) -> SACAgent:
    obs = jnp.zeros((env.observation_size,), jnp.float32)
    action = jnp.zeros((env.action_size,), jnp.float32)
    scalar = jnp.zeros((), jnp.float32)
    example = Transition(
      obs=obs,
      action=action,
      raw_action=action,
      log_prob=scalar,
      reward=scalar,
      true_reward=scalar,
      discount=scalar,
      truncation=scalar,
      next_obs=obs,
      episode_return=scalar,
      qpos=scalar[None],  # only segments are rendered: a placeholder (orbax saves no size 0)
    )
    state = sac.init_state(key, networks, optimizers, env.observation_size)
    replay = sac.init_buffer(example, sac_config.max_replay_size, rings)
    zero = jnp.zeros((), jnp.int32)
    return SACAgent(state, replay, zero, zero)

  def update(agent: SACAgent, transitions: Transition, key):
    """Stores the iteration's steps; once the buffer holds `min_replay_size`, takes
    `grad_updates_per_step` gradient steps per env step of each env (Brax's ratio).
    During the first `unsupervised_env_steps` the critics learn the state-entropy reward
    instead; when they end, the critics start afresh (PEBBLE), the actor goes on."""
    transitions = transitions._replace(qpos=jnp.zeros(transitions.discount.shape + (1,)))
    state = agent.state
    if sac_config.normalize_observations:
      state = state.replace(normalizer=running_statistics.update(state.normalizer, transitions.obs))
    replay = sac.add(agent.replay, transitions)
    env_steps = agent.env_steps + transitions.discount.size * config.env.action_repeat
    key_sample, key_update, key_reference, key_reset = jax.random.split(key, 4)
    unsupervised = sac_config.unsupervised_env_steps
    if unsupervised:  # the critics' fresh start, in the iteration that ends pre-training
      ends = (agent.env_steps < unsupervised) & (env_steps >= unsupervised)
      state = jax.lax.cond(ends, functools.partial(fresh_critics, key_reset), lambda s: s, state)

    def train(state):
      batch = sac.sample(replay, key_sample, (steps_per_update, sac_config.batch_size))
      batch = shard(batch, 1)  # each device's share comes from its own ring
      if unsupervised:  # the k-NN reward costs more than the gradient steps: only then
        batch = jax.lax.cond(
          agent.env_steps < unsupervised, with_entropy_reward, lambda b: b, batch
        )
      return update_fn(state, batch, key_update)

    def with_entropy_reward(batch: Transition) -> Transition:
      reference = sac.sample(replay, key_reference, (sac_config.entropy_reference,)).obs
      intrinsic = jax.vmap(
        lambda obs: sac.state_entropy_reward(
          obs, jnp.concatenate([obs, reference]), sac_config.entropy_k
        )
      )(batch.obs)
      return batch._replace(reward=intrinsic)

    def wait(state):
      _, shapes = jax.eval_shape(train, state)
      return state, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    ready = replay.size >= sac_config.min_replay_size
    state, metrics = jax.lax.cond(ready, train, wait, state)
    steps = agent.gradient_steps + jnp.where(ready, steps_per_update, 0)
    metrics = dict(metrics, replay_size=replay.size.astype(jnp.float32))
    return SACAgent(state, replay, steps, env_steps), metrics

  def fresh_critics(key, state: sac.SACState) -> sac.SACState:
    q = networks.q_network.init(key)
    params = state.params._replace(q=q, target_q=q)
    return state.replace(params=params, q_optimizer_state=optimizers.q.init(q))

  def relabel(agent: SACAgent, reward_fn, when=True) -> SACAgent:
    """The rows stored so far, RELABEL_BATCH rows of each ring at a time (the last batch
    starts earlier, where the ring's end cuts it: some rows get the same reward twice);
    none where `when` (a traced bool) is false. The columns the reward reads ride in the
    loop's carry, unchanged: closed over, XLA's CPU backend copied them (the whole
    buffer) in every iteration, as it did for a lax.cond over the agent."""
    data = agent.replay.data
    rings, capacity = data.reward.shape
    batch = min(RELABEL_BATCH, capacity)

    def relabel_batch(index, carry):
      reward, *rows = carry
      start = jnp.minimum(index * batch, capacity - batch)
      batch_rows = [jax.lax.dynamic_slice_in_dim(x, start, batch, axis=1) for x in rows]
      new = reward_fn(*batch_rows)  # [D, batch]
      return (jax.lax.dynamic_update_slice_in_dim(reward, new, start, axis=1), *rows)

    stored = agent.replay.size // rings
    num_batches = jnp.where(when, (stored + batch - 1) // batch, 0)
    carry = (data.reward, data.obs, data.action, data.next_obs)
    reward, obs, action, next_obs = jax.lax.fori_loop(0, num_batches, relabel_batch, carry)
    data = data._replace(reward=reward, obs=obs, action=action, next_obs=next_obs)
    return agent.replace(replay=agent.replay._replace(data=data))

  return Learner(
    networks=networks,
    init=init,
    act=lambda agent, obs, key: policy.sample_actions(
      networks, agent.state.normalizer, agent.state.params.policy, obs, key
    ),
    update=update,
    relabel=relabel,
    brax_params=lambda agent: (agent.state.normalizer, agent.state.params.policy),
    make_inference_fn=brax_sac_networks.make_inference_fn,
    num_envs=sac_config.num_envs,
    num_unrolls=1,
    unroll_length=sac_config.unroll_length,
  )


def learned_parts(agent) -> dict:
  """The learned quantities of a learner's state, by name (what the NaN guard watches)."""
  if isinstance(agent, SACAgent):
    return {
      "policy params": agent.state.params.policy,
      "q params": agent.state.params.q,
      "temperature": agent.state.params.log_alpha,
      "observation normalizer": agent.state.normalizer,
    }
  return {
    "policy params": agent.params.policy,
    "value params": agent.params.value,
    "observation normalizer": agent.normalizer,
  }
