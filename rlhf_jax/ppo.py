"""PPO (Schulman et al. 2017, arXiv 1707.06347): networks, losses and the update step.

The networks, the tanh-normal action distribution, the running observation statistics
and GAE come from `brax.training`, so parameters are interchangeable with those of
`brax.training.agents.ppo.train`. For discrete actions on frames (MinAtar) the networks are
a categorical policy and conv torsos instead (rlhf_jax/categorical.py). What is ours: the
loss on time-major batches, the minibatch epochs (of whole sequences as Brax's, or of
single steps with GAE computed once and clipped values as PureJaxRL's and pgx's:
`ppo.minibatches`), and a reward that is whatever the caller put in `Transition.reward`.

Everything here is pure; jit it at the call site.
"""

import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from brax.training.acme import running_statistics
from brax.training.agents.ppo import losses as brax_ppo_losses
from brax.training.agents.ppo import networks as brax_ppo_networks
from flax import linen

from rlhf_jax import categorical, policy, sharding
from rlhf_jax.types import Transition

# GAE over time-major [T, B] arrays. Returns the λ-returns (value targets) and, as the
# policy's advantage, Brax's one-step advantage on them: r_t + γ G^λ_{t+1} - V(s_t).
compute_gae = brax_ppo_losses.compute_gae


class PPONetworkParams(NamedTuple):
  policy: Any
  value: Any


@flax.struct.dataclass
class PPOState:
  params: PPONetworkParams
  optimizer_state: optax.OptState
  normalizer: running_statistics.RunningStatisticsState


def make_networks(observation_size: int, action_size: int, ppo_config, frame_shape=None):
  """Brax's PPO networks: a tanh-normal policy MLP and a value MLP (swish). With
  `frame_shape` (H, W, C) of a discrete-action env (observations are the flattened
  frames): a categorical policy over `action_size` actions and a value, each a conv torso
  (`ppo.torso`) and an MLP (`categorical.make_ppo_networks`)."""
  preprocess = policy.observation_preprocessor(ppo_config.normalize_observations)
  if frame_shape is not None:
    return categorical.make_ppo_networks(
      tuple(frame_shape),
      action_size,
      preprocess,
      policy_hidden_sizes=tuple(ppo_config.policy_hidden_sizes),
      value_hidden_sizes=tuple(ppo_config.value_hidden_sizes),
      torso=ppo_config.torso,
    )
  return brax_ppo_networks.make_ppo_networks(
    observation_size,
    action_size,
    preprocess_observations_fn=preprocess,
    policy_hidden_layer_sizes=tuple(ppo_config.policy_hidden_sizes),
    value_hidden_layer_sizes=tuple(ppo_config.value_hidden_sizes),
    activation=linen.swish,
  )


def logits_and_values(networks, params: PPONetworkParams, normalizer, obs):
  """The policy's logits and the value of `obs`: one pass where they share a torso
  (`categorical.SharedPPONetworks`), else each network on its own parameters."""
  joint = getattr(networks, "actor_critic", None)
  if joint is not None:
    return joint(normalizer, params.policy, obs)
  return (
    networks.policy_network.apply(normalizer, params.policy, obs),
    networks.value_network.apply(normalizer, params.value, obs),
  )


def value_of(networks, params: PPONetworkParams, normalizer, obs):
  """The value of `obs` (with a shared torso, from the policy's parameters)."""
  if getattr(networks, "actor_critic", None) is not None:
    return logits_and_values(networks, params, normalizer, obs)[1]
  return networks.value_network.apply(normalizer, params.value, obs)


def make_optimizer(ppo_config) -> optax.GradientTransformation:
  adam = optax.adam(ppo_config.learning_rate)
  if ppo_config.max_grad_norm > 0:
    return optax.chain(optax.clip_by_global_norm(ppo_config.max_grad_norm), adam)
  return adam


def init_state(key, networks, optimizer, observation_size: int) -> PPOState:
  key_policy, key_value = jax.random.split(key)
  params = PPONetworkParams(
    policy=networks.policy_network.init(key_policy),
    value=networks.value_network.init(key_value),
  )
  normalizer = running_statistics.init_state(jax.ShapeDtypeStruct((observation_size,), jnp.float32))
  return PPOState(params, optimizer.init(params), normalizer)


def clipped_surrogate_loss(ratio, advantages, clipping_epsilon):
  """-E[min(ρ A, clip(ρ, 1-ε, 1+ε) A)], with ρ = π_new(a|s) / π_old(a|s)."""
  clipped = jnp.clip(ratio, 1 - clipping_epsilon, 1 + clipping_epsilon)
  return -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))


