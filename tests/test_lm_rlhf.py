"""The RLHF learners on the tiny language model: token PPO learns a programmed reward and
holds still under a huge KL coefficient; one step at learning rate 0 against a Python
GAE; the KL controller inside the step; DPO and reward-model fits on separable data;
score normalization; best-of-n against n separate samples and its KL formula against
an exact computation."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.lm import best_of_n, dpo, heads, losses, rm, sampling, token_ppo
from tests.test_lm_model import CONFIG, MODEL, PARAMS

VOCAB = CONFIG.vocab_size  # 97
TARGET_TOKEN = 7

# Shared compiled helpers: eager calls of the model compile op by op, which costs more.
_apply = jax.jit(MODEL.apply)
_scores = jax.jit(functools.partial(heads.completion_scores, MODEL))
_values = jax.jit(functools.partial(heads.token_values, MODEL))
_log_probs = jax.jit(functools.partial(losses.token_log_probs, MODEL))
_sample = jax.jit(sampling.sample, static_argnames=("model", "max_new_tokens", "top_k", "eos_id"))


def equal_trees(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def share_of_target(_, prompts, prompt_mask, tokens, mask):
  """The toy reward: the fraction of a completion's real tokens equal to TARGET_TOKEN."""
  hits = jnp.sum((tokens == TARGET_TOKEN) & mask, axis=-1)
  return hits / jnp.maximum(jnp.sum(mask, axis=-1), 1)


def share_below_50(_, prompts, prompt_mask, tokens, mask):
  return jnp.sum((tokens < 50) & mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)


def numpy_softmax(logits):
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)


# Token PPO learns a toy objective.


@functools.cache
def learning_ppo():
  config = token_ppo.default_config()
  config.max_new_tokens = 8
  config.learning_rate = 1e-2
  config.value_learning_rate = 1e-3
  config.ppo_epochs = 4
  config.num_minibatches = 2
  config.kl.controller = "fixed"  # β lives in the state: one compiled step serves any β
  config.kl.init_beta = 0.01
  ppo = token_ppo.make_token_ppo(MODEL, config, share_of_target)
  return ppo, jax.jit(ppo.step)


def run_ppo(beta: float, steps: int = 12):
  """`steps` PPO steps from a freshly initialized (near-uniform) tiny model on 32 fixed
  prompts; returns (initial params, prompts, final state, metrics of every step)."""
  ppo, step = learning_ppo()
  params = MODEL.init(jax.random.key(0))
  prompts = jax.random.randint(jax.random.key(1), (32, 4), 0, VOCAB)
  prompt_mask = jnp.ones((32, 4), bool)
  state = ppo.init(params, params)
  state = state.replace(kl=losses.KLControllerState(jnp.float32(beta)))
  history = []
  for i in range(steps):
    state, metrics = step(state, prompts, prompt_mask, jax.random.key(100 + i))
    history.append({k: float(v) for k, v in metrics.items()})
  return params, prompts, state, history


def first_token_distributions(params, prompts):
  """The model's next-token distribution [B, V] after each (unpadded) prompt, NumPy."""
  logits = _apply(params, prompts, jnp.ones_like(prompts))
  return numpy_softmax(np.asarray(logits[:, -1], np.float64))


def test_token_ppo_raises_a_programmed_score_and_a_huge_beta_holds_the_reference():
  params, prompts, state, history = run_ppo(beta=0.01)
  # Independently of the PPO code: the initial policy's chance of the target token after
  # a prompt is about 1/V, the expected score of its completions.
  p_target = first_token_distributions(params, prompts)[:, TARGET_TOKEN].mean()
  assert 0.5 / VOCAB < p_target < 2 / VOCAB
  assert history[0]["score"] < 0.05  # 256 tokens at ~1/97: a few hits
  assert np.mean([h["score"] for h in history[-2:]]) > 0.4  # over 40 times the start
  assert history[-1]["kl"] > 5  # it got there by moving far from the reference
  assert equal_trees(state.reference_params, params)
  assert int(state.steps) == 12

  _, _, held, held_history = run_ppo(beta=100.0)
  assert np.mean([h["score"] for h in held_history[-2:]]) < 0.05
  assert held_history[-1]["kl"] < 0.1 * history[-1]["kl"]

  # The exact KL of the first completion token's distribution, computed here.
  def first_token_kl(policy_params):
    p = first_token_distributions(policy_params, prompts)
    q = first_token_distributions(params, prompts)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))

  free_kl, held_kl = first_token_kl(state.policy_params), first_token_kl(held.policy_params)
  assert free_kl > 1.0 and held_kl < 0.05 * free_kl


