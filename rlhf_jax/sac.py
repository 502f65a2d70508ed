"""Soft actor-critic (Haarnoja et al. 2018, arXiv 1812.05905) on the device.

The networks (a tanh-normal policy MLP, twin Q MLPs) and the running observation
statistics come from `brax.training`, so parameters are interchangeable with those of
`brax.training.agents.sac.train`. What is ours: the replay buffer (a ring of transitions
in device memory, rows that a reward model can relabel in place), the losses written
out below, and the update: `grad_updates` gradient steps on minibatches drawn uniformly
from the buffer, each one temperature, critic and actor step in Brax's order, then a
Polyak step of the target critic.

  critic:  y = scale · r + γ · discount · (min_i Q̄_i(s', a') − α log π(a'|s')),  a' ~ π(·|s')
           loss = ½ mean over the batch and both critics of (Q_i(s, a) − y)², the steps
           an episode was cut off at (truncation) left out: their s' is the next episode's
  actor:   loss = mean(α log π(a|s) − min_i Q_i(s, a)),  a ~ π(·|s)
  alpha:   loss = mean(α · stopgrad(−log π(a|s) − H̄)),  H̄ = target_entropy · action size

Everything here is pure; jit it at the call site.
"""

from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from brax.training.acme import running_statistics
from brax.training.agents.sac import networks as brax_sac_networks
from flax import linen

from rlhf_jax import policy
from rlhf_jax.segments import ring_write
from rlhf_jax.types import Transition


class SACParams(NamedTuple):
  policy: Any
  q: Any  # both critics, stacked by Brax's q network
  target_q: Any
  log_alpha: jax.Array  # float32 []


@flax.struct.dataclass
class SACState:
  params: SACParams
  policy_optimizer_state: optax.OptState
  q_optimizer_state: optax.OptState
  alpha_optimizer_state: optax.OptState
  normalizer: running_statistics.RunningStatisticsState


class ReplayBuffer(NamedTuple):
  """Rings of transitions, one per device of the mesh's `data` axis, each fed by that
  device's envs and sampled by it, as Brax's SAC keeps a buffer per device: the steps
  never cross devices. The oldest rows of a ring are overwritten first."""

  data: Transition  # [D, C / D, ...]: ring d holds the steps of the d-th block of envs
  next_index: jax.Array  # int32 []: the next row of every ring
  size: jax.Array  # int32 []: transitions stored, over all rings


def make_networks(observation_size: int, action_size: int, sac_config):
  """Brax's SAC networks: tanh-normal policy and twin Q, ReLU MLPs of `hidden_sizes`."""
  return brax_sac_networks.make_sac_networks(
    observation_size,
    action_size,
    preprocess_observations_fn=policy.observation_preprocessor(sac_config.normalize_observations),
    hidden_layer_sizes=tuple(sac_config.hidden_sizes),
    activation=linen.relu,
  )


class Optimizers(NamedTuple):
  policy: optax.GradientTransformation
  q: optax.GradientTransformation
  alpha: optax.GradientTransformation


def make_optimizers(sac_config) -> Optimizers:
  return Optimizers(
    policy=optax.adam(sac_config.learning_rate),
    q=optax.adam(sac_config.learning_rate),
    alpha=optax.adam(sac_config.alpha_learning_rate),
  )


def init_state(key, networks, optimizers: Optimizers, observation_size: int) -> SACState:
  key_policy, key_q = jax.random.split(key)
  policy = networks.policy_network.init(key_policy)
  q = networks.q_network.init(key_q)
  log_alpha = jnp.zeros((), jnp.float32)  # α = 1 at the start, as Brax
  params = SACParams(policy=policy, q=q, target_q=q, log_alpha=log_alpha)
  normalizer = running_statistics.init_state(jax.ShapeDtypeStruct((observation_size,), jnp.float32))
  return SACState(
    params=params,
    policy_optimizer_state=optimizers.policy.init(policy),
    q_optimizer_state=optimizers.q.init(q),
    alpha_optimizer_state=optimizers.alpha.init(log_alpha),
    normalizer=normalizer,
  )


# -- the replay buffer ----------------------------------------------------------------------


