"""The language-model losses and heads against hand-computed numbers, plain Python loops
and a float64 NumPy GPT-2 forward; then a few Adam steps of DPO and of the reward model
on the tiny model."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import reward_model
from rlhf_jax.lm import heads, losses
from tests import references
from tests.test_lm_model import CONFIG, MODEL, PARAMS, TENSORS

TOLERANCE = 1e-5

_log_probs = jax.jit(functools.partial(losses.token_log_probs, MODEL))
_forward = jax.jit(functools.partial(heads.completion_forward, MODEL))
_scores = jax.jit(functools.partial(heads.completion_scores, MODEL))
_values = jax.jit(functools.partial(heads.token_values, MODEL))


def padded_batch():
  """Three prompts (5, 3 and 1 real tokens, left-padded to 5) and completions (4, 2 and
  3 real tokens, right-padded to 4); the padding ids are arbitrary tokens."""
  rng = np.random.default_rng(11)
  prompts = rng.integers(0, CONFIG.vocab_size, (3, 5)).astype(np.int32)
  prompt_mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
  completions = rng.integers(0, CONFIG.vocab_size, (3, 4)).astype(np.int32)
  completion_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], bool)
  return prompts, prompt_mask, completions, completion_mask


def numpy_row(prompts, prompt_mask, completions, completion_mask, row):
  """Row `row`'s real prompt and completion tokens, and the float64 NumPy forward of the
  two joined (no padding): (prompt, completion, logits [L, V], hidden [L, D])."""
  prompt = prompts[row][prompt_mask[row]]
  completion = completions[row][completion_mask[row]]
  logits, hidden = references.gpt2_forward(
    TENSORS, np.concatenate([prompt, completion]), CONFIG.n_head
  )
  return prompt, completion, logits, hidden


def numpy_score(head, prompts, prompt_mask, completions, completion_mask, row):
  """A row's score [E] (E = 1 for a single head) from the NumPy forward of its real tokens."""
  kernel = np.asarray(head["kernel"]).reshape(CONFIG.n_embd, -1)
  hidden = numpy_row(prompts, prompt_mask, completions, completion_mask, row)[3]
  return hidden[-1] @ kernel + np.asarray(head["bias"]).reshape(-1)


def numpy_log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


# Log-probs of given completions.


def test_token_log_probs_equal_a_numpy_forward_of_each_unpadded_row():
  batch = padded_batch()
  log_probs = _log_probs(PARAMS, *batch)
  _, hidden = _forward(PARAMS, *batch)
  assert log_probs.shape == (3, 4) and hidden.shape == (3, 4, CONFIG.n_embd)
  for row in range(3):
    prompt, completion, logits, expected_hidden = numpy_row(*batch, row)
    table = numpy_log_softmax(logits)
    for n, token in enumerate(completion):
      slot = len(prompt) - 1 + n  # the token before completion token n
      assert abs(log_probs[row, n] - table[slot, token]) < TOLERANCE
      assert np.max(np.abs(hidden[row, n] - expected_hidden[slot])) < TOLERANCE
    assert np.all(log_probs[row, len(completion) :] == 0)
  assert np.min(log_probs[batch[3]]) < -3  # the model is not near-uniform over 97 tokens
  sums = losses.sequence_log_probs(log_probs, batch[3])
  np.testing.assert_allclose(sums, np.sum(np.where(batch[3], log_probs, 0), -1), rtol=1e-6)


def test_value_head_reads_the_slot_before_each_completion_token():
  batch = padded_batch()
  params = heads.with_head(jax.random.key(0), PARAMS, CONFIG.n_embd, std=0.3)
  values = _values(params, *batch)
  kernel, bias = np.asarray(params["head"]["kernel"]), float(params["head"]["bias"])
  for row in range(3):
    prompt, completion, _, hidden = numpy_row(*batch, row)
    slots = len(prompt) - 1 + np.arange(len(completion))
    np.testing.assert_allclose(
      values[row, : len(completion)], hidden[slots] @ kernel + bias, atol=1e-5
    )
    assert np.all(values[row, len(completion) :] == 0)


# The reward model's head.