# One step at learning rate 0, against a Python GAE; the KL controller in the step.

GAMMA, LAMBDA, EOS = 0.9, 0.8, 89  # 89: a likely token of PARAMS, so lengths vary
KL_TARGET, KL_HORIZON, BATCH = 1.0, 100.0, 8


@functools.cache
def frozen_ppo():
  config = token_ppo.default_config()
  config.max_new_tokens = 8
  config.eos_id = EOS
  config.learning_rate = 0.0
  config.value_learning_rate = 0.0
  config.ppo_epochs = 1
  config.num_minibatches = 1
  config.gamma, config.gae_lambda = GAMMA, LAMBDA
  config.whiten_advantages = False
  config.kl.controller = "adaptive"
  config.kl.init_beta = 0.5
  config.kl.target, config.kl.horizon = KL_TARGET, KL_HORIZON
  ppo = token_ppo.make_token_ppo(MODEL, config, share_below_50)
  return ppo, jax.jit(ppo.step), jax.jit(ppo.collect)


def frozen_batch():
  prompts = jax.random.randint(jax.random.key(3), (BATCH, 5), 0, VOCAB)
  prompt_mask = jnp.ones((BATCH, 5), bool).at[:4, :2].set(False)
  return prompts, prompt_mask


def python_gae(rewards, values, length):
  """One row's GAE over its first `length` tokens, a plain loop: (advantages, returns)."""
  advantages = np.zeros(len(rewards))
  next_value = next_advantage = 0.0
  for n in reversed(range(length)):
    delta = rewards[n] + GAMMA * next_value - values[n]
    next_advantage = delta + GAMMA * LAMBDA * next_advantage
    advantages[n], next_value = next_advantage, values[n]
  return advantages, np.where(np.arange(len(rewards)) < length, advantages + values, 0.0)


def test_a_ppo_step_at_learning_rate_0_changes_nothing_and_its_targets_are_a_python_gae():
  ppo, step, collect = frozen_ppo()
  value_model = heads.with_head(jax.random.key(2), PARAMS, CONFIG.n_embd)  # a stand-in RM
  state = ppo.init(PARAMS, value_model)
  prompts, prompt_mask = frozen_batch()
  key = jax.random.key(4)
  new_state, metrics = step(state, prompts, prompt_mask, key)

  assert equal_trees(new_state.policy_params, PARAMS)
  assert equal_trees(new_state.value_params, value_model)
  assert equal_trees(new_state.reference_params, PARAMS)
  assert abs(metrics["kl"]) < 1e-6  # the policy is the reference
  assert metrics["clip_fraction"] == 0 and abs(metrics["approx_kl"]) < 1e-6
  # KL 0 is below the target: e = clip(0 / target - 1, ±0.2) = -0.2.
  assert float(new_state.kl.beta) == pytest.approx(0.5 * (1 - 0.2 * BATCH / KL_HORIZON))
  assert metrics["beta"] == pytest.approx(0.5)

  # The step's samples: `collect` with the first half of the step's key.
  experience, collected = collect(state, prompts, prompt_mask, jax.random.split(key)[0])
  tokens, mask = np.asarray(experience.tokens), np.asarray(experience.mask)
  lengths = mask.sum(-1)
  assert lengths.min() < 8 and lengths.max() == 8  # some rows stopped at EOS
  assert metrics["score"] == pytest.approx(collected["score"])

  scores = np.array([np.mean(row[:n] < 50) for row, n in zip(tokens, lengths, strict=True)])
  values = np.asarray(_values(value_model, prompts, prompt_mask, tokens, mask))
  all_advantages, all_returns = [], []
  for row in range(BATCH):
    rewards = np.zeros(8)
    rewards[lengths[row] - 1] = scores[row]  # the KL term is 0: policy == reference
    advantages, returns = python_gae(rewards, values[row], lengths[row])
    all_advantages.append(advantages)
    all_returns.append(returns)
  np.testing.assert_allclose(experience.returns, all_returns, atol=1e-5)
  np.testing.assert_allclose(experience.advantages, all_advantages, atol=1e-5)
  assert metrics["score"] == pytest.approx(scores.mean(), abs=1e-6)

  # The losses the step reports, from these targets: ratio 1, values unchanged.
  real = mask.astype(bool)
  advantages, returns = np.array(all_advantages)[real], np.array(all_returns)[real]
  assert metrics["policy_loss"] == pytest.approx(-advantages.mean(), abs=1e-5)
  expected_value_loss = 0.5 * np.mean((values[real] - returns) ** 2)
  assert metrics["value_loss"] == pytest.approx(expected_value_loss, rel=1e-4)


