"""The reward model: an ensemble of networks fit to preferences (Christiano et al. 2017).

  r̂_m(s, a)            member m's reward for one step (input: obs+action, obs, or obs+next obs)
  R̂_m(σ) = Σ_t r̂_m     a segment's return under member m (padding masked out)
  P_m(σ¹ ≻ σ²) = sigmoid(R̂_m(σ¹) - R̂_m(σ²))                      (Bradley–Terry)
  loss = -E[y log P' + (1 - y) log(1 - P')],  P' = noise/2 + (1 - noise) P
                                              (the teacher answers at random w.p. noise)

A member is an MLP (leaky ReLU) over the step's features, or, for envs whose
observations are frames (MinAtar: `frame_shape` (H, W, C), observations the flattened
frames), MinAtar's conv torso: 16 3x3 filters (no padding) with ReLU over the frame, then
the `reward.hidden_sizes` ReLU layers and a scalar. Its features are the same flat vector
as the MLP's; "obs_action" appends the one-hot action after the conv features, and
"obs_next_obs" stacks both frames as 2C channels.

Each member trains on its own bootstrap sample of the labels (Poisson(1) weights drawn
when a label arrives). The labels a member's sample leaves out (weight 0: 1/e of them)
are its validation set, so each member holds out 1/e of the labels as in the paper, yet
all but e^-M of the labels train some member. Each member's L2 weight is adapted so that
its validation loss stays 1.1–1.5× its training loss. The reward PPO sees is each
member's output normalized to zero mean and unit std over recent rollouts, then averaged
over members. With `reward.normalize_mean=False` only the scale is normalized: where
episodes can end early, segments differ in length and the labels pin down the reward's
offset (a bonus for staying alive), which centering would erase.

The members' parameters are stacked on a leading axis [M, ...]; `reward.members` says
whether they run one after another (`member(params, m)`: XLA's CPU backend multiplies
batched matrices about half as fast) or batched by `vmap` (accelerators), "auto" picking
by the default backend. Adam is elementwise, so one optax optimizer over the stack trains
each member on its own.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax.training.acme import running_statistics
from flax import linen

from rlhf_jax import categorical, sharding
from rlhf_jax.segments import ring_write
from rlhf_jax.types import Segment

INPUTS = ("obs_action", "obs", "obs_next_obs")
MEMBERS = ("auto", "loop", "vmap")
_L2_STEP = 1.02  # factor by which the L2 weight moves per training step
_L2_RANGE = (1e-6, 0.1)
_EMA_DECAY = 0.9  # of the loss averages that steer the L2 weight


class PreferenceBuffer(NamedTuple):
  """A ring buffer of labelled pairs; the oldest labels go first."""

  first: Segment  # [P, K, ...]
  second: Segment  # [P, K, ...]
  label: jax.Array  # float32 [P]: P(first ≻ second) as the teacher said: 1, 0 or 0.5
  bootstrap: jax.Array  # float32 [P, M]: each member's Poisson(1) weight; 0: held out
  next_index: jax.Array  # int32 []
  size: jax.Array  # int32 []


@flax.struct.dataclass
class RewardModelState:
  params: Any  # stacked [M, ...]
  inputs: running_statistics.RunningStatisticsState  # of the network's input features
  optimizer_state: optax.OptState
  l2: jax.Array  # float32 [M]
  train_loss_ema: jax.Array  # float32 [M]; < 0 until first measured
  val_loss_ema: jax.Array  # float32 [M]
  reward_mean: jax.Array  # float32 [M]: of each member's raw step reward, recent rollouts
  reward_var: jax.Array  # float32 [M]
  normalizer_ready: jax.Array  # bool []: reward_mean/var have seen a rollout


class RewardModel(NamedTuple):
  init: Callable  # key -> RewardModelState
  observe: Callable  # (state, obs, action, next_obs) -> state with input statistics updated
  step_rewards: Callable  # (params, inputs, obs, action, next_obs) -> raw rewards [M, ...]
  segment_returns: Callable  # (params, inputs, Segment [..., K]) -> raw returns [M, ...]
  update: Callable  # (state, PreferenceBuffer, key, num_steps) -> (state, metrics)
  out_of_bag: Callable  # (params, inputs, PreferenceBuffer, index [B]) -> held-out loss [M], ...
  normalized_reward: Callable  # (state, obs, action, next_obs) -> (state, reward [...])
  normalize: Callable  # (state, raw [M, ...]) -> ensemble mean of normalized rewards


def bradley_terry_loss(return_first, return_second, labels, noise=0.1):
  """Per-pair cross-entropy of the labels under the noisy Bradley–Terry model."""
  logit = return_first - return_second
  if noise == 0:
    return -(labels * jax.nn.log_sigmoid(logit) + (1 - labels) * jax.nn.log_sigmoid(-logit))
  p_first = noise / 2 + (1 - noise) * jax.nn.sigmoid(logit)
  return -(labels * jnp.log(p_first) + (1 - labels) * jnp.log1p(-p_first))


def weighted_mean(values, weight, axis=-1):
  """Σ weight · values / Σ weight along `axis` (0 where every weight is 0)."""
  return jnp.sum(weight * values, axis=axis) / jnp.maximum(jnp.sum(weight, axis=axis), 1e-6)


def correct(return_first, return_second, labels):
  """1 where the predicted preference matches a strict label, 0 elsewhere (and for 0.5)."""
  predicted_first = return_first > return_second
  return jnp.where(labels == 0.5, 0.0, (predicted_first == (labels > 0.5)).astype(jnp.float32))


def ensemble_accuracy(model, state, first: Segment, second: Segment, labels) -> float:
  """Host side: how often the ensemble's mean P(first ≻ second) agrees with the strict
  labels (0 or 1) among `labels` [P]; NaN when there is none."""
  returns = lambda segment: model.segment_returns(state.params, state.inputs, segment)
  p_first = np.mean(np.asarray(jax.nn.sigmoid(returns(first) - returns(second))), axis=0)
  labels = np.asarray(labels)
  strict = labels != 0.5
  return float(np.mean((p_first > 0.5)[strict] == (labels > 0.5)[strict]))


def init_preference_buffer(example_segment: Segment, capacity: int, ensemble_size: int):
  zeros = lambda x: jnp.zeros((capacity,) + x.shape, x.dtype)
  return PreferenceBuffer(
    first=jax.tree.map(zeros, example_segment),
    second=jax.tree.map(zeros, example_segment),
    label=jnp.zeros((capacity,), jnp.float32),
    bootstrap=jnp.zeros((capacity, ensemble_size), jnp.float32),
    next_index=jnp.zeros((), jnp.int32),
    size=jnp.zeros((), jnp.int32),
  )


def add_preferences(buffer: PreferenceBuffer, key, first, second, labels, keep):
  """Writes the pairs with `keep` ([Q] bool) after the newest; draws their bootstrap weights."""
  bootstrap = jax.random.poisson(key, 1.0, (labels.shape[0], buffer.bootstrap.shape[1]))
  rows = (first, second, labels, bootstrap.astype(jnp.float32))
  stored = (buffer.first, buffer.second, buffer.label, buffer.bootstrap)
  stored, next_index, size = ring_write(stored, rows, keep, buffer.next_index, buffer.size)
  return PreferenceBuffer(*stored, next_index=next_index, size=size)


def held_out(bootstrap_weight, index, size):
  """Where a member validates: the pairs `index` ([B]) whose bootstrap weight
  ([..., B]) is 0, among the `size` stored ones."""
  return (bootstrap_weight == 0) & (index < size)


def member(params, m: int):
  """Member `m`'s parameters, out of the ensemble's stacked ones."""
  return jax.tree.map(lambda x: x[m], params)


class _MLP(linen.Module):
  hidden_sizes: tuple[int, ...]

  @linen.compact
  def __call__(self, x):
    for size in self.hidden_sizes:
      x = linen.leaky_relu(linen.Dense(size)(x))
    return linen.Dense(1)(x)[..., 0]


class _ConvNet(linen.Module):
  """Features [..., F] -> reward [...]: the first `frames` x H·W·C features are frames
  (stacked as channels), the rest (the action, if any) joins after the convolution."""

  frame_shape: tuple[int, int, int]
  frames: int
  hidden_sizes: tuple[int, ...]

  @linen.compact
  def __call__(self, x):
    batch_shape = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    size = int(np.prod(self.frame_shape))
    pictures = [
      x[:, i * size : (i + 1) * size].reshape((-1, *self.frame_shape)) for i in range(self.frames)
    ]
    pictures = jnp.concatenate(pictures, axis=-1)
    h = linen.relu(categorical.conv()(pictures)).reshape(x.shape[0], -1)
    h = jnp.concatenate([h, x[:, self.frames * size :]], axis=-1)
    for width in self.hidden_sizes:
      h = linen.relu(linen.Dense(width)(h))
    return linen.Dense(1)(h)[:, 0].reshape(batch_shape)


def make_network(reward_config, frame_shape=None) -> linen.Module:
  """One member: an MLP, or with `frame_shape` the conv net over frames."""
  hidden_sizes = tuple(reward_config.hidden_sizes)
  if frame_shape is None:
    return _MLP(hidden_sizes)
  frames = 2 if reward_config.inputs == "obs_next_obs" else 1
  return _ConvNet(tuple(frame_shape), frames, hidden_sizes)


def use_vmap(members: str) -> bool:
  """Whether `reward.members` runs the members batched by vmap ("auto": off the CPU)."""
  if members not in MEMBERS:
    raise ValueError(f"config.reward.members={members!r} is unknown; choose one of {MEMBERS}.")
  return members == "vmap" or (members == "auto" and jax.default_backend() != "cpu")


def _features(inputs: str, obs, action, next_obs):
  if inputs == "obs":
    return obs
  if inputs == "obs_next_obs":
    return jnp.concatenate([obs, next_obs], axis=-1)
  return jnp.concatenate([obs, action], axis=-1)


def make_reward_model(
  config,
  observation_size: int,
  action_size: int,
  shard=lambda tree, axis: tree,
  frame_shape: tuple[int, int, int] | None = None,
) -> RewardModel:
  """Builds the ensemble's pure functions from `config.reward` (read at trace time).
  `shard(tree, axis)` places the minibatches of pairs over devices (`sharding.data_splitter`).
  `frame_shape` (H, W, C): observations are flattened frames, the members conv nets."""
  reward_config = config.reward
  ensemble_size = reward_config.ensemble_size
  network = make_network(reward_config, frame_shape)
  optimizer = optax.adam(reward_config.learning_rate)
  features = functools.partial(_features, reward_config.inputs)
  batched = use_vmap(reward_config.members)

  def step_rewards(params, inputs, obs, action, next_obs):
    """Each member's reward of each step, [M, ...] (inputs standardized if
    `normalize_inputs`), on the steps flattened to a matrix. An axis split over devices
    must come first: merged as a minor axis of the flat steps, it makes XLA gather every
    device's steps onto each device."""
    x = features(obs, action, next_obs)
    if reward_config.normalize_inputs:
      x = running_statistics.normalize(x, inputs)
    steps = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    members = jax.tree.leaves(params)[0].shape[0]

    def apply(rows):  # [R, F] -> [M, R]
      if batched:
        return jax.vmap(network.apply, in_axes=(0, None))(params, rows)
      return jnp.stack([network.apply(member(params, m), rows) for m in range(members)])

    passes = sharding.num_passes(x.shape[0], reward_config.steps_per_pass)
    if passes == 1:
      return apply(x).reshape((members,) + steps)
    # Pass i takes rows i, i + passes, ...: every device's part of the leading axis in
    # each pass, and [M, R / passes, passes] is back in row order.
    rows = jnp.moveaxis(x.reshape(-1, passes, x.shape[-1]), 1, 0)
    rewards = jnp.moveaxis(jax.lax.map(apply, rows), 0, 2)
    return rewards.reshape((members,) + steps)

  def segment_returns(params, inputs, segment: Segment):
    rewards = step_rewards(params, inputs, segment.obs, segment.action, segment.next_obs)
    return jnp.sum(rewards * segment.mask, axis=-1)

  def observe(state: RewardModelState, obs, action, next_obs) -> RewardModelState:
    """Adds these steps' features to the running statistics that standardize inputs
    (a no-op unless `reward.normalize_inputs`, so the default pays nothing for it)."""
    if not reward_config.normalize_inputs:
      return state
    inputs = running_statistics.update(state.inputs, features(obs, action, next_obs))
    return state.replace(inputs=inputs)

  def init(key) -> RewardModelState:
    obs = jnp.zeros((observation_size,))
    action = jnp.zeros((action_size,))
    example = features(obs, action, obs)
    params = jax.vmap(network.init, in_axes=(0, None))(
      jax.random.split(key, ensemble_size), example
    )
    members = lambda value: jnp.full((ensemble_size,), value, jnp.float32)
    return RewardModelState(
      params=params,
      inputs=running_statistics.init_state(jax.ShapeDtypeStruct(example.shape, jnp.float32)),
      optimizer_state=optimizer.init(params),
      l2=members(reward_config.l2_init),
      train_loss_ema=members(-1.0),
      val_loss_ema=members(-1.0),
      reward_mean=members(0.0),
      reward_var=members(1.0),
      normalizer_ready=jnp.zeros((), bool),
    )

  def member_loss(member_params, inputs, l2, buffer: PreferenceBuffer, index, weight):
    """One member's weighted loss on the pairs `index` ([B]) of the buffer, and as aux
    its data loss, accuracy, and loss on the pairs among them it holds out (weight 0:
    they cost no extra forward pass) and whether there were any."""
    take = lambda tree: jax.tree.map(lambda x: x[index], tree)
    expand = lambda p: jax.tree.map(lambda x: x[None], p)  # a one-member "ensemble"
    return_first = segment_returns(expand(member_params), inputs, take(buffer.first))[0]
    return_second = segment_returns(expand(member_params), inputs, take(buffer.second))[0]
    labels = buffer.label[index]
    losses = bradley_terry_loss(return_first, return_second, labels, reward_config.label_noise)
    data_loss = weighted_mean(losses, weight)
    strict = weight * (labels != 0.5)
    accuracy = weighted_mean(correct(return_first, return_second, labels), strict)
    validation = held_out(weight, index, buffer.size)
    val_loss = weighted_mean(losses, validation)
    squares = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(member_params))
    return data_loss + l2 * squares, (data_loss, accuracy, val_loss, jnp.any(validation))

  def ensemble_loss(params, inputs, l2, buffer, index, weight):
    """The members' losses summed (each member's gradient is its own loss's), and their
    aux values stacked [M]. The members run as in `step_rewards`."""
    if batched:
      losses, aux = jax.vmap(member_loss, in_axes=(0, None, 0, None, 0, 0))(
        params, inputs, l2, buffer, index, weight
      )
      return jnp.sum(losses), aux
    results = [
      member_loss(member(params, m), inputs, l2[m], buffer, index[m], weight[m])
      for m in range(ensemble_size)
    ]
    losses, aux = jax.tree.map(lambda *x: jnp.stack(x), *results)
    return jnp.sum(losses), aux

  grad_fn = jax.grad(ensemble_loss, has_aux=True)

  def adapt_l2(l2, train_ema, val_ema, train_loss, val_loss, has_val):
    """Moves the EMAs of both losses; nudges L2 to keep val/train within 1.1-1.5."""
    ema = lambda old, new: jnp.where(old < 0, new, _EMA_DECAY * old + (1 - _EMA_DECAY) * new)
    train_ema = ema(train_ema, train_loss)
    val_ema = jnp.where(has_val, ema(val_ema, val_loss), val_ema)
    ratio = val_ema / jnp.maximum(train_ema, 1e-6)
    factor = jnp.where(ratio > 1.5, _L2_STEP, jnp.where(ratio < 1.1, 1 / _L2_STEP, 1.0))
    l2 = jnp.where(has_val & (val_ema > 0), jnp.clip(l2 * factor, *_L2_RANGE), l2)
    return l2, train_ema, val_ema

  def update(state: RewardModelState, buffer: PreferenceBuffer, key, num_steps: int):
    """`num_steps` Adam steps on bootstrap minibatches.

    After each step the L2 weight moves by one notch, steered by running averages of the
    training loss and of the loss on the held-out pairs that the minibatch drew.
    """
    batch_size = reward_config.batch_size
    size = jnp.maximum(buffer.size, 1)

    def train_step(carry, key_step):
      params, optimizer_state, l2, train_ema, val_ema = carry
      index = shard(jax.random.randint(key_step, (ensemble_size, batch_size), 0, size), 1)
      weight = buffer.bootstrap[index, jnp.arange(ensemble_size)[:, None]]  # [M, B]
      grads, aux = grad_fn(params, state.inputs, l2, buffer, index, weight)
      train_loss, accuracy, val_loss, has_val = aux
      updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
      params = optax.apply_updates(params, updates)
      l2, train_ema, val_ema = adapt_l2(l2, train_ema, val_ema, train_loss, val_loss, has_val)
      return (params, optimizer_state, l2, train_ema, val_ema), (train_loss, accuracy)

    key_train, key_val = jax.random.split(key)
    carry = (state.params, state.optimizer_state, state.l2)
    carry += (state.train_loss_ema, state.val_loss_ema)
    (params, optimizer_state, l2, train_ema, val_ema), (train_loss, train_accuracy) = jax.lax.scan(
      train_step, carry, jax.random.split(key_train, num_steps)
    )
    train_loss, train_accuracy = train_loss.mean(0), train_accuracy.mean(0)  # [M]
    index = shard(jax.random.randint(key_val, (reward_config.validation_batch_size,), 0, size), 0)
    val_loss, ensemble_accuracy, _ = out_of_bag(params, state.inputs, buffer, index)

    new_state = state.replace(
      params=params,
      optimizer_state=optimizer_state,
      l2=l2,
      train_loss_ema=train_ema,
      val_loss_ema=val_ema,
    )
    metrics = {
      "rm_train_loss": jnp.mean(train_loss),
      "rm_train_accuracy": jnp.mean(train_accuracy),
      "rm_val_loss": jnp.mean(val_loss),
      "rm_val_accuracy": ensemble_accuracy,
      "rm_l2": jnp.mean(l2),
    }
    return new_state, metrics

  def out_of_bag(params, inputs, buffer: PreferenceBuffer, index):
    """Each member's loss [M] on its held-out pairs (bootstrap weight 0) among the pairs
    `index` ([B]), the ensemble's out-of-bag accuracy on them, and whether each member had
    any. A pair's out-of-bag prediction is the mean P(first ≻ second) of the members that
    never trained on it; pairs every member trained on are skipped, and pairs labelled 0.5
    count toward the loss but not the accuracy."""
    take = lambda tree: jax.tree.map(lambda x: x[index], tree)
    returns_first = segment_returns(params, inputs, take(buffer.first))  # [M, B]
    returns_second = segment_returns(params, inputs, take(buffer.second))
    labels = buffer.label[index]
    weight = held_out(buffer.bootstrap[index].T, index, buffer.size).astype(jnp.float32)  # [M, B]
    losses = bradley_terry_loss(returns_first, returns_second, labels, reward_config.label_noise)
    member_losses = weighted_mean(losses, weight)
    p_first = weighted_mean(jax.nn.sigmoid(returns_first - returns_second), weight, axis=0)
    judged = jnp.max(weight, axis=0) * (labels != 0.5)
    accuracy = weighted_mean(correct(p_first, 0.5, labels), judged)
    return member_losses, accuracy, jnp.sum(weight, axis=1) > 0

  def normalize(state: RewardModelState, raw):
    """Ensemble mean of each member's raw rewards ([M, ...]) in standard units, less
    `disagreement_penalty` times the members' spread there (in the same units)."""
    shape = (-1,) + (1,) * (raw.ndim - 1)
    mean, var = state.reward_mean.reshape(shape), state.reward_var.reshape(shape)
    centered = raw - mean if reward_config.normalize_mean else raw
    scaled = centered / jnp.sqrt(var + 1e-8)
    reward = jnp.mean(scaled, axis=0)
    if reward_config.disagreement_penalty:
      reward = reward - reward_config.disagreement_penalty * jnp.std(scaled, axis=0)
    return reward

  def normalized_reward(state: RewardModelState, obs, action, next_obs):
    """Updates the normalizer with these steps' rewards, then normalizes them."""
    raw = step_rewards(state.params, state.inputs, obs, action, next_obs)
    axes = tuple(range(1, raw.ndim))
    batch_mean, batch_var = jnp.mean(raw, axis=axes), jnp.var(raw, axis=axes)
    decay = jnp.where(state.normalizer_ready, reward_config.normalizer_decay, 0.0)
    state = state.replace(
      reward_mean=decay * state.reward_mean + (1 - decay) * batch_mean,
      reward_var=decay * state.reward_var + (1 - decay) * batch_var,
      normalizer_ready=jnp.ones((), bool),
    )
    return state, normalize(state, raw)

  return RewardModel(
    init=init,
    observe=observe,
    step_rewards=step_rewards,
    segment_returns=segment_returns,
    update=update,
    out_of_bag=out_of_bag,
    normalized_reward=normalized_reward,
    normalize=normalize,
  )