def test_score_reads_the_last_real_token_and_equals_a_numpy_head():
  batch = padded_batch()
  prompts, prompt_mask, completions, completion_mask = batch
  params = heads.with_head(jax.random.key(1), PARAMS, CONFIG.n_embd)
  scores = _scores(params, *batch)
  expected = [numpy_score(params["head"], *batch, row)[0] for row in range(3)]
  np.testing.assert_allclose(scores, expected, atol=1e-5)

  other_padding = prompts.copy(), completions.copy()
  other_padding[0][~prompt_mask] = 3
  other_padding[1][~completion_mask] = 5
  assert (other_padding[0] != prompts).any() and (other_padding[1] != completions).any()
  same = _scores(params, other_padding[0], prompt_mask, other_padding[1], completion_mask)
  np.testing.assert_array_equal(same, scores)

  changed = completions.copy()
  changed[1, 1] = (changed[1, 1] + 1) % CONFIG.vocab_size  # row 1's last real token
  moved = _scores(params, prompts, prompt_mask, changed, completion_mask)
  assert abs(moved[1] - scores[1]) > 1e-3
  np.testing.assert_array_equal(np.asarray(moved)[[0, 2]], np.asarray(scores)[[0, 2]])


def test_reward_model_loss_through_the_head_is_bradley_terry_on_the_scores():
  prompts, prompt_mask, completions, completion_mask = padded_batch()
  first, first_mask = completions, completion_mask
  second = (completions * 7 + 1) % CONFIG.vocab_size
  second_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
  labels = np.array([1.0, 0.0, 0.5])
  for ensemble_size in (None, 3):
    params = heads.with_head(jax.random.key(2), PARAMS, CONFIG.n_embd, ensemble_size)
    scores_first = _scores(params, prompts, prompt_mask, first, first_mask)
    scores_second = _scores(params, prompts, prompt_mask, second, second_mask)
    loss, metrics = losses.reward_model_loss(scores_first, scores_second, labels, noise=0.1)

    head = params["head"]
    reference_first = np.array(
      [numpy_score(head, prompts, prompt_mask, first, first_mask, row) for row in range(3)]
    )  # [3, E]
    reference_second = np.array(
      [numpy_score(head, prompts, prompt_mask, second, second_mask, row) for row in range(3)]
    )
    np.testing.assert_allclose(np.reshape(scores_first, (3, -1)), reference_first, atol=1e-5)
    per_pair = reward_model.bradley_terry_loss(
      reference_first, reference_second, labels[:, None], 0.1
    )  # [3, E]
    assert abs(loss - np.sum(np.mean(per_pair, axis=0))) < 1e-5
    assert abs(metrics["rm_loss"] - np.mean(per_pair)) < 1e-5
    strict_correct = (reference_first[:2] > reference_second[:2]) == (labels[:2, None] > 0.5)
    assert abs(metrics["rm_accuracy"] - np.mean(strict_correct)) < 1e-6


