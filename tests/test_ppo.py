"""PPO pieces against independent references: a Python-loop GAE and hand-computed losses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import ppo
from rlhf_jax.types import Transition


def python_gae(rewards, values, bootstrap, discount, truncation, termination, gamma, lam):
  """GAE written as the textbook backward loop, one env at a time."""
  steps, batch = rewards.shape
  advantages = np.zeros((steps, batch))
  for b in range(batch):
    running = 0.0
    for t in reversed(range(steps)):
      next_value = values[t + 1, b] if t + 1 < steps else bootstrap[b]
      if truncation[t, b]:
        # A cut-off step has no successor in the data: no advantage, no carry.
        running = 0.0
        advantages[t, b] = 0.0
        continue
      not_done = 1.0 - termination[t, b]
      delta = rewards[t, b] + gamma * not_done * next_value - values[t, b]
      running = delta + gamma * lam * not_done * running
      advantages[t, b] = running
  del discount
  return advantages


class Net:
  """A stand-in network: `apply` as given."""

  def __init__(self, apply):
    self.apply = apply


class Dist:
  """A stand-in action distribution: the "logits" carry the log-prob; no entropy."""

  def log_prob(self, logits, raw_action):
    return logits[..., 0]

  def entropy(self, logits, key):
    return jnp.zeros(logits.shape[:-1])


def test_gae_matches_python_loop():
  rng = np.random.default_rng(0)
  steps, batch = 7, 5
  rewards = rng.normal(size=(steps, batch)).astype(np.float32)
  values = rng.normal(size=(steps, batch)).astype(np.float32)
  bootstrap = rng.normal(size=(batch,)).astype(np.float32)
  termination = np.zeros((steps, batch), np.float32)
  truncation = np.zeros((steps, batch), np.float32)
  termination[2, 0] = termination[5, 3] = 1
  truncation[4, 1] = truncation[6, 2] = 1
  gamma, lam = 0.97, 0.9
  targets, advantages = ppo.compute_gae(
    truncation=jnp.asarray(truncation),
    termination=jnp.asarray(termination),
    rewards=jnp.asarray(rewards),
    values=jnp.asarray(values),
    bootstrap_value=jnp.asarray(bootstrap),
    lambda_=lam,
    discount=gamma,
  )
  expected = python_gae(rewards, values, bootstrap, None, truncation, termination, gamma, lam)
  # Brax returns the one-step advantage on the λ-return targets; the λ-return itself
  # (targets) must equal values + the GAE of the loop.
  np.testing.assert_allclose(
    np.asarray(targets),
    (values + expected) * (1 - truncation) + values * truncation,
    rtol=1e-5,
    atol=1e-5,
  )
  # The policy's advantage is Brax's: one step on the λ-returns, r + γ G^λ_{t+1} - V.
  lambda_returns = np.asarray(targets)
  next_returns = np.concatenate([lambda_returns[1:], bootstrap[None]], axis=0)
  expected_advantages = (rewards + gamma * (1 - termination) * next_returns - values) * (
    1 - truncation
  )
  np.testing.assert_allclose(np.asarray(advantages), expected_advantages, rtol=1e-5, atol=1e-5)


def test_clipped_surrogate_hand_computed():
  ratio = jnp.array([0.5, 1.0, 1.5, 1.5])
  advantages = jnp.array([1.0, -2.0, 2.0, -1.0])
  # min(ρA, clip(ρ, 0.8, 1.2)A) per element:
  #   ρ=0.5, A=1  -> min(0.5, 0.8) = 0.5
  #   ρ=1.0, A=-2 -> min(-2, -2)   = -2
  #   ρ=1.5, A=2  -> min(3.0, 2.4) = 2.4
  #   ρ=1.5, A=-1 -> min(-1.5, -1.2) = -1.5
  expected = -(0.5 - 2.0 + 2.4 - 1.5) / 4
  assert float(ppo.clipped_surrogate_loss(ratio, advantages, 0.2)) == pytest.approx(expected)


def test_value_loss_hand_computed():
  values = jnp.array([1.0, 2.0, 0.0])
  targets = jnp.array([2.0, 0.0, 0.0])
  # ½ mean([1, 4, 0]) = 5/6
  assert float(ppo.value_loss(values, targets)) == pytest.approx(5 / 6)


def test_ppo_loss_hand_computed_case():
  """The full loss on a two-step batch, with networks frozen to known outputs."""
  cfg = config_lib.default_config().ppo
  cfg.gae_lambda = 1.0
  cfg.discounting = 0.5
  cfg.normalize_advantage = False
  cfg.clipping_epsilon = 0.2
  cfg.entropy_cost = 0.0
  cfg.value_loss_coefficient = 1.0

  class Networks:
    # policy "logits" carry the new log-prob; value = first obs feature.
    policy_network = Net(lambda norm, params, obs: obs[..., 1:2] + params)
    value_network = Net(lambda norm, params, obs: obs[..., 0] * params)
    parametric_action_distribution = Dist()

  # T=2, B=1. obs[...,0] is the value, obs[...,1] the new log-prob.
  obs = jnp.array([[[1.0, np.log(1.5)]], [[2.0, np.log(0.5)]]])
  next_obs = jnp.array([[[2.0, 0.0]], [[4.0, 0.0]]])
  data = Transition(
    obs=obs,
    action=jnp.zeros((2, 1, 1)),
    raw_action=jnp.zeros((2, 1, 1)),
    log_prob=jnp.zeros((2, 1)),
    reward=jnp.array([[1.0], [2.0]]),
    true_reward=jnp.zeros((2, 1)),
    discount=jnp.ones((2, 1)),
    truncation=jnp.zeros((2, 1)),
    next_obs=next_obs,
    episode_return=jnp.zeros((2, 1)),
    qpos=jnp.zeros((2, 1, 1)),
  )
  params = ppo.PPONetworkParams(policy=jnp.zeros(()), value=jnp.ones(()))
  loss, metrics = ppo.ppo_loss(params, None, data, jax.random.PRNGKey(0), Networks(), cfg)
  # values V = [1, 2], bootstrap V(s_2) = 4, γ = 0.5, λ = 1:
  #   returns G_1 = 2 + 0.5*4 = 4, G_0 = 1 + 0.5*4 = 3; advantages A = G - V = [2, 2]
  #   ratios ρ = [1.5, 0.5] -> clipped surrogate: min(3, 2.4)=2.4, min(1, 1.6)=1 -> -(3.4)/2
  #   value loss ½ mean([(3-1)², (4-2)²]) = 2
  assert float(metrics["policy_loss"]) == pytest.approx(-1.7, rel=1e-5)
  assert float(metrics["value_loss"]) == pytest.approx(2.0, rel=1e-5)
  assert float(loss) == pytest.approx(0.3, rel=1e-5)


def test_clipped_value_loss_hand_computed():
  values = jnp.array([1.0, 3.0])
  old_values = jnp.array([0.0, 3.0])
  targets = jnp.array([2.0, 0.0])
  # clip 0.5: V=1 may move only to 0.5 from 0 -> max((1-2)², (0.5-2)²) = 2.25;
  # V=3 has not moved -> (3-0)² = 9. ½ mean([2.25, 9]) = 2.8125
  assert float(ppo.clipped_value_loss(values, old_values, targets, 0.5)) == pytest.approx(2.8125)


def test_shuffle_into_minibatches_partitions_along_the_axis():
  steps, batch = 3, 12
  tree = {
    "a": jnp.arange(steps * batch).reshape(steps, batch),
    "b": jnp.arange(steps * batch).reshape(steps, batch) * 10,
  }
  out = ppo.shuffle_into_minibatches(tree, jax.random.PRNGKey(0), 4, axis=1)
  assert out["a"].shape == (4, steps, 3)
  np.testing.assert_array_equal(out["b"], out["a"] * 10)  # every leaf shuffled alike
  columns = np.asarray(out["a"][:, 0, :]).ravel()  # the env index of each sequence
  assert sorted(columns.tolist()) == list(range(batch))  # each sequence exactly once
  for m in range(4):  # whole sequences: rows of a column are the same env
    for j in range(3):
      env = int(out["a"][m, 0, j])
      np.testing.assert_array_equal(out["a"][m, :, j], np.arange(steps) * batch + env)
  flat = ppo.shuffle_into_minibatches(jnp.arange(20), jax.random.PRNGKey(1), 5, axis=0)
  assert flat.shape == (5, 4) and sorted(np.asarray(flat).ravel().tolist()) == list(range(20))


@pytest.mark.parametrize("steps_per_pass", [65_536, 12, 6])  # 1, 2 and 4 passes
def test_transition_minibatches_use_each_step_once_with_gae_from_before_the_update(
  steps_per_pass,
):
  """One epoch of minibatches="transitions" with plain SGD, on networks whose log-prob of
  step i is a parameter θ_i of its own (θ = 0 at first, so ρ = 1): each step's gradient is
  -A_i / n (n steps a minibatch), so θ_i ends at lr * A_i / n if and only if every step is
  used exactly once, with the textbook GAE of the values before the update (computed in
  passes of whole time steps when the batch exceeds ppo.steps_per_pass)."""
  cfg = config_lib.default_config().ppo
  cfg.update(
    minibatches="transitions",
    num_minibatches=3,
    num_updates_per_batch=1,
    normalize_advantage=False,
    normalize_observations=False,
    entropy_cost=0.0,
    value_loss_coefficient=0.0,
    discounting=0.9,
    gae_lambda=0.8,
    steps_per_pass=steps_per_pass,
  )

  class Networks:  # obs[..., 0]: the value; obs[..., 1]: the step's index
    policy_network = Net(lambda norm, params, obs: params[obs[..., 1].astype(jnp.int32)][..., None])
    value_network = Net(lambda norm, params, obs: obs[..., 0] * params)
    parametric_action_distribution = Dist()

  rng = np.random.default_rng(3)
  steps, batch = 4, 6
  values = rng.normal(size=(steps, batch)).astype(np.float32)
  bootstrap = rng.normal(size=(batch,)).astype(np.float32)
  rewards = rng.normal(size=(steps, batch)).astype(np.float32)
  termination = np.zeros((steps, batch), np.float32)
  truncation = np.zeros((steps, batch), np.float32)
  termination[1, 2] = 1
  truncation[2, 4] = 1
  index = np.arange(steps * batch, dtype=np.float32).reshape(steps, batch)
  next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
  data = Transition(
    obs=jnp.asarray(np.stack([values, index], axis=-1)),
    action=jnp.zeros((steps, batch, 1)),
    raw_action=jnp.zeros((steps, batch, 1)),
    log_prob=jnp.zeros((steps, batch)),
    reward=jnp.asarray(rewards),
    true_reward=jnp.zeros((steps, batch)),
    discount=jnp.asarray(1 - np.maximum(termination, truncation)),
    truncation=jnp.asarray(truncation),
    next_obs=jnp.asarray(np.stack([next_values, index], axis=-1)),
    episode_return=jnp.zeros((steps, batch)),
    qpos=jnp.zeros((steps, batch, 1)),
  )
  lr = 0.5
  optimizer = optax.sgd(lr)
  params = ppo.PPONetworkParams(policy=jnp.zeros(steps * batch), value=jnp.ones(()))
  state = ppo.PPOState(params, optimizer.init(params), None)
  update = ppo.make_update_fn(Networks(), optimizer, cfg)
  state, _ = update(state, data, jax.random.PRNGKey(0))
  gae = python_gae(rewards, values, bootstrap, None, truncation, termination, 0.9, 0.8)
  n = steps * batch // 3
  np.testing.assert_allclose(np.asarray(state.params.policy), lr * gae.ravel() / n, atol=1e-6)
  np.testing.assert_allclose(float(state.params.value), 1.0)  # no value loss, no change


def test_value_clipping_and_minibatches_are_validated():
  config = config_lib.default_config()
  config.ppo.minibatches = "episodes"
  with pytest.raises(ValueError, match="ppo.minibatches='episodes' is unknown"):
    config_lib.validate(config, device_count=1)
  config.ppo.minibatches = "sequences"
  config.ppo.value_clipping = 0.2
  with pytest.raises(ValueError, match="only config.ppo.minibatches='transitions' keeps"):
    config_lib.validate(config, device_count=1)
  config.ppo.minibatches = "transitions"
  config_lib.validate(config, device_count=1)
  config.ppo.value_clipping = -0.1
  with pytest.raises(ValueError, match="value_clipping must be >= 0"):
    config_lib.validate(config, device_count=1)
