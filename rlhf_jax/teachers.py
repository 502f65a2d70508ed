"""Simulated teachers (B-Pref, Lee et al. 2021, arXiv 2111.03026): pure and jittable.

A teacher compares two segments by their true rewards and answers with a label: the
probability it gives to "the first is better", 1, 0 or 0.5 (equally good), and a valid
flag (False: the teacher skipped the query). B-Pref's six teachers are one function with
five parameters, so they combine freely:

  beta         rationality: P(first) = σ(β (R₁ - R₂)); inf answers deterministically
  gamma        myopia: step t of n weighs γ^(n-1-t), so later steps count more; 1 = none
  eps_skip     skip the query when neither return exceeds eps_skip × margin
  eps_equal    answer 0.5 when the returns differ by less than eps_equal × margin
  eps_mistake  flip the answer with probability eps_mistake

As in B-Pref's `RewardModel.get_label`: the skip and equal tests use the undiscounted
returns; a query is skipped only when the skip threshold is positive (so on a task whose
returns are negative, such as reacher, the skip teacher skips nothing); the mistake flip
comes after the rational or Bradley-Terry answer and the equal answer overrides both.
`margin` is B-Pref's: the mean true return of recent finished episodes times segment
length over episode length (`margin` below). Two choices differ from B-Pref on purpose:
two exactly equal returns get 0.5 from a deterministic teacher (B-Pref prefers the first),
and the thresholds are ε × margin at every update (B-Pref's train_PEBBLE.py multiplies by
ε twice after its first update, giving ε² × margin).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.types import Segment


class TeacherParams(NamedTuple):
  beta: float = float("inf")
  gamma: float = 1.0
  eps_skip: float = 0.0
  eps_equal: float = 0.0
  eps_mistake: float = 0.0


# B-Pref's named teachers: each changes one parameter of the oracle.
PRESETS = {
  "oracle": {},
  "stochastic": {"beta": 1.0},
  "myopic": {"gamma": 0.9},
  "skip": {"eps_skip": 0.1},
  "equal": {"eps_equal": 0.1},
  "mistake": {"eps_mistake": 0.1},
}


def from_config(config) -> TeacherParams:
  """The preset `config.teacher`, with every parameter that `config.teacher_params`
  moves away from the oracle's value applied on top (so presets combine)."""
  params = TeacherParams()._replace(**PRESETS[config.teacher])
  oracle = TeacherParams()
  overrides = {
    name: float(config.teacher_params[name])
    for name in TeacherParams._fields
    if float(config.teacher_params[name]) != getattr(oracle, name)
  }
  return params._replace(**overrides)


def segment_return(segment: Segment, gamma=1.0) -> jax.Array:
  """Σ_t γ^(n-1-t) r_t over the n unpadded steps of each segment ([..., K] -> [...])."""
  steps = jnp.sum(segment.mask, axis=-1, keepdims=True)
  age = steps - 1 - jnp.arange(segment.mask.shape[-1])  # 0 for the last unpadded step
  weight = jnp.where(segment.mask > 0, jnp.power(gamma, jnp.maximum(age, 0)), 0.0)
  return jnp.sum(weight * segment.true_reward, axis=-1)


def margin(recent_return, segment_length: int, episode_steps: int):
  """B-Pref's scale of the skip and equal thresholds: the mean true return of recent
  finished episodes times segment length over episode length (agent steps both)."""
  return recent_return * segment_length / episode_steps


def label(params: TeacherParams, key, first: Segment, second: Segment, margin):
  """Labels pairs of segments ([P, K, ...] each). Returns (labels [P], valid bool [P])."""
  key_choice, key_mistake = jax.random.split(key)
  return_first, return_second = segment_return(first), segment_return(second)
  skip_threshold = params.eps_skip * margin
  valid = jnp.maximum(return_first, return_second) > skip_threshold
  valid = valid | (skip_threshold <= 0)
  equal = jnp.abs(return_first - return_second) < params.eps_equal * margin

  difference = segment_return(first, params.gamma) - segment_return(second, params.gamma)
  rational = jnp.where(difference == 0, 0.5, (difference > 0).astype(jnp.float32))
  if params.beta == float("inf"):
    labels = rational
  else:
    labels = jax.random.bernoulli(key_choice, jax.nn.sigmoid(params.beta * difference))
    labels = labels.astype(jnp.float32)
  flip = jax.random.uniform(key_mistake, labels.shape) < params.eps_mistake
  labels = jnp.where(flip, 1.0 - labels, labels)
  labels = jnp.where(equal, 0.5, labels)
  return labels, valid


def oracle_disagreement(labels, valid, first: Segment, second: Segment):
  """Fraction of the valid labels that differ from the oracle's (the observed noise): the
  oracle says 1 when the first segment's undiscounted true return is higher, 0 when it is
  lower, 0.5 when they are equal."""
  difference = segment_return(first) - segment_return(second)
  oracle = jnp.where(difference > 0, 1.0, jnp.where(difference < 0, 0.0, 0.5))
  wrong = (labels != oracle) & valid
  return jnp.sum(wrong) / jnp.maximum(jnp.sum(valid), 1)
