"""Query selection and the label schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import queries


def test_disagreement_picks_the_pairs_of_highest_variance():
  rng = np.random.default_rng(0)
  returns_first = jnp.asarray(rng.normal(size=(3, 50)) * rng.uniform(0, 3, size=50), jnp.float32)
  returns_second = jnp.zeros((3, 50))
  chosen = queries.select("disagreement", jax.random.PRNGKey(0), returns_first, returns_second, 5)
  p = 1 / (1 + np.exp(-np.asarray(returns_first)))
  expected = np.argsort(-p.var(axis=0))[:5]  # NumPy reference
  np.testing.assert_array_equal(np.asarray(chosen), expected)


def test_entropy_picks_the_most_uncertain_pairs():
  returns_first = jnp.array([[3.0, 0.1, -2.0, 0.0, 1.0]])
  chosen = queries.select("entropy", jax.random.PRNGKey(0), returns_first, jnp.zeros((1, 5)), 2)
  assert sorted(np.asarray(chosen).tolist()) == [1, 3]


def test_uniform_picks_distinct_random_pairs():
  picks = [
    tuple(
      np.asarray(
        queries.select("uniform", jax.random.PRNGKey(s), jnp.zeros((3, 20)), jnp.zeros((3, 20)), 4)
      )
    )
    for s in range(3)
  ]
  assert all(len(set(p)) == 4 for p in picks) and len(set(picks)) > 1


def numpy_kcenter(candidates, labelled, num):
  """B-Pref's greedy k-center written out with loops: repeatedly the candidate whose
  nearest labelled-or-picked row is farthest."""
  picked = []
  for _ in range(num):
    best, best_distance = None, -1.0
    for i, c in enumerate(candidates):
      if i in picked:
        continue
      others = list(labelled) + [candidates[j] for j in picked]
      distance = min((np.linalg.norm(c - o) for o in others), default=np.inf)
      if distance > best_distance:
        best, best_distance = i, distance
    picked.append(best)
  return picked


def test_kcenter_equals_a_numpy_greedy_loop():
  rng = np.random.default_rng(1)
  candidates = rng.normal(size=(40, 6)).astype(np.float32)
  labelled = rng.normal(size=(10, 6)).astype(np.float32)
  valid = np.arange(10) < 7  # rows 7-9 are empty slots of the buffer: ignored
  chosen = queries.kcenter(jnp.asarray(candidates), jnp.asarray(labelled), jnp.asarray(valid), 8)
  assert np.asarray(chosen).tolist() == numpy_kcenter(candidates, labelled[:7], 8)
  # A candidate on top of a labelled pair is never picked before the far ones.
  candidates[5] = labelled[0]
  chosen = queries.kcenter(jnp.asarray(candidates), jnp.asarray(labelled), jnp.asarray(valid), 40)
  assert int(chosen[-1]) == 5


def test_paper_schedule_spends_the_budget_at_a_falling_rate():
  per_iteration = queries.label_schedule(700, 0.25, "paper", 2e6, 20_000, 500)
  assert per_iteration.sum() == 700 - 175
  cumulative = np.cumsum(per_iteration)
  # Against the closed form: labels by T are ∝ log(1 + T / 2e6).
  steps = 20_000 * np.arange(1, 501)
  expected = 525 * np.log1p(steps / 2e6) / np.log1p(1e7 / 2e6)
  assert np.max(np.abs(cumulative - expected)) < 1.0
  assert per_iteration[:50].sum() > 2 * per_iteration[-50:].sum()


def test_constant_schedule_is_even():
  per_iteration = queries.label_schedule(100, 0.2, "constant", 2e6, 1000, 40)
  assert per_iteration.sum() == 80 and set(per_iteration.tolist()) == {2}


def test_unknown_names_are_refused():
  with pytest.raises(ValueError, match="Unknown label schedule 'linear'"):
    queries.label_schedule(10, 0.5, "linear", 1.0, 1, 1)
  with pytest.raises(ValueError, match="Unknown query method 'best'"):
    queries.scores("best", jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 2)))
