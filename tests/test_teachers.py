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