def test_reward_model_loss_bootstrap_weights_by_hand():
  scores_first = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
  scores_second = jnp.zeros((3, 2))
  weights = jnp.array([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
  loss, metrics = losses.reward_model_loss(scores_first, scores_second, jnp.ones(3), 0.0, weights)
  softplus = lambda x: math.log1p(math.exp(x))  # -log σ(s) = softplus(-s)
  head_0 = (softplus(-1.0) + 2 * softplus(0.0)) / 3
  head_1 = (softplus(-2.0) + softplus(1.0)) / 2
  assert abs(loss - (head_0 + head_1)) < 1e-6
  # Head 0: pair 0 right, pair 1 a tie (not "first"), weight 2. Head 1: 1 of 2 right.
  assert abs(metrics["rm_accuracy"] - (1 / 3 + 1 / 2) / 2) < 1e-6


def test_score_normalization_and_folding_it_into_the_head():
  batch = padded_batch()
  params = heads.with_head(jax.random.key(3), PARAMS, CONFIG.n_embd, ensemble_size=2)
  raw = _scores(params, *batch)  # [3, 2]
  gain, bias = losses.score_normalization(raw)
  normalized = losses.normalize_scores(raw, gain, bias)
  np.testing.assert_allclose(np.mean(normalized, 0), 0, atol=1e-5)
  np.testing.assert_allclose(np.std(normalized, 0), 1, atol=1e-5)
  raw_np = np.asarray(raw, np.float64)
  np.testing.assert_allclose(gain, 1 / raw_np.std(0), rtol=1e-5)
  folded = dict(params, head=heads.fold_normalization(params["head"], gain, bias))
  np.testing.assert_allclose(_scores(folded, *batch), normalized, atol=1e-5)
  gain, bias = losses.score_normalization(jnp.array([1.0, 3.0]), target_mean=2.0, target_std=4.0)
  assert abs(gain - 4.0) < 1e-6 and abs(bias - (2.0 - 4.0 * 2.0)) < 1e-6


# The KL penalty and its controllers.


def test_kl_penalty_and_score_placement_by_hand():
  log_probs = jnp.array([[-1.0, -2.0, -0.5, -9.0], [-0.3, -1.2, -7.0, -7.0]])
  ref_log_probs = jnp.array([[-1.5, -1.0, -0.5, -1.0], [-0.1, -2.2, -1.0, -1.0]])
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  rewards, kl = losses.kl_penalized_rewards(
    log_probs, ref_log_probs, mask, jnp.array([2.0, -1.0]), 0.5
  )
  np.testing.assert_allclose(kl, [[0.5, -1.0, 0.0, 0.0], [-0.2, 1.0, 0.0, 0.0]], atol=1e-6)
  # -0.5 kl, then the score on each row's last real token (columns 2 and 1).
  np.testing.assert_allclose(rewards, [[-0.25, 0.5, 2.0, 0.0], [0.1, -1.5, 0.0, 0.0]], atol=1e-6)


def test_a_row_without_real_tokens_gets_no_reward():
  mask = jnp.array([[0, 0, 0], [1, 1, 1]], bool)
  rewards, kl = losses.kl_penalized_rewards(
    jnp.full((2, 3), -1.0), jnp.full((2, 3), -2.0), mask, jnp.array([5.0, 3.0]), 0.1
  )
  np.testing.assert_allclose(rewards, [[0, 0, 0], [-0.1, -0.1, 2.9]], atol=1e-6)
  np.testing.assert_allclose(kl, [[0, 0, 0], [1, 1, 1]])


def test_adaptive_kl_controller_by_hand():
  controller = losses.adaptive_kl(init_beta=0.1, target=6.0, horizon=10_000.0)
  update = jax.jit(controller.update)
  state = controller.init()
  expected = [
    (9.0, 0.101024),  # error 0.5 clipped to 0.2: β · (1 + 0.2 · 512 / 10000)
    (5.4, 0.1005067571),  # error -0.1: · (1 - 0.00512)
    (0.0, 0.0994775688),  # error -1 clipped to -0.2: · (1 - 0.01024)
    (6.0, 0.0994775688),  # on target: unchanged
  ]
  for kl, beta in expected:
    state = update(state, kl, 512)
    assert abs(float(state.beta) - beta) < 1e-8
  fixed = losses.fixed_kl(0.05)
  assert float(fixed.update(fixed.init(), 100.0, 512).beta) == pytest.approx(0.05)


# GAE.


def python_gae(rewards, values, mask, gamma, lambda_):
  """GAE row by row over the real tokens alone, in a plain double loop."""
  advantages = np.zeros_like(rewards)
  for row in range(rewards.shape[0]):
    real = [n for n in range(rewards.shape[1]) if mask[row, n]]
    next_value = next_advantage = 0.0
    for n in reversed(real):
      delta = rewards[row, n] + gamma * next_value - values[row, n]
      next_advantage = delta + gamma * lambda_ * next_advantage
      next_value = values[row, n]
      advantages[row, n] = next_advantage
  return advantages, np.where(mask, advantages + values, 0.0)


def test_gae_equals_a_python_loop_over_padded_rows():
  rng = np.random.default_rng(5)
  rewards = rng.normal(size=(5, 7))
  values = rng.normal(size=(5, 7))
  lengths = [7, 3, 1, 0, 5]
  mask = np.arange(7)[None, :] < np.array(lengths)[:, None]
  mask[4, 2] = False  # a hole: skipped like padding
  compute = jax.jit(losses.gae)
  for gamma, lambda_ in ((1.0, 0.95), (0.99, 0.0), (0.9, 1.0), (0.5, 0.5)):
    advantages, returns = compute(
      jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32), mask, gamma, lambda_
    )
    expected_advantages, expected_returns = python_gae(rewards, values, mask, gamma, lambda_)
    np.testing.assert_allclose(advantages, expected_advantages, atol=1e-5)
    np.testing.assert_allclose(returns, expected_returns, atol=1e-5)
  assert np.all(advantages[~mask] == 0)


def test_whiten_uses_only_the_real_tokens():
  values = jnp.array([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
  mask = jnp.array([[1, 1, 0], [1, 1, 0]], bool)
  real = np.array([1.0, 2.0, 3.0, 4.0])
  expected = (real - 2.5) / math.sqrt(1.25 + 1e-8)  # biased variance of 1..4: 1.25
  whitened = losses.whiten(values, mask)
  np.testing.assert_allclose(whitened[mask], expected, atol=1e-6)
  assert np.all(whitened[~mask] == 0)
  np.testing.assert_allclose(
    losses.whiten(values, mask, shift_mean=False)[mask], expected + 2.5, atol=1e-6
  )


# Token PPO.


def ppo_case():
  """Two rows of three tokens, the last of row 1 padding (with values that would
  dominate any loss that counted it)."""
  ratios = np.array([[1.1, 1.5, 0.5], [0.9, 0.7, 3.0]])
  old_log_probs = jnp.array([[-1.0, -2.0, -0.5], [-3.0, -0.2, -1.0]])
  return dict(
    log_probs=old_log_probs + jnp.log(ratios),
    old_log_probs=old_log_probs,
    advantages=jnp.array([[1.0, 2.0, -1.0], [-2.0, 0.5, 100.0]]),
    values=jnp.array([[1.0, 0.0, -1.0], [2.0, 0.5, 10.0]]),
    old_values=jnp.array([[0.5, 0.1, 0.0], [2.5, 0.5, 0.0]]),
    returns=jnp.array([[2.0, 0.05, -1.0], [3.0, 0.5, -10.0]]),
    mask=jnp.array([[1, 1, 1], [1, 1, 0]], bool),
  )


def test_token_ppo_loss_by_hand():
  case = ppo_case()
  # ε = 0.2; per token -min(ρA, clip(ρ)A):
  #   1.1·1 = 1.1 (inside);  min(1.5·2, 1.2·2) = 2.4;  min(0.5·-1, 0.8·-1) = -0.8;
  #   0.9·-2 = -1.8 (inside);  min(0.7·0.5, 0.8·0.5) = 0.35.
  policy = -(1.1 + 2.4 - 0.8 - 1.8 + 0.35) / 5
  # c = 0.2; per token max((V - R)², (clip(V, V_old ± c) - R)²):
  #   max(1, (0.7 - 2)²) = 1.69;  0.05² = 0.0025 both;  max(0, (-0.2 + 1)²) = 0.64;
  #   max(1, (2.3 - 3)²) = 1;  0.
  value = 0.5 * (1.69 + 0.0025 + 0.64 + 1.0 + 0.0) / 5
  assert (
    abs(
      losses.token_policy_loss(
        **_without(case, "values", "old_values", "returns"), clip_epsilon=0.2
      )
      - policy
    )
    < 1e-6
  )
  value_args = _without(case, "log_probs", "old_log_probs", "advantages")
  assert abs(losses.clipped_value_loss(**value_args, clip_range=0.2) - value) < 1e-6

  entropy = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
  loss, metrics = losses.token_ppo_loss(
    **case,
    clip_epsilon=0.2,
    value_clip=0.2,
    value_coefficient=0.1,
    entropy=entropy,
    entropy_coefficient=0.01,
  )
  assert abs(loss - (policy + 0.1 * value - 0.01 * 3.0)) < 1e-6
  assert abs(metrics["entropy"] - 3.0) < 1e-6
  assert abs(metrics["clip_fraction"] - 3 / 5) < 1e-6  # 1.5, 0.5 and 0.7 are outside 1 ± 0.2


def _without(case, *names):
  return {name: value for name, value in case.items() if name not in names}


def test_padding_gets_no_gradient_in_the_ppo_loss():
  case = ppo_case()

  def loss(log_probs, values):
    return losses.token_ppo_loss(**dict(case, log_probs=log_probs, values=values))[0]

  log_probs = case["log_probs"].at[1, 2].set(1000.0)  # exp overflows: must stay out of it
  value, (grad_log_probs, grad_values) = jax.value_and_grad(loss, argnums=(0, 1))(
    log_probs, case["values"]
  )
  assert np.isfinite(value) and np.all(np.isfinite(grad_log_probs))
  assert grad_log_probs[1, 2] == 0 and grad_values[1, 2] == 0
  assert grad_log_probs[0, 0] < 0  # inside the clip range with A > 0: raise log π
  assert grad_log_probs[0, 1] == 0  # clipped: no gradient


# DPO.


def test_dpo_loss_by_hand():
  # h = (-3 + 3.5) - (-4 + 4.5) = 0: loss = -log σ(0) = log 2.
  loss, _ = losses.dpo_loss(
    jnp.array([-3.0]), jnp.array([-4.0]), jnp.array([-3.5]), jnp.array([-4.5]), 0.1
  )
  assert abs(loss - math.log(2)) < 1e-6
  # h = (-3 + 4) - (-5 + 4.5) = 1.5, β h = 0.15: loss = log(1 + e^-0.15).
  args = (jnp.array(-3.0), jnp.array(-5.0), jnp.array(-4.0), jnp.array(-4.5))
  assert abs(losses.dpo_losses(*args, 0.1) - math.log1p(math.exp(-0.15))) < 1e-6
  smoothed = 0.9 * math.log1p(math.exp(-0.15)) + 0.1 * math.log1p(math.exp(0.15))
  assert abs(losses.dpo_losses(*args, 0.1, label_smoothing=0.1) - smoothed) < 1e-6
  # d loss / d log π(y_w) = -β σ(-β h) < 0: a descent step raises the chosen log-prob.
  grad_chosen = jax.grad(lambda chosen: losses.dpo_losses(chosen, *args[1:], 0.1))(args[0])
  assert abs(grad_chosen - (-0.1 / (1 + math.exp(0.15)))) < 1e-6


def test_dpo_metrics_by_hand():
  policy_chosen = jnp.array([-1.0, -2.0, -3.0])
  policy_rejected = jnp.array([-2.0, -1.0, -3.0])
  reference = jnp.full(3, -2.0)
  _, metrics = losses.dpo_loss(policy_chosen, policy_rejected, reference, reference, 0.5)
  # Implicit rewards 0.5·(π - ref): chosen (0.5, 0, -0.5), rejected (0, 0.5, -0.5).
  assert abs(metrics["dpo_margin"] - (0.5 - 0.5 + 0.0) / 3) < 1e-6
  assert abs(metrics["dpo_accuracy"] - 1 / 3) < 1e-6  # a tie is not a win


# A few steps on the tiny model.


def test_dpo_steps_raise_the_implicit_reward_margin_on_a_fixed_pair():
  prompt = jnp.array([[0, 0, 17, 42, 5]])
  prompt_mask = jnp.array([[0, 0, 1, 1, 1]], bool)
  chosen = jnp.array([[8, 9, 10, 0]])
  rejected = jnp.array([[30, 31, 0, 0]])
  completions = jnp.concatenate([chosen, rejected])
  completion_mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  prompts, prompt_masks = jnp.repeat(prompt, 2, 0), jnp.repeat(prompt_mask, 2, 0)
  beta = 0.1

  def sequences(params):  # [2]: log π(chosen | x), log π(rejected | x)
    log_probs = losses.token_log_probs(
      MODEL, params, prompts, prompt_masks, completions, completion_mask
    )
    return losses.sequence_log_probs(log_probs, completion_mask)

  reference = sequences(PARAMS)
  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(params, optimizer_state):
    def loss_fn(params):
      policy = sequences(params)
      return losses.dpo_loss(policy[:1], policy[1:], reference[:1], reference[1:], beta)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
    return optax.apply_updates(params, updates), optimizer_state, metrics

  params, optimizer_state = PARAMS, optimizer.init(PARAMS)
  margins = []
  for _ in range(8):
    params, optimizer_state, metrics = step(params, optimizer_state)
    margins.append(float(metrics["dpo_margin"]))
  assert margins[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
  assert margins[-1] > 0.5 and all(b > a for a, b in zip(margins, margins[1:], strict=False))
  policy = sequences(params)
  assert policy[0] > reference[0]  # the chosen completion became more likely


def test_reward_model_steps_fit_a_separable_set_of_comparisons():
  # The chosen completion ends in an even token, the rejected one in an odd token.
  rng = np.random.default_rng(9)
  pairs = 16
  prompts = rng.integers(0, CONFIG.vocab_size, (pairs, 3))
  prompt_mask = np.ones((pairs, 3), bool)
  chosen = rng.integers(0, CONFIG.vocab_size, (pairs, 3))
  rejected = rng.integers(0, CONFIG.vocab_size, (pairs, 3))
  chosen[:, -1] = 2 * rng.integers(0, CONFIG.vocab_size // 2, pairs)
  rejected[:, -1] = 2 * rng.integers(0, CONFIG.vocab_size // 2, pairs) + 1
  completion_mask = np.ones((pairs, 3), bool)
  both = lambda x: jnp.concatenate([x, x])
  tokens = jnp.concatenate([chosen, rejected])
  labels = jnp.ones(pairs)
  optimizer = optax.adam(3e-3)

  def loss_fn(params):
    scores = heads.completion_scores(
      MODEL, params, both(prompts), both(prompt_mask), tokens, both(completion_mask)
    )
    return losses.reward_model_loss(scores[:pairs], scores[pairs:], labels)

  @jax.jit
  def step(params, optimizer_state):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
    return optax.apply_updates(params, updates), optimizer_state, metrics

  params = heads.with_head(jax.random.key(4), PARAMS, CONFIG.n_embd)
  optimizer_state = optimizer.init(params)
  accuracies = []
  for _ in range(10):
    params, optimizer_state, metrics = step(params, optimizer_state)
    accuracies.append(float(metrics["rm_accuracy"]))
  assert accuracies[0] < 0.8  # before the first step: near chance
  assert accuracies[-1] == 1.0