def test_the_kl_controller_in_the_step_raises_beta_when_kl_exceeds_the_target():
  ppo, step, _ = frozen_ppo()
  reference = MODEL.init(jax.random.key(9))  # far from PARAMS: KL ≫ target
  state = ppo.init(PARAMS, PARAMS, reference_params=reference)
  assert float(state.value_params["head"]["kernel"].std()) == 0  # a bare trunk: zero head
  new_state, metrics = step(state, *frozen_batch(), jax.random.key(5))
  assert metrics["kl"] > 1.2 * KL_TARGET
  assert float(new_state.kl.beta) == pytest.approx(0.5 * (1 + 0.2 * BATCH / KL_HORIZON))
  assert metrics["next_beta"] == pytest.approx(float(new_state.kl.beta))


def test_value_model_from_an_ensemble_reward_model_scores_the_members_mean():
  reward_model = heads.with_head(jax.random.key(6), PARAMS, CONFIG.n_embd, ensemble_size=3)
  value_model = token_ppo.value_model_from(reward_model)
  prompts, prompt_mask = frozen_batch()
  tokens = jax.random.randint(jax.random.key(7), (BATCH, 4), 0, VOCAB)
  mask = jnp.ones((BATCH, 4), bool)
  members = _scores(reward_model, prompts, prompt_mask, tokens, mask)
  single = _scores(value_model, prompts, prompt_mask, tokens, mask)
  np.testing.assert_allclose(single, np.mean(members, axis=-1), atol=1e-5)


def test_token_ppo_names_its_configuration_errors():
  config = token_ppo.default_config()
  config.max_new_tokens = 4
  config.num_minibatches = 3
  ppo = token_ppo.make_token_ppo(MODEL, config, share_of_target)
  state = ppo.init(PARAMS, PARAMS)
  prompts, prompt_mask = frozen_batch()
  with pytest.raises(ValueError, match="num_minibatches=3"):
    jax.eval_shape(ppo.step, state, prompts, prompt_mask, jax.random.key(0))
  config.num_minibatches = 2
  ensemble_scores = lambda *args: jnp.zeros((BATCH, 3))
  ppo = token_ppo.make_token_ppo(MODEL, config, ensemble_scores)
  with pytest.raises(ValueError, match="one score per prompt"):
    jax.eval_shape(ppo.step, state, prompts, prompt_mask, jax.random.key(0))
  config.kl.controller = "pid"
  with pytest.raises(ValueError, match="kl.controller='pid'"):
    token_ppo.make_token_ppo(MODEL, config, share_of_target)


# DPO.


