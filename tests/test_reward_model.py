"""The reward ensemble: Bradley–Terry loss by hand, the buffer, recovering a known reward."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import reward_model, teachers
from rlhf_jax.teachers import TeacherParams
from rlhf_jax.types import Segment


def sigmoid(x):
  return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("label", [1.0, 0.0, 0.5])
def test_bradley_terry_loss_by_hand(noise, label):
  p = noise / 2 + (1 - noise) * sigmoid(2.0 - 0.5)  # P'(first ≻ second)
  expected = -(label * math.log(p) + (1 - label) * math.log(1 - p))
  loss = reward_model.bradley_terry_loss(jnp.array(2.0), jnp.array(0.5), jnp.array(label), noise)
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_noise_bounds_the_loss_of_a_confident_mistake():
  loss = reward_model.bradley_terry_loss(jnp.array(50.0), jnp.array(0.0), jnp.array(0.0), 0.1)
  assert float(loss) == pytest.approx(-math.log(0.05), rel=1e-4)


def _segments(key, num, length, obs_size, weights):
  obs = jax.random.normal(key, (num, length, obs_size))
  true_reward = obs @ weights
  return Segment(obs, obs[..., :1], obs, true_reward, jnp.ones((num, length)), obs[..., :1])


def test_buffer_keeps_the_newest_labels_and_each_member_holds_out_about_one_in_e():
  example = Segment(*(jnp.zeros((3, 2)),) * 3, jnp.zeros(3), jnp.zeros(3), jnp.zeros((3, 2)))
  buffer = reward_model.init_preference_buffer(example, capacity=1000, ensemble_size=3)
  segment = lambda n, v: Segment(
    *(jnp.full((n, 3, 2), v),) * 3, jnp.zeros((n, 3)), jnp.ones((n, 3)), jnp.zeros((n, 3, 2))
  )
  keep = jnp.arange(1500) % 3 != 0  # 1000 kept
  labels = jnp.arange(1500, dtype=jnp.float32)
  buffer = reward_model.add_preferences(
    buffer, jax.random.PRNGKey(0), segment(1500, 1.0), segment(1500, 2.0), labels, keep
  )
  assert int(buffer.size) == 1000 and int(buffer.next_index) == 0
  np.testing.assert_array_equal(np.sort(buffer.label), np.asarray(labels[keep]))
  buffer = reward_model.add_preferences(
    buffer,
    jax.random.PRNGKey(1),
    segment(2, 1.0),
    segment(2, 2.0),
    jnp.array([-1.0, -2.0]),
    jnp.array([True, True]),
  )
  assert buffer.label[0] == -1 and buffer.label[1] == -2  # the two oldest went first
  assert abs(float(jnp.mean(buffer.bootstrap)) - 1.0) < 0.1  # Poisson(1) weights
  held_out = np.asarray(buffer.bootstrap) == 0  # [P, M]: a member's validation pairs
  np.testing.assert_allclose(held_out.mean(0), 1 / math.e, atol=0.05)
  assert np.mean(held_out.all(1)) < 0.1  # the members hold out different pairs (e^-3)


def test_fit_to_labels_of_a_known_linear_reward_recovers_it():
  obs_size, length = 6, 10
  key_w, key_data, key_test, key_init, key_fit, key_label = jax.random.split(
    jax.random.PRNGKey(0), 6
  )
  weights = jax.random.normal(key_w, (obs_size,))
  config = config_lib.default_config()
  config.reward.inputs = "obs"
  model = reward_model.make_reward_model(config, obs_size, 1)

  first, second = (_segments(k, 600, length, obs_size, weights) for k in jax.random.split(key_data))
  labels, valid = teachers.label(TeacherParams(), key_label, first, second, 0.0)
  example = jax.tree.map(lambda x: x[0], first)
  buffer = reward_model.init_preference_buffer(example, 3000, config.reward.ensemble_size)
  buffer = reward_model.add_preferences(buffer, key_fit, first, second, labels, valid)

  state = model.observe(model.init(key_init), first.obs, first.action, first.next_obs)
  update = jax.jit(lambda s, k: model.update(s, buffer, k, 100))
  for step_key in jax.random.split(key_fit, 20):
    state, metrics = update(state, step_key)
  assert float(metrics["rm_val_accuracy"]) > 0.9

  test = _segments(key_test, 50, length, obs_size, weights)
  raw = model.step_rewards(state.params, state.inputs, test.obs, test.action, test.next_obs)
  learned = np.asarray(model.normalize(state, raw)).ravel()
  correlation = np.corrcoef(learned, np.asarray(test.true_reward).ravel())[0, 1]
  assert correlation > 0.95, correlation


def test_normalized_reward_has_zero_mean_and_unit_std_per_member():
  config = config_lib.default_config()
  model = reward_model.make_reward_model(config, 4, 2)
  state = model.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (500, 4)) * 3 + 1
  action = jnp.ones((500, 2))
  state, reward = model.normalized_reward(state, obs, action, obs)
  raw = model.step_rewards(state.params, state.inputs, obs, action, obs)
  per_member = (raw - raw.mean(1, keepdims=True)) / raw.std(1, keepdims=True)
  np.testing.assert_allclose(reward, per_member.mean(0), atol=1e-4)


def test_disagreement_penalty_subtracts_the_members_spread_by_hand():
  config = config_lib.default_config()
  config.reward.disagreement_penalty = 2.0
  config.reward.normalize_mean = False
  model = reward_model.make_reward_model(config, 4, 2)
  state = model.init(jax.random.PRNGKey(0))
  # Three members' raw rewards of two steps, each member's running scale given.
  raw = jnp.array([[1.0, 4.0], [3.0, 4.0], [5.0, 4.0]])
  state = state.replace(reward_var=jnp.array([1.0, 1.0, 4.0]))
  # Scaled: step 0 -> 1, 3, 2.5 (mean 2.1667; spread: population std 0.8498);
  # step 1 -> 4, 4, 2 (mean 3.3333, spread 0.9428).
  expected = [
    (1 + 3 + 2.5) / 3 - 2 * np.std([1, 3, 2.5]),
    (4 + 4 + 2) / 3 - 2 * np.std([4, 4, 2]),
  ]
  np.testing.assert_allclose(model.normalize(state, raw), expected, rtol=1e-5)
  config.reward.source = "learned"
  config.reward.disagreement_penalty = -1.0
  with pytest.raises(ValueError, match="disagreement_penalty"):
    config_lib.validate(config)


def test_validation_loss_and_out_of_bag_accuracy_match_numpy():
  """Each member is validated on the pairs its bootstrap left out; a pair's out-of-bag
  prediction averages only the members that never trained on it."""
  obs_size, length, num = 4, 5, 40
  config = config_lib.default_config()
  config.reward.inputs = "obs"
  model = reward_model.make_reward_model(config, obs_size, 1)
  weights = jnp.arange(obs_size, dtype=jnp.float32)
  first, second = (
    _segments(k, num, length, obs_size, weights) for k in jax.random.split(jax.random.PRNGKey(0))
  )
  labels = jnp.asarray(np.random.default_rng(0).choice([0.0, 0.5, 1.0], num), jnp.float32)
  example = jax.tree.map(lambda x: x[0], first)
  buffer = reward_model.init_preference_buffer(example, 64, config.reward.ensemble_size)
  buffer = reward_model.add_preferences(
    buffer, jax.random.PRNGKey(1), first, second, labels, jnp.ones(num, bool)
  )
  state = model.init(jax.random.PRNGKey(2))
  index = jnp.arange(50)  # the last 10 rows are empty: never validated on
  losses, accuracy, has_val = model.out_of_bag(state.params, state.inputs, buffer, index)

  returns = lambda s: np.asarray(model.segment_returns(state.params, state.inputs, s))
  r1, r2, y = returns(first), returns(second), np.asarray(labels)  # [M, N], [M, N], [N]
  held_out = np.asarray(buffer.bootstrap)[:num] == 0  # [N, M]
  p = 0.05 + 0.9 / (1 + np.exp(-(r1 - r2)))  # with the default 10% label noise
  pair_losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  for m in range(config.reward.ensemble_size):
    np.testing.assert_allclose(losses[m], pair_losses[m][held_out[:, m]].mean(), rtol=1e-5)
  assert np.all(np.asarray(has_val))
  judged = [i for i in range(num) if held_out[i].any() and y[i] != 0.5]
  p_oob = {i: np.mean((1 / (1 + np.exp(r2 - r1)))[held_out[i], i]) for i in judged}
  expected = np.mean([(p_oob[i] > 0.5) == (y[i] == 1) for i in judged])
  assert 0 < len(judged) < num
  assert float(accuracy) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("labels_from", ["coin flips", "a linear reward"])
def test_l2_rises_when_members_overfit_and_falls_when_they_generalize(labels_from):
  """The adaptive L2 weight (kept where validation loss is 1.1-1.5x training loss)."""
  obs_size, length = 6, 10
  config = config_lib.default_config()
  config.reward.inputs = "obs"
  model = reward_model.make_reward_model(config, obs_size, 1)
  weights = jax.random.normal(jax.random.PRNGKey(0), (obs_size,))
  num = 30 if labels_from == "coin flips" else 1000
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  first, second = (_segments(k, num, length, obs_size, weights) for k in keys)
  labels, valid = teachers.label(TeacherParams(), jax.random.PRNGKey(2), first, second, 0.0)
  if labels_from == "coin flips":
    labels = jax.random.bernoulli(jax.random.PRNGKey(3), 0.5, (num,)).astype(jnp.float32)
  example = jax.tree.map(lambda x: x[0], first)
  buffer = reward_model.init_preference_buffer(example, 3000, config.reward.ensemble_size)
  buffer = reward_model.add_preferences(buffer, jax.random.PRNGKey(4), first, second, labels, valid)
  state = model.init(jax.random.PRNGKey(5))
  state, _ = jax.jit(lambda s: model.update(s, buffer, jax.random.PRNGKey(6), 400))(state)
  l2 = np.asarray(state.l2)
  if labels_from == "coin flips":
    assert np.all(l2 > 10 * config.reward.l2_init), l2
  else:
    assert np.all(l2 < config.reward.l2_init), l2


# -- conv members over frames (MinAtar) ------------------------------------------------------

FRAME = (5, 6, 3)  # a tiny frame: H, W, C


def numpy_conv_member(params, frames, extra):
  """r̂ of one conv member by hand: frames [B, H, W, C'] -> 3x3 valid conv (16 filters) +
  ReLU, flattened (row, column, filter), `extra` [B, E] appended, ReLU dense layers, scalar."""
  kernel, bias = (np.asarray(params["Conv_0"][k], np.float64) for k in ("kernel", "bias"))
  batch, height, width, _ = frames.shape
  out = np.zeros((batch, height - 2, width - 2, kernel.shape[-1]))
  for i in range(height - 2):
    for j in range(width - 2):
      patch = frames[:, i : i + 3, j : j + 3, :]  # [B, 3, 3, C']
      out[:, i, j] = np.einsum("bxyc,xycf->bf", patch, kernel) + bias
  h = np.concatenate([np.maximum(out, 0).reshape(batch, -1), extra], axis=1)
  dense = sorted(params, key=lambda name: (len(name), name))  # Dense_0, Dense_1, ...
  dense = [name for name in dense if name.startswith("Dense")]
  for name in dense[:-1]:
    h = np.maximum(h @ params[name]["kernel"] + params[name]["bias"], 0)
  return (h @ params[dense[-1]]["kernel"] + params[dense[-1]]["bias"])[:, 0]


@pytest.mark.parametrize("inputs", ["obs", "obs_action", "obs_next_obs"])
@pytest.mark.parametrize("members", ["loop", "vmap"])
@pytest.mark.parametrize("steps_per_pass", [65_536, 4])  # 4: the 6 steps in 2 passes of 3
def test_conv_member_reward_matches_numpy(inputs, members, steps_per_pass):
  config = config_lib.default_config()
  config.reward.inputs, config.reward.members = inputs, members
  config.reward.steps_per_pass = steps_per_pass
  config.reward.hidden_sizes = (7, 5)
  size, actions = int(np.prod(FRAME)), 4
  model = reward_model.make_reward_model(config, size, actions, frame_shape=FRAME)
  state = model.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  obs, next_obs = (rng.integers(0, 2, (2, 3, size)).astype(np.float32) for _ in range(2))
  action = np.eye(actions, dtype=np.float32)[rng.integers(0, actions, (2, 3))]
  rewards = model.step_rewards(state.params, state.inputs, obs, action, next_obs)
  assert rewards.shape == (3, 2, 3)  # [M, ...steps]
  frames = obs.reshape(-1, *FRAME).astype(np.float64)
  extra = np.zeros((6, 0))
  if inputs == "obs_action":
    extra = action.reshape(6, actions)
  if inputs == "obs_next_obs":  # both frames, stacked as channels
    frames = np.concatenate([frames, next_obs.reshape(-1, *FRAME)], axis=-1)
  for m in range(3):
    params = jax.tree.map(np.asarray, reward_model.member(state.params, m)["params"])
    expected = numpy_conv_member(params, frames, extra).reshape(2, 3)
    np.testing.assert_allclose(rewards[m], expected, rtol=1e-4, atol=1e-5)
  # conv 3x3xC'x16 + 16, then (3 * 4 * 16 + E) x 7 + 7, 7 x 5 + 5, 5 x 1 + 1
  channels = 6 if inputs == "obs_next_obs" else 3
  count = 9 * channels * 16 + 16 + (192 + extra.shape[1]) * 7 + 7 + 40 + 6
  assert sum(x[0].size for x in jax.tree.leaves(state.params)) == count


def _frame_segments(key, num, length, channel):
  """Sparse random frames; the true reward of a step is its count of `channel` pixels."""
  frames = jax.random.bernoulli(key, 0.1, (num, length, *FRAME)).astype(jnp.float32)
  obs = frames.reshape(num, length, -1)
  true_reward = frames[..., channel].sum((-1, -2))
  action = jnp.zeros((num, length, 2))
  return Segment(
    obs, action, obs, true_reward, jnp.ones((num, length)), jnp.zeros((num, length, 1))
  )


@pytest.mark.parametrize("members", ["loop", "vmap"])
def test_conv_members_learn_which_channel_the_teacher_prefers(members):
  """Labels prefer segments with more pixels in channel 1 (as many pixels in each channel on
  average): a short fit lowers the loss and ranks new segments by that channel's count."""
  length = 5
  config = config_lib.default_config()
  config.reward.inputs, config.reward.members = "obs", members
  config.reward.hidden_sizes = (32,)
  config.reward.learning_rate = 1e-3
  model = reward_model.make_reward_model(config, int(np.prod(FRAME)), 2, frame_shape=FRAME)
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  first, second = (_frame_segments(k, 400, length, channel=1) for k in keys[:2])
  labels, valid = teachers.label(TeacherParams(), keys[2], first, second, 0.0)
  buffer = reward_model.init_preference_buffer(jax.tree.map(lambda x: x[0], first), 512, 3)
  buffer = reward_model.add_preferences(buffer, keys[3], first, second, labels, valid)
  state = model.init(keys[4])
  update = jax.jit(lambda s, k: model.update(s, buffer, k, 50))
  losses = []
  for step_key in jax.random.split(keys[5], 6):
    state, metrics = update(state, step_key)
    losses.append(float(metrics["rm_train_loss"]))
  assert losses[-1] < 0.6 * losses[0], losses
  assert float(metrics["rm_val_accuracy"]) > 0.8  # chance: 0.5; seen 0.87
  test = _frame_segments(jax.random.PRNGKey(9), 100, length, channel=1)
  learned = np.asarray(model.segment_returns(state.params, state.inputs, test)).mean(0)
  true = np.asarray(test.true_reward.sum(-1))
  assert np.corrcoef(learned, true)[0, 1] > 0.9
  # the other channels' counts are not what it learned
  other = np.asarray(test.obs.reshape(100, length, *FRAME)[..., 0].sum((1, 2, 3)))
  assert abs(np.corrcoef(learned, other)[0, 1]) < 0.5
