"""SAC's pieces: the targets and losses by hand, against Brax's own losses, the buffer."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from brax.training import types as brax_types
from brax.training.acme import running_statistics
from brax.training.agents.sac import losses as brax_sac_losses

from rlhf_jax import sac
from rlhf_jax.types import Transition

OBS, ACT = 5, 3


def sac_config(**overrides):
  config = ml_collections.ConfigDict(
    {
      "normalize_observations": True,
      "hidden_sizes": (16, 16),
      "learning_rate": 3e-4,
      "alpha_learning_rate": 3e-4,
      "discount": 0.97,
      "reward_scaling": 2.0,
      "tau": 0.005,
      "target_entropy": -0.5,  # per action dimension, as Brax
    }
  )
  config.update(overrides)
  return config


def test_critic_target_by_hand():
  # min(2, 3) = 2; 2 - 0.2 * (-0.5) = 2.1; 1.5 * 1 + 0.99 * 1 * 2.1 = 3.579
  args = dict(next_q=jnp.array([2.0, 3.0]), next_log_prob=jnp.array(-0.5), alpha=0.2, gamma=0.99)
  target = sac.critic_target(jnp.array(1.0), jnp.array(1.0), **args, reward_scaling=1.5)
  assert float(target) == pytest.approx(1.5 + 0.99 * 2.1, rel=1e-6)
  ended = sac.critic_target(jnp.array(1.0), jnp.array(0.0), **args, reward_scaling=1.5)
  assert float(ended) == pytest.approx(1.5, rel=1e-6)  # no bootstrap past a terminal step


def test_critic_loss_by_hand_leaves_truncated_steps_out():
  q = jnp.array([[1.0, 2.0], [0.0, 4.0]])
  target = jnp.array([1.5, 10.0])
  # First row: errors -0.5, 0.5; second row truncated. ½ mean over 2 x 2 = ½ (0.5) / 4.
  loss = sac.critic_loss_value(q, target, jnp.array([0.0, 1.0]))
  assert float(loss) == pytest.approx(0.5 * (0.25 + 0.25) / 4, rel=1e-6)


def test_temperature_loss_and_its_gradient_by_hand():
  log_alpha = jnp.array(math.log(0.5))
  log_prob = jnp.array([-1.0, -3.0])
  target_entropy = -1.5
  # -log_prob - target = [2.5, 4.5], mean 3.5; α = 0.5: loss 1.75. d/d log α = α · 3.5.
  loss, grad = jax.value_and_grad(sac.alpha_loss_value)(log_alpha, log_prob, target_entropy)
  assert float(loss) == pytest.approx(1.75, rel=1e-6)
  assert float(grad) == pytest.approx(1.75, rel=1e-6)  # > 0: entropy above target, α falls
  below = jax.grad(sac.alpha_loss_value)(log_alpha, jnp.array([3.0, 1.0]), target_entropy)
  assert float(below) < 0  # entropy below its target: α rises


def _batch(key, size=32):
  keys = jax.random.split(key, 6)
  obs = jax.random.normal(keys[0], (size, OBS))
  action = jax.random.uniform(keys[1], (size, ACT), minval=-1, maxval=1)
  return Transition(
    obs=obs,
    action=action,
    raw_action=action,
    log_prob=jnp.zeros(size),
    reward=jax.random.normal(keys[2], (size,)),
    true_reward=jnp.zeros(size),
    discount=(jax.random.uniform(keys[3], (size,)) > 0.2).astype(jnp.float32),
    truncation=(jax.random.uniform(keys[4], (size,)) > 0.8).astype(jnp.float32),
    next_obs=jax.random.normal(keys[5], (size, OBS)),
    episode_return=jnp.zeros(size),
    qpos=obs,
  )


def test_losses_equal_brax_sac_losses():
  config = sac_config()
  networks = sac.make_networks(OBS, ACT, config)
  state = sac.init_state(jax.random.PRNGKey(0), networks, sac.make_optimizers(config), OBS)
  batch = _batch(jax.random.PRNGKey(1))
  # Different online and target critics, and a normalizer that is not the identity.
  target_q = networks.q_network.init(jax.random.PRNGKey(2))
  params = state.params._replace(target_q=target_q)
  normalizer = running_statistics.update(state.normalizer, batch.obs)
  ours = sac.make_losses(networks, config, ACT)
  alpha_fn, critic_fn, actor_fn = brax_sac_losses.make_losses(
    networks, config.reward_scaling, config.discount, ACT
  )
  brax_batch = brax_types.Transition(
    observation=batch.obs,
    action=batch.action,
    reward=batch.reward,
    discount=batch.discount,
    next_observation=batch.next_obs,
    extras={"state_extras": {"truncation": batch.truncation}},
  )
  key = jax.random.PRNGKey(3)
  alpha = jnp.float32(0.3)
  log_alpha = jnp.log(alpha)
  pairs = [
    (
      ours.alpha(log_alpha, params.policy, normalizer, batch, key),
      alpha_fn(log_alpha, params.policy, normalizer, brax_batch, key),
    ),
    (
      ours.critic(params.q, params, alpha, normalizer, batch, key),
      critic_fn(params.q, params.policy, normalizer, target_q, alpha, brax_batch, key),
    ),
    (
      ours.actor(params.policy, params.q, alpha, normalizer, batch, key),
      actor_fn(params.policy, normalizer, params.q, alpha, brax_batch, key),
    ),
  ]
  for mine, theirs in pairs:
    assert float(mine) == pytest.approx(float(theirs), rel=1e-5, abs=1e-6)


def test_update_moves_the_target_critic_by_tau():
  config = sac_config(tau=0.1)
  networks = sac.make_networks(OBS, ACT, config)
  state = sac.init_state(jax.random.PRNGKey(0), networks, sac.make_optimizers(config), OBS)
  update = jax.jit(sac.make_update_fn(networks, sac.make_optimizers(config), config, ACT))
  batch = jax.tree.map(lambda x: x[None], _batch(jax.random.PRNGKey(1)))  # one step
  new, metrics = update(state, batch, jax.random.PRNGKey(2))
  expected = jax.tree.map(lambda old, q: 0.9 * old + 0.1 * q, state.params.target_q, new.params.q)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    new.params.target_q,
    expected,
  )
  assert all(np.isfinite(float(v)) for v in metrics.values())
  # α took one Adam step from 1: its first step has size learning_rate.
  assert abs(float(metrics["alpha"]) - 1.0) == pytest.approx(3e-4, rel=0.05)


def test_buffer_wraps_around_and_samples_only_stored_rows():
  example = _batch(jax.random.PRNGKey(0), size=1)
  example = jax.tree.map(lambda x: x[0], example)
  buffer = sac.init_buffer(example, capacity=5)

  def rows(start, count):  # [count, 1] transitions whose reward is their number
    batch = _batch(jax.random.PRNGKey(start), size=count)
    batch = batch._replace(reward=jnp.arange(start, start + count, dtype=jnp.float32))
    return jax.tree.map(lambda x: x[:, None], batch)  # [L, N=1]

  buffer = sac.add(buffer, rows(0, 3))
  assert int(buffer.size) == 3 and int(buffer.next_index) == 3
  buffer = sac.add(buffer, rows(3, 4))  # rows 3, 4 fill slots 3, 4; 5, 6 overwrite 0, 1
  np.testing.assert_array_equal(buffer.data.reward, [[5.0, 6.0, 2.0, 3.0, 4.0]])
  assert int(buffer.size) == 5 and int(buffer.next_index) == 2
  # Time-major rows of several envs keep their order: [L=2, N=3] -> rows 0..5.
  two_by_three = jax.tree.map(
    lambda x: x.reshape((2, 3) + x.shape[1:]), _batch(jax.random.PRNGKey(9), 6)
  )
  two_by_three = two_by_three._replace(reward=jnp.arange(6.0).reshape(2, 3) + 10)
  fresh = sac.add(sac.init_buffer(example, capacity=8), two_by_three)
  np.testing.assert_array_equal(fresh.data.reward[0, :6], 10 + np.arange(6.0))

  partial = sac.add(sac.init_buffer(example, capacity=100), rows(0, 3))
  drawn = sac.sample(partial, jax.random.PRNGKey(4), (1000,))
  assert set(np.unique(drawn.reward).tolist()) == {0.0, 1.0, 2.0}


def test_buffer_of_several_rings_keeps_each_blocks_envs_and_samples_within_rings():
  """Two rings (two devices): ring d holds the steps of envs [2d, 2d + 1], and the last
  axis of a sample is half from each ring."""
  example = jax.tree.map(lambda x: x[0], _batch(jax.random.PRNGKey(0), size=1))
  buffer = sac.init_buffer(example, capacity=13, rings=2)  # 6 rows each
  assert buffer.data.reward.shape == (2, 6)
  # 3 steps of 4 envs; step l of env n has reward 10 l + n.
  step = jax.tree.map(lambda x: x.reshape((3, 4) + x.shape[1:]), _batch(jax.random.PRNGKey(1), 12))
  rewards = 10.0 * np.arange(3)[:, None] + np.arange(4)[None, :]
  buffer = sac.add(buffer, step._replace(reward=jnp.asarray(rewards, jnp.float32)))
  np.testing.assert_array_equal(buffer.data.reward[0], [0, 1, 10, 11, 20, 21])
  np.testing.assert_array_equal(buffer.data.reward[1], [2, 3, 12, 13, 22, 23])
  assert int(buffer.size) == 12 and int(buffer.next_index) == 0  # both rings full
  drawn = sac.sample(buffer, jax.random.PRNGKey(2), (50, 8)).reward
  assert drawn.shape == (50, 8)
  assert set(np.asarray(drawn[:, :4]).ravel() % 10) <= {0, 1}  # envs 0, 1: ring 0
  assert set(np.asarray(drawn[:, 4:]).ravel() % 10) <= {2, 3}
  assert len(np.unique(drawn)) == 12  # every stored row can be drawn


def test_knn_distance_equals_a_numpy_brute_force():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 4)).astype(np.float32)
  reference = rng.normal(size=(50, 4)).astype(np.float32)
  for k in (1, 3, 6):
    expected = [sorted(np.linalg.norm(reference - row, axis=1))[k - 1] for row in x]
    got = sac.knn_distance(jnp.asarray(x), jnp.asarray(reference), k)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_state_entropy_reward_skips_the_state_itself_and_is_in_std_units():
  # Points on a line at 0, 1, 3, 7: with themselves as reference and k = 1 each one's
  # nearest other point is at 1, 1, 2, 4.
  obs = jnp.array([[0.0], [1.0], [3.0], [7.0]])
  reward = sac.state_entropy_reward(obs, obs, k=1)
  distance = np.array([1.0, 1.0, 2.0, 4.0])
  np.testing.assert_allclose(reward, distance / distance.std(), rtol=1e-4)


def test_unsupervised_pretraining_runs_then_hands_over_to_the_task_reward(tmp_path):
  from rlhf_jax import train  # noqa: PLC0415
  from tests.test_loop import tiny_sac_pref_config  # noqa: PLC0415

  config = tiny_sac_pref_config()
  config.sac.unsupervised_env_steps = 80  # the first two of six iterations
  config.sac.entropy_reference = 32
  result = train.train(config, str(tmp_path / "run"))
  assert int(result.state.agent.env_steps) == 240
  assert all(np.isfinite(r["critic_loss"]) for r in result.records)  # a NaN stops a run
