"""The simulated teachers' semantics on constructed segments (B-Pref's six)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import teachers
from rlhf_jax.teachers import TeacherParams
from rlhf_jax.types import Segment
from tests import references


def segments(rewards, mask=None):
  rewards = jnp.asarray(rewards, jnp.float32)
  mask = jnp.ones_like(rewards) if mask is None else jnp.asarray(mask, jnp.float32)
  zeros = jnp.zeros(rewards.shape + (1,))
  return Segment(zeros, zeros, zeros, rewards * mask, mask, zeros)


def label(params, first, second, margin=1.0, seed=0):
  labels, valid = teachers.label(
    params, jax.random.PRNGKey(seed), segments(first), segments(second), margin
  )
  return np.asarray(labels), np.asarray(valid)


def test_oracle_prefers_the_higher_return_and_ties_are_equal():
  labels, valid = label(
    TeacherParams(), [[1, 1, 1], [0, 0, 0], [1, 0, 0]], [[0, 0, 1], [0, 1, 0], [0, 0, 1]]
  )
  np.testing.assert_array_equal(labels, [1.0, 0.0, 0.5])
  assert valid.all()


def test_myopic_teacher_prefers_the_segment_that_is_better_late():
  early, late = [[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.9, 0.9]]  # returns 2.0 and 1.8
  assert label(TeacherParams(), early, late)[0][0] == 1.0
  assert label(TeacherParams(gamma=0.5), early, late)[0][0] == 0.0  # 0.375 vs 1.35


def test_myopic_weights_count_back_from_the_last_unpadded_step():
  segment = segments([[1.0, 2.0, 4.0, 0.0]], mask=[[1, 1, 1, 0]])
  np.testing.assert_allclose(teachers.segment_return(segment, 0.5), [0.25 * 1 + 0.5 * 2 + 4])


def test_skip_masks_queries_whose_returns_are_both_below_the_threshold():
  params = TeacherParams(eps_skip=0.5)
  labels, valid = label(params, [[0.1, 0.1], [1.0, 1.0]], [[0.2, 0.2], [0.0, 0.0]], margin=2.0)
  np.testing.assert_array_equal(valid, [False, True])  # threshold 1.0: 0.4 < 1 <= 2
  assert labels[1] == 1.0


def test_equal_gives_one_half_when_returns_are_close():
  params = TeacherParams(eps_equal=0.1)
  labels, _ = label(params, [[1.0, 1.0], [2.0, 1.0]], [[1.0, 0.95], [0.0, 0.0]], margin=1.0)
  np.testing.assert_array_equal(labels, [0.5, 1.0])


def test_mistake_with_eps_one_flips_every_label():
  first, second = [[1.0], [0.0], [3.0]], [[0.0], [1.0], [2.0]]
  np.testing.assert_array_equal(label(TeacherParams(eps_mistake=1.0), first, second)[0], [0, 1, 0])


def test_stochastic_teacher_follows_bradley_terry():
  n = 20_000
  first, second = np.full((n, 1), 1.0), np.zeros((n, 1))
  labels, _ = label(TeacherParams(beta=0.5), first, second)
  expected = 1 / (1 + np.exp(-0.5))  # σ(β · 1)
  assert abs(labels.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_presets_combine_with_explicit_parameters():
  config = config_lib.default_config()
  config.teacher = "stochastic"
  config.teacher_params.eps_mistake = 0.2
  assert teachers.from_config(config) == TeacherParams(beta=1.0, eps_mistake=0.2)
  config.teacher_params.beta = 5.0
  assert teachers.from_config(config).beta == 5.0


@pytest.mark.parametrize("name", sorted(teachers.PRESETS))
def test_every_preset_labels_under_jit(name):
  config = ml_collections.ConfigDict({"teacher": name, "teacher_params": TeacherParams()._asdict()})
  params = teachers.from_config(config)
  run = jax.jit(lambda key, a, b: teachers.label(params, key, a, b, 1.0))
  labels, valid = run(jax.random.PRNGKey(1), segments([[2.0, 2.0]] * 4), segments([[0.0, 0.0]] * 4))
  assert set(np.asarray(labels).tolist()) <= {0.0, 0.5, 1.0}
  assert valid.shape == (4,)


def test_oracle_disagreement_counts_flipped_labels():
  first, second = segments([[1.0], [0.0], [2.0], [5.0]]), segments([[0.0], [1.0], [1.0], [0.0]])
  labels = jnp.array([1.0, 1.0, 0.0, 1.0])  # two of the four are wrong
  valid = jnp.array([True, True, True, False])
  assert float(teachers.oracle_disagreement(labels, valid, first, second)) == pytest.approx(2 / 3)


def as_ours(bpref_labels):
  """B-Pref's encoding (1: second preferred, 0: first, -1: equal) in ours (P(first))."""
  return np.select([bpref_labels == 1, bpref_labels == 0], [0.0, 1.0], 0.5)