def init_buffer(example_step: Transition, capacity: int, rings: int = 1) -> ReplayBuffer:
  """An empty buffer for `capacity` transitions (rounded down to a multiple of `rings`)
  shaped like `example_step` (one step), in `rings` rings."""
  shape = (rings, capacity // rings)
  data = jax.tree.map(lambda x: jnp.zeros(shape + x.shape, x.dtype), example_step)
  return ReplayBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, transitions: Transition) -> ReplayBuffer:
  """Writes transitions [..., N, ...] (steps of N envs, time-major) after the newest: ring
  d takes the d-th block of N / D envs, their steps in (step, env) order."""
  rings = buffer.data.discount.shape[0]
  *lead, num_envs = transitions.discount.shape

  def to_rings(x):  # [..., N, ...] -> [D, steps * N / D, ...]
    x = x.reshape((-1, rings, num_envs // rings) + x.shape[len(lead) + 1 :])
    return jnp.swapaxes(x, 0, 1).reshape((rings, -1) + x.shape[3:])

  rows = jax.tree.map(to_rings, transitions)
  keep = jnp.ones(rows.discount.shape[1:], bool)
  write = jax.vmap(ring_write, in_axes=(0, 0, None, None, None))  # every ring, in step
  data, next_index, stored = write(buffer.data, rows, keep, buffer.next_index, buffer.size // rings)
  return ReplayBuffer(data, next_index[0], stored[0] * rings)


def sample(buffer: ReplayBuffer, key, shape: tuple[int, ...]) -> Transition:
  """Transitions [*shape, ...] drawn uniformly (with replacement) from the stored ones,
  the last axis in D equal parts, part d from ring d (so it stays on its device)."""
  rings = buffer.data.discount.shape[0]
  *lead, last = shape
  index = jax.random.randint(
    key, (rings, *lead, last // rings), 0, jnp.maximum(buffer.size // rings, 1)
  )
  drawn = jax.vmap(lambda ring, i: jax.tree.map(lambda x: x[i], ring))(buffer.data, index)
  return jax.tree.map(
    lambda x: jnp.moveaxis(x, 0, len(lead)).reshape((*shape, *x.shape[len(lead) + 2 :])), drawn
  )


# -- unsupervised pre-training (PEBBLE) ---------------------------------------------------


def knn_distance(x, reference, k: int):
  """Euclidean distance from each row of `x` [B, D] to its k-th nearest row of `reference`
  [R, D] (a row of `x` that is also in `reference` is its own nearest, at 0)."""
  squared = (
    jnp.sum(jnp.square(x), axis=-1)[:, None]
    + jnp.sum(jnp.square(reference), axis=-1)[None, :]
    - 2.0 * x @ reference.T
  )
  nearest = -jax.lax.top_k(-squared, k)[0]  # [B, k], ascending
  return jnp.sqrt(jnp.maximum(nearest[:, -1], 0.0))


def state_entropy_reward(obs, reference, k: int):
  """PEBBLE's intrinsic reward: the particle estimate of state entropy, each state's
  distance to its k-th nearest neighbour among `reference` (which holds `obs` itself, as
  B-Pref's whole buffer does: so the (k+1)-th, skipping the state), in units of the
  batch's standard deviation (B-Pref: of a running one). The paper writes log(c + d)."""
  distance = knn_distance(obs, reference, k + 1)
  return distance / (jnp.std(distance) + 1e-8)


# -- the losses -----------------------------------------------------------------------------


def critic_target(reward, discount, next_q, next_log_prob, alpha, gamma, reward_scaling):
  """y = scale · r + γ · discount · (min over the critics of next_q [..., 2] − α log π)."""
  next_value = jnp.min(next_q, axis=-1) - alpha * next_log_prob
  return reward_scaling * reward + discount * gamma * next_value


def critic_loss_value(q, target, truncation):
  """½ mean of (Q_i − y)² over the batch and the critics; truncated steps count as 0."""
  error = (q - target[..., None]) * (1.0 - truncation)[..., None]
  return 0.5 * jnp.mean(jnp.square(error))


def alpha_loss_value(log_alpha, log_prob, target_entropy):
  """Mean of α · stopgrad(−log π − H̄): α grows while the entropy is below its target."""
  return jnp.mean(jnp.exp(log_alpha) * jax.lax.stop_gradient(-log_prob - target_entropy))


class Losses(NamedTuple):
  # alpha(log_alpha, policy_params, normalizer, batch, key)
  # critic(q_params, params: SACParams, alpha, normalizer, batch, key)
  # actor(policy_params, q_params, alpha, normalizer, batch, key)
  alpha: Any
  critic: Any
  actor: Any


def make_losses(networks, sac_config, action_size: int) -> Losses:
  """The three losses of the module docstring, on a batch of transitions."""
  policy_net, q_net = networks.policy_network, networks.q_network
  dist = networks.parametric_action_distribution
  target_entropy = sac_config.target_entropy * action_size

  def act(normalizer, policy_params, obs, key):
    logits = policy_net.apply(normalizer, policy_params, obs)
    raw = dist.sample_no_postprocessing(logits, key)
    return dist.postprocess(raw), dist.log_prob(logits, raw)

  def alpha_loss(log_alpha, policy_params, normalizer, batch: Transition, key):
    _, log_prob = act(normalizer, policy_params, batch.obs, key)
    return alpha_loss_value(log_alpha, log_prob, target_entropy)

  def critic_loss(q_params, params: SACParams, alpha, normalizer, batch: Transition, key):
    next_action, next_log_prob = act(normalizer, params.policy, batch.next_obs, key)
    next_q = q_net.apply(normalizer, params.target_q, batch.next_obs, next_action)
    target = critic_target(
      batch.reward,
      batch.discount,
      next_q,
      next_log_prob,
      alpha,
      sac_config.discount,
      sac_config.reward_scaling,
    )
    q = q_net.apply(normalizer, q_params, batch.obs, batch.action)
    return critic_loss_value(q, jax.lax.stop_gradient(target), batch.truncation)

  def actor_loss(policy_params, q_params, alpha, normalizer, batch: Transition, key):
    action, log_prob = act(normalizer, policy_params, batch.obs, key)
    q = q_net.apply(normalizer, q_params, batch.obs, action)
    return jnp.mean(alpha * log_prob - jnp.min(q, axis=-1))

  return Losses(alpha=alpha_loss, critic=critic_loss, actor=actor_loss)


def make_update_fn(networks, optimizers: Optimizers, sac_config, action_size: int):
  """Returns update(state, batch [G, B, ...], key) -> (state, metrics): G gradient steps,
  one per minibatch of B transitions, in a `lax.scan` (the observation statistics are the
  caller's to update: they follow the env steps, not the gradient steps)."""
  alpha_loss, critic_loss, actor_loss = make_losses(networks, sac_config, action_size)

  def apply(optimizer, grads, opt_state, params):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def gradient_step(state: SACState, batch_and_key):
    batch, key = batch_and_key
    key_alpha, key_critic, key_actor = jax.random.split(key, 3)
    params, normalizer = state.params, state.normalizer
    loss_alpha, grad = jax.value_and_grad(alpha_loss)(
      params.log_alpha, params.policy, normalizer, batch, key_alpha
    )
    log_alpha, alpha_opt = apply(
      optimizers.alpha, grad, state.alpha_optimizer_state, params.log_alpha
    )
    alpha = jnp.exp(params.log_alpha)  # the critic and actor use α before this step, as Brax
    loss_critic, grad = jax.value_and_grad(critic_loss)(
      params.q, params, alpha, normalizer, batch, key_critic
    )
    q, q_opt = apply(optimizers.q, grad, state.q_optimizer_state, params.q)
    loss_actor, grad = jax.value_and_grad(actor_loss)(
      params.policy, params.q, alpha, normalizer, batch, key_actor
    )
    policy, policy_opt = apply(optimizers.policy, grad, state.policy_optimizer_state, params.policy)
    tau = sac_config.tau
    target_q = jax.tree.map(lambda old, new: (1 - tau) * old + tau * new, params.target_q, q)
    state = state.replace(
      params=SACParams(policy=policy, q=q, target_q=target_q, log_alpha=log_alpha),
      policy_optimizer_state=policy_opt,
      q_optimizer_state=q_opt,
      alpha_optimizer_state=alpha_opt,
    )
    metrics = {
      "critic_loss": loss_critic,
      "actor_loss": loss_actor,
      "alpha_loss": loss_alpha,
      "alpha": jnp.exp(log_alpha),
    }
    return state, metrics

  def update(state: SACState, batch: Transition, key):
    keys = jax.random.split(key, batch.discount.shape[0])
    state, metrics = jax.lax.scan(gradient_step, state, (batch, keys))
    return state, jax.tree.map(jnp.mean, metrics)

  return update