def test_dpo_steps_raise_the_margin_of_preferred_completions_and_keep_the_reference():
  prompt = jnp.array([[0, 0, 17, 42, 5], [3, 1, 4, 1, 5], [0, 9, 2, 6, 5]])
  prompt_mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], bool)
  first = jnp.array([[8, 9, 10, 0], [30, 31, 0, 0], [50, 51, 52, 53]])
  first_mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
  second = jnp.array([[30, 31, 0, 0], [8, 9, 10, 11], [60, 61, 0, 0]])
  second_mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
  labels = jnp.array([1.0, 0.0, 0.5])  # the first, the second, a tie
  batch = rm.Comparisons(prompt, prompt_mask, first, first_mask, second, second_mask, labels)

  config = dpo.default_config()
  config.learning_rate = 1e-3
  learner = dpo.make_dpo(MODEL, config)
  state = learner.init(PARAMS)
  step = jax.jit(learner.step)
  margins = []
  for _ in range(8):
    state, metrics = step(state, batch)
    margins.append(float(metrics["dpo_margin"]))
  assert margins[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
  assert all(b > a for a, b in zip(margins, margins[1:], strict=False)) and margins[-1] > 0.5
  assert equal_trees(state.reference_params, PARAMS)

  # The margin recomputed here, row by row: β (Δ(preferred) - Δ(other)) over strict pairs.
  def delta(completions, masks, row):
    rows = slice(row, row + 1)
    log_prob = lambda params: losses.sequence_log_probs(
      _log_probs(params, prompt[rows], prompt_mask[rows], completions[rows], masks[rows]),
      masks[rows],
    )[0]
    return float(log_prob(state.params) - log_prob(PARAMS))

  preferred = [delta(first, first_mask, 0), delta(second, second_mask, 1)]
  other = [delta(second, second_mask, 0), delta(first, first_mask, 1)]
  expected = config.beta * np.mean(np.subtract(preferred, other))
  evaluated = jax.jit(learner.evaluate)(state, batch)
  assert evaluated["dpo_margin"] == pytest.approx(expected, abs=1e-4)
  assert evaluated["dpo_accuracy"] == 1.0
  assert evaluated["dpo_chosen_reward"] == pytest.approx(config.beta * np.mean(preferred), 1e-3)


# The reward model.


def rule_comparisons(seed: int, pairs: int, ensemble_size: int | None = None):
  """Comparisons of completions over tokens 0..19 under a rule: a completion whose last
  token is below 10 beats one whose last token is not; two of a kind tie (label 0.5)."""
  rng = np.random.default_rng(seed)
  first = rng.integers(0, 20, (pairs, 4))
  second = rng.integers(0, 20, (pairs, 4))
  good_first, good_second = first[:, -1] < 10, second[:, -1] < 10
  labels = np.where(good_first == good_second, 0.5, good_first.astype(float))
  weights = None
  if ensemble_size is not None:
    weights = rm.bootstrap_weights(jax.random.key(seed), pairs, ensemble_size)
  return rm.Comparisons(
    prompts=jnp.asarray(rng.integers(0, VOCAB, (pairs, 3))),
    prompt_mask=jnp.ones((pairs, 3), bool),
    first=jnp.asarray(first),
    first_mask=jnp.ones((pairs, 4), bool),
    second=jnp.asarray(second),
    second_mask=jnp.ones((pairs, 4), bool),
    labels=jnp.asarray(labels, jnp.float32),
    weights=weights,
  )


def test_reward_model_fit_reaches_high_held_out_accuracy_and_normalizes_to_mean_0_std_1():
  config = rm.default_config()
  config.learning_rate = 3e-3
  config.ensemble_size = 3
  fit = rm.make_reward_fit(MODEL, config)
  sft_params = MODEL.init(jax.random.key(0))
  state = fit.init(jax.random.key(1), sft_params)
  train, held_out = rule_comparisons(0, 64, ensemble_size=3), rule_comparisons(1, 64)
  assert 20 < int(np.sum(held_out.labels != 0.5)) < 64  # strict pairs and ties both
  step, evaluate = jax.jit(fit.step), jax.jit(fit.evaluate)
  before = evaluate(state.params, held_out)
  for _ in range(40):
    state, metrics = step(state, train)
  after = evaluate(state.params, held_out)
  assert before["rm_accuracy"] < 0.8
  assert metrics["rm_accuracy"] > 0.95 and after["rm_accuracy"] > 0.9
  assert not equal_trees(state.params["transformer"], sft_params)

  # Normalize over completions the SFT model samples; each member: mean 0, std 1.
  prompts = jax.random.randint(jax.random.key(2), (64, 3), 0, VOCAB)
  prompt_mask = jnp.ones((64, 3), bool)
  sample = _sample(MODEL, sft_params, jax.random.key(3), prompts, prompt_mask, 4)
  normalize = jax.jit(rm.normalize, static_argnums=0)
  normalized, _ = normalize(MODEL, state.params, prompts, prompt_mask, *sample[:2])
  members = np.asarray(_scores(normalized, prompts, prompt_mask, *sample[:2]), np.float64)
  np.testing.assert_allclose(members.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(members.std(0), 1, atol=1e-4)

  score_fn = jax.jit(rm.make_score_fn(MODEL, ensemble_penalty=0.5))
  conservative = score_fn(normalized, prompts, prompt_mask, *sample[:2])
  np.testing.assert_allclose(conservative, members.mean(-1) - 0.5 * members.std(-1), atol=1e-4)


def test_aggregate_ensemble_by_hand():
  scores = jnp.array([[1.0, 3.0], [2.0, 2.0]])
  np.testing.assert_allclose(rm.aggregate_ensemble(scores), [2.0, 2.0])
  np.testing.assert_allclose(rm.aggregate_ensemble(scores, 2.0), [0.0, 2.0])  # std 1, 0
  np.testing.assert_array_equal(rm.aggregate_ensemble(scores[:, 0], 2.0), scores[:, 0])


# Best-of-n.


def mean_token(_, prompts, prompt_mask, tokens, mask):
  return jnp.sum(tokens * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)


def test_best_of_n_keeps_the_best_of_n_separate_samples():
  prompts, prompt_mask = frozen_batch()
  n, sample_args = 4, dict(max_new_tokens=6, temperature=1.0, top_k=20, eos_id=EOS)
  run = jax.jit(
    best_of_n.best_of_n,
    static_argnames=("model", "n", "score_fn", "max_new_tokens", "top_k", "eos_id"),
  )
  result = run(MODEL, PARAMS, jax.random.key(8), prompts, prompt_mask, n, mean_token,
               **sample_args)  # fmt: skip

  samples = [
    _sample(MODEL, PARAMS, key, prompts, prompt_mask, **sample_args)
    for key in jax.random.split(jax.random.key(8), n)
  ]
  tokens = np.stack([np.asarray(s.tokens) for s in samples])  # [n, B, N]
  masks = np.stack([np.asarray(s.mask) for s in samples])
  scores = (tokens * masks).sum(-1) / np.maximum(masks.sum(-1), 1)  # [n, B]
  best = scores.argmax(0)
  assert len(set(best.tolist())) > 1  # the winner is not always the same draw
  np.testing.assert_allclose(result.scores, scores, rtol=1e-6)
  np.testing.assert_allclose(result.score, scores.max(0), rtol=1e-6)
  rows = np.arange(BATCH)
  np.testing.assert_array_equal(result.completion.tokens, tokens[best, rows])
  np.testing.assert_array_equal(result.completion.mask, masks[best, rows])
  assert float(result.kl) == pytest.approx(math.log(4) - 3 / 4)


def test_best_of_n_kl_by_hand_and_against_an_exact_discrete_computation():
  assert best_of_n.best_of_n_kl(1) == 0
  assert best_of_n.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
  with pytest.raises(ValueError):
    best_of_n.best_of_n_kl(0)
  # Over M equally likely completions with distinct scores, the best of n is the one of
  # rank i with probability (i/M)^n - ((i-1)/M)^n: its KL from uniform tends to the
  # formula as M grows.
  size = 100_000
  ranks = np.arange(1, size + 1) / size
  for n in (2, 4, 16):
    best = ranks**n - (ranks - 1 / size) ** n
    kl = np.sum(best * np.log(best * size))
    assert kl == pytest.approx(best_of_n.best_of_n_kl(n), abs=1e-3)