@pytest.mark.parametrize("margin", [2.0, -2.0])
@pytest.mark.parametrize("gamma", [1.0, 0.8])
@pytest.mark.parametrize("eps_skip, eps_equal", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.3), (0.4, 0.3)])
def test_deterministic_teachers_match_a_numpy_reading_of_bpref(margin, gamma, eps_skip, eps_equal):
  """Random segments of mixed sign; with a negative margin the skip threshold is negative,
  and B-Pref then skips nothing (ours once skipped about half of reacher's queries)."""
  rng = np.random.default_rng(0)
  first, second = rng.normal(0.1, 1.0, (2, 500, 6))
  kept, expected = references.bpref_get_label(
    first, second, -1, gamma, 0.0, eps_skip * margin, eps_equal * margin, rng
  )
  params = TeacherParams(gamma=gamma, eps_skip=eps_skip, eps_equal=eps_equal)
  labels, valid = label(params, first, second, margin=margin)
  np.testing.assert_array_equal(valid, kept)
  np.testing.assert_array_equal(labels[valid], as_ours(expected))
  if eps_skip and margin > 0:
    assert 0 < kept.sum() < len(kept)  # the case tests something


def test_stochastic_myopic_teacher_matches_bpref_probabilities():
  """β = 1, γ = 0.8: for each of 100 random pairs, asked 400 times, the share of 'first'
  answers against B-Pref's (NumPy loop, 400 draws each): a two-sample chi-square."""
  rng = np.random.default_rng(1)
  pairs, draws = 100, 400
  first, second = rng.normal(0.0, 0.5, (2, pairs, 5))
  ours, _ = label(
    TeacherParams(beta=1.0, gamma=0.8),
    np.repeat(first, draws, axis=0),
    np.repeat(second, draws, axis=0),
  )
  ours = ours.reshape(pairs, draws).mean(axis=1)
  _, bpref = references.bpref_get_label(
    np.repeat(first, draws, axis=0), np.repeat(second, draws, axis=0), 1.0, 0.8, 0.0, 0, 0, rng
  )
  theirs = as_ours(bpref).reshape(pairs, draws).mean(axis=1)
  pooled = np.clip((ours + theirs) / 2, 1e-3, 1 - 1e-3)
  chi2 = np.sum((ours - theirs) ** 2 / (2 * pooled * (1 - pooled) / draws))
  assert chi2 < pairs + 5 * np.sqrt(2 * pairs), chi2
  assert np.ptp(theirs) > 0.5  # the pairs span a range of probabilities: β and γ show


def test_mistake_teacher_flips_as_often_as_bpref():
  rng = np.random.default_rng(2)
  first, second = rng.normal(0.0, 1.0, (2, 20_000, 4))
  oracle = (first.sum(-1) > second.sum(-1)).astype(float)
  ours, _ = label(TeacherParams(eps_mistake=0.1), first, second)
  _, bpref = references.bpref_get_label(first, second, -1, 1.0, 0.1, 0, 0, rng)
  flipped_ours, flipped_bpref = np.mean(ours != oracle), np.mean(as_ours(bpref) != oracle)
  assert abs(flipped_ours - flipped_bpref) < 4 * np.sqrt(2 * 0.1 * 0.9 / 20_000)
  assert abs(flipped_bpref - 0.1) < 0.01


def test_margin_is_bprefs_recent_return_times_segment_over_episode_length():
  # 10 recent episodes of mean return 300, segments of 50 of 1,000 steps: 15.
  assert float(teachers.margin(jnp.float32(300.0), 50, 1000)) == pytest.approx(15.0)
