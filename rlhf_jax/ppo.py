"""PPO (Schulman et al. 2017, arXiv 1707.06347): networks, losses and the update step.

The networks, the tanh-normal action distribution, the running observation statistics
and GAE come from `brax.training`, so parameters are interchangeable with those of
`brax.training.agents.ppo.train`. For discrete actions on frames (MinAtar) the networks are
a categorical policy and conv torsos instead (rlhf_jax/categorical.py). What is ours: the
loss on time-major batches, the minibatch epochs, and a reward that is whatever the caller
put in `Transition.reward`.

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

from rlhf_jax import categorical, policy
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
  and ReLU MLP (`categorical.make_ppo_networks`)."""
  preprocess = policy.observation_preprocessor(ppo_config.normalize_observations)
  if frame_shape is not None:
    return categorical.make_ppo_networks(
      tuple(frame_shape),
      action_size,
      preprocess,
      policy_hidden_sizes=tuple(ppo_config.policy_hidden_sizes),
      value_hidden_sizes=tuple(ppo_config.value_hidden_sizes),
    )
  return brax_ppo_networks.make_ppo_networks(
    observation_size,
    action_size,
    preprocess_observations_fn=preprocess,
    policy_hidden_layer_sizes=tuple(ppo_config.policy_hidden_sizes),
    value_hidden_layer_sizes=tuple(ppo_config.value_hidden_sizes),
    activation=linen.swish,
  )


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


def ppo_loss(params: PPONetworkParams, normalizer, data: Transition, key, networks, ppo_config):
  """The PPO loss on a time-major batch `data` ([T, B, ...]). Returns (loss, metrics).

  GAE runs over the T axis; the value of `data.next_obs[-1]` bootstraps the end of each
  sequence, and steps cut off by the episode length carry no advantage (as in Brax).
  """
  dist = networks.parametric_action_distribution
  logits = networks.policy_network.apply(normalizer, params.policy, data.obs)
  values = networks.value_network.apply(normalizer, params.value, data.obs)
  bootstrap_value = networks.value_network.apply(normalizer, params.value, data.next_obs[-1])

  termination = (1 - data.discount) * (1 - data.truncation)
  targets, advantages = compute_gae(
    truncation=data.truncation,
    termination=termination,
    rewards=data.reward * ppo_config.reward_scaling,
    values=values,
    bootstrap_value=bootstrap_value,
    lambda_=ppo_config.gae_lambda,
    discount=ppo_config.discounting,
  )
  if ppo_config.normalize_advantage:
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

  ratio = jnp.exp(dist.log_prob(logits, data.raw_action) - data.log_prob)
  policy_loss = clipped_surrogate_loss(ratio, advantages, ppo_config.clipping_epsilon)
  v_loss = ppo_config.value_loss_coefficient * value_loss(values, targets)
  entropy = jnp.mean(dist.entropy(logits, key))
  entropy_loss = -ppo_config.entropy_cost * entropy
  total = policy_loss + v_loss + entropy_loss
  return total, {
    "ppo_loss": total,
    "policy_loss": policy_loss,
    "value_loss": v_loss,
    "entropy": entropy,
  }


def make_update_fn(networks, optimizer, ppo_config, shard=lambda tree, axis: tree):
  """Returns update(ppo_state, data [T, B], key) -> (ppo_state, metrics).

  Updates the observation statistics with the batch, then runs
  `num_updates_per_batch` epochs, each over `num_minibatches` minibatches of whole
  sequences (shuffled along B). `shard(minibatches, 2)` ([M, T, B/M, ...]) places each
  minibatch's sequences over devices (`sharding.data_splitter`).
  """
  num_minibatches = ppo_config.num_minibatches
  loss_and_grad = jax.value_and_grad(
    functools.partial(ppo_loss, networks=networks, ppo_config=ppo_config), has_aux=True
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
    batch_size = data.discount.shape[1]
    permutation = jax.random.permutation(key_perm, batch_size)

    def to_minibatches(x):  # [T, B, ...] -> [M, T, B/M, ...]
      x = jnp.take(x, permutation, axis=1)
      x = x.reshape(x.shape[:1] + (num_minibatches, -1) + x.shape[2:])
      return jnp.swapaxes(x, 0, 1)

    minibatches = shard(jax.tree.map(to_minibatches, data), 2)
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
    keys = jax.random.split(key, ppo_config.num_updates_per_batch)
    (params, optimizer_state), metrics = jax.lax.scan(
      functools.partial(epoch, data=data, normalizer=normalizer),
      (state.params, state.optimizer_state),
      keys,
    )
    new_state = PPOState(params, optimizer_state, normalizer)
    return new_state, jax.tree.map(jnp.mean, metrics)

  return update
