"""PPO pieces against independent references: a Python-loop GAE and hand-computed losses."""

import jax
import jax.numpy as jnp
import numpy as np
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

  class Net:
    def __init__(self, apply):
      self.apply = apply

  class Dist:
    def log_prob(self, logits, raw_action):
      return logits[..., 0]

    def entropy(self, logits, key):
      return jnp.zeros(logits.shape[:-1])

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