def value_loss(values, targets):
  """½ E[(V(s) - target)²]."""
  return 0.5 * jnp.mean(jnp.square(targets - values))


def in_passes(apply, obs, steps_per_pass: int):
  """`apply` over a time-major batch [T, B, ...], at most `steps_per_pass` steps (whole
  time steps of all B envs) at a time: transition minibatches take GAE over a whole
  iteration, and a conv torso's activations over pgx's 4,096 envs x 128 steps at once
  peaked at 13.9 GB (MinAtar Breakout on the CPU)."""
  steps, batch = obs.shape[:2]
  passes = sharding.num_passes(steps, max(1, steps_per_pass // batch))
  if passes == 1:
    return apply(obs)
  out = jax.lax.map(apply, obs.reshape((passes, steps // passes) + obs.shape[1:]))
  return out.reshape((steps,) + out.shape[2:])


def lambda_returns(params: PPONetworkParams, normalizer, data: Transition, networks, ppo_config):
  """GAE over the T axis of a time-major batch `data` ([T, B, ...]) under `params`; the
  value of `data.next_obs[-1]` ends each sequence. Returns (values V(s_t), λ-return
  targets, Brax's advantages r_t + γ G^λ_{t+1} - V(s_t)), all [T, B]; steps cut off by the
  episode length carry no advantage (as in Brax)."""
  apply = functools.partial(value_of, networks, params, normalizer)
  values = in_passes(apply, data.obs, ppo_config.steps_per_pass)
  bootstrap_value = apply(data.next_obs[-1])
  targets, advantages = compute_gae(
    truncation=data.truncation,
    termination=(1 - data.discount) * (1 - data.truncation),
    rewards=data.reward * ppo_config.reward_scaling,
    values=values,
    bootstrap_value=bootstrap_value,
    lambda_=ppo_config.gae_lambda,
    discount=ppo_config.discounting,
  )
  return values, targets, advantages


def _loss(logits, raw_action, log_prob, advantages, v_loss, key, networks, ppo_config):
  """Clipped surrogate + `v_loss` (the caller's value loss) - entropy bonus, on a batch of
  any shape, from the policy's `logits` of it; returns (loss, metrics)."""
  dist = networks.parametric_action_distribution
  if ppo_config.normalize_advantage:
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
  ratio = jnp.exp(dist.log_prob(logits, raw_action) - log_prob)
  policy_loss = clipped_surrogate_loss(ratio, advantages, ppo_config.clipping_epsilon)
  v_loss = ppo_config.value_loss_coefficient * v_loss
  entropy = jnp.mean(dist.entropy(logits, key))
  total = policy_loss + v_loss - ppo_config.entropy_cost * entropy
  return total, {
    "ppo_loss": total,
    "policy_loss": policy_loss,
    "value_loss": v_loss,
    "entropy": entropy,
  }


def ppo_loss(params: PPONetworkParams, normalizer, data: Transition, key, networks, ppo_config):
  """The PPO loss on a time-major batch `data` ([T, B, ...]) of whole sequences, as Brax
  computes it: GAE under the current `params`, in the loss. Returns (loss, metrics)."""
  values, targets, advantages = lambda_returns(params, normalizer, data, networks, ppo_config)
  v_loss = value_loss(values, targets)
  logits = networks.policy_network.apply(normalizer, params.policy, data.obs)
  args = (logits, data.raw_action, data.log_prob, advantages, v_loss, key)
  return _loss(*args, networks, ppo_config)


class Transitions(NamedTuple):
  """Single transitions ([N, ...]) with what the value network said of them before the
  update: the minibatches of `minibatches = "transitions"`."""

  obs: jax.Array
  raw_action: jax.Array
  log_prob: jax.Array
  advantage: jax.Array  # GAE: λ-return - value
  target: jax.Array  # λ-return
  value: jax.Array  # V(s) before the update


def clipped_value_error(values, old_values, targets, clip):
  """max((V - G)², (clip(V, V_old - c, V_old + c) - G)²) per element: the value may move
  at most c from the one it had before the update, or is penalized as if it had not."""
  clipped = jnp.clip(values, old_values - clip, old_values + clip)
  return jnp.maximum(jnp.square(values - targets), jnp.square(clipped - targets))


def clipped_value_loss(values, old_values, targets, clip):
  """½ E[`clipped_value_error`]."""
  return 0.5 * jnp.mean(clipped_value_error(values, old_values, targets, clip))


def to_transitions(
  params: PPONetworkParams, normalizer, data: Transition, networks, ppo_config
) -> Transitions:
  """A time-major batch [T, B] as T*B single transitions, with GAE (λ-return - value, as
  PureJaxRL and pgx's MinAtar PPO compute it) under `params`, once for all epochs."""
  values, targets, _ = lambda_returns(params, normalizer, data, networks, ppo_config)
  flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
  return Transitions(
    obs=flat(data.obs),
    raw_action=flat(data.raw_action),
    log_prob=flat(data.log_prob),
    advantage=flat(targets - values),
    target=flat(targets),
    value=flat(values),
  )


def transition_loss(
  params: PPONetworkParams, normalizer, batch: Transitions, key, networks, ppo_config
):
  """The PPO loss on single transitions whose advantages and targets were computed before
  the update (`to_transitions`); the value loss is clipped when ppo.value_clipping > 0.
  Returns (loss, metrics)."""
  logits, values = logits_and_values(networks, params, normalizer, batch.obs)
  if ppo_config.value_clipping > 0:
    v_loss = clipped_value_loss(values, batch.value, batch.target, ppo_config.value_clipping)
  else:
    v_loss = value_loss(values, batch.target)
  args = (logits, batch.raw_action, batch.log_prob, batch.advantage, v_loss, key)
  return _loss(*args, networks, ppo_config)


def shuffle_into_minibatches(tree, key, num_minibatches: int, axis: int):
  """Shuffles every leaf of `tree` the same way along `axis` and splits it into
  `num_minibatches` equal parts, stacked first: [..., N, ...] -> [M, ..., N/M, ...]."""
  permutation = jax.random.permutation(key, jax.tree.leaves(tree)[0].shape[axis])

  def split(x):
    x = jnp.take(x, permutation, axis=axis)
    x = x.reshape(x.shape[:axis] + (num_minibatches, -1) + x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)

  return jax.tree.map(split, tree)


def make_update_fn(networks, optimizer, ppo_config, shard=lambda tree, axis: tree):
  """Returns update(ppo_state, data [T, B], key) -> (ppo_state, metrics).

  Updates the observation statistics with the batch, then runs `num_updates_per_batch`
  epochs of `num_minibatches` minibatches each. `ppo.minibatches` says of what:
  "sequences" (Brax): whole sequences, shuffled along B, GAE computed in the loss under
  the current parameters; "transitions" (PureJaxRL, pgx's MinAtar PPO): the T*B single
  transitions, shuffled, with GAE computed once before the first epoch
  (`to_transitions`). `shard(minibatches, axis)` places each minibatch's sequences or
  transitions over devices (`sharding.data_splitter`).
  """
  num_minibatches = ppo_config.num_minibatches
  by_transitions = ppo_config.minibatches == "transitions"
  loss_fn = transition_loss if by_transitions else ppo_loss
  loss_and_grad = jax.value_and_grad(
    functools.partial(loss_fn, networks=networks, ppo_config=ppo_config), has_aux=True
  )

  def minibatch_step(carry, minibatch, normalizer):
    params, optimizer_state, key = carry
    key, key_loss = jax.random.split(key)
    (_, metrics), grads = loss_and_grad(params, normalizer, minibatch, key_loss)
    updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
    return (optax.apply_updates(params, updates), optimizer_state, key), metrics

  def epoch(carry, key_epoch, data, normalizer):
    params, optimizer_state = carry
    key_perm, key_grad = jax.random.split(key_epoch)
    axis = 0 if by_transitions else 1  # transitions [N, ...]; sequences [T, B, ...]
    minibatches = shard(shuffle_into_minibatches(data, key_perm, num_minibatches, axis), axis + 1)
    (params, optimizer_state, _), metrics = jax.lax.scan(
      functools.partial(minibatch_step, normalizer=normalizer),
      (params, optimizer_state, key_grad),
      minibatches,
    )
    return (params, optimizer_state), metrics

  def update(state: PPOState, data: Transition, key):
    normalizer = state.normalizer
    if ppo_config.normalize_observations:
      normalizer = running_statistics.update(normalizer, data.obs)
    if by_transitions:
      data = to_transitions(state.params, normalizer, data, networks, ppo_config)
    keys = jax.random.split(key, ppo_config.num_updates_per_batch)
    (params, optimizer_state), metrics = jax.lax.scan(
      functools.partial(epoch, data=data, normalizer=normalizer),
      (state.params, state.optimizer_state),
      keys,
    )
    new_state = PPOState(params, optimizer_state, normalizer)
    return new_state, jax.tree.map(jnp.mean, metrics)

  return update
