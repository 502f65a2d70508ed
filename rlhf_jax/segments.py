"""Segments: rollouts cut into pieces of at most K steps, a ring buffer of them, pairs.

Each env's steps form one stream that runs on across iterations. A segment starts at an
episode's first step and again every K steps; it ends after K steps or at the episode's
end, whichever comes first, so it never crosses an episode end. A segment cut short by
the episode's end is padded (`mask == 0`): for a task like inverted_pendulum, whose true
reward is 1 per step alive, how soon an episode ends is all a teacher can judge.

Everything here is pure and works on fixed shapes; counts that vary (how many segments
ended this iteration) are carried by masks.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.types import Segment, Transition


class CutterState(NamedTuple):
  """What a stream carries from one iteration to the next, per env."""

  tail: Segment  # [K-1, N, ...]: the last K-1 steps seen (a segment may start there)
  steps_in_episode: jax.Array  # int32 [N]: steps of the running episode seen so far


class SegmentBuffer(NamedTuple):
  """A ring buffer of segments; the oldest are overwritten first."""

  segments: Segment  # [C, K, ...]
  next_index: jax.Array  # int32 []: where the next segment goes
  size: jax.Array  # int32 []: how many slots hold a segment


def steps_of(transitions: Transition) -> Segment:
  """The fields a segment keeps, from transitions of any shape; mask 1 on every step."""
  return Segment(
    obs=transitions.obs,
    action=transitions.action,
    next_obs=transitions.next_obs,
    true_reward=transitions.true_reward,
    mask=jnp.ones_like(transitions.true_reward),
    qpos=transitions.qpos,
  )


def init_cutter(example_step: Segment, segment_length: int) -> CutterState:
  """An empty stream; `example_step` is one step of all N envs (leaves [N, ...])."""
  tail = jax.tree.map(lambda x: jnp.zeros((segment_length - 1,) + x.shape, x.dtype), example_step)
  num_envs = example_step.mask.shape[0]
  return CutterState(tail, jnp.zeros((num_envs,), jnp.int32))


def cut(
  state: CutterState,
  stream: Segment,
  done: jax.Array,
  key,
  num_segments: int,
  prefer_episode_ends: bool = False,
) -> tuple[CutterState, Segment, jax.Array]:
  """Cuts the segments that end within `stream` and picks `num_segments` of them: a
  uniform random choice, or with `prefer_episode_ends` every segment that ends an episode
  first (random among them too), then the others at random.

  Args:
    state: the carry from the previous call.
    stream: the next L steps of each of N envs, time-major [L, N, ...].
    done: float32 [L, N], 1 where an episode ended at that step.
    key: chooses which segments to keep when more than `num_segments` ended.
    num_segments: how many to return (a static int).

  Returns:
    (state, segments [S, K, ...], valid bool [S]); invalid rows are filler.
  """
  segment_length = state.tail.mask.shape[0] + 1
  done = done.astype(bool)

  def count(steps_before, done_t):
    position = steps_before % segment_length  # 0-based place of this step in its segment
    steps_after = jnp.where(done_t, 0, steps_before + 1)
    return steps_after, position

  steps_in_episode, position = jax.lax.scan(count, state.steps_in_episode, done)
  ends = (position == segment_length - 1) | done  # [L, N]

  # Keep a uniform random choice among the segments that ended (scores in [0, 1); those
  # that end an episode in [1, 2) when they go first).
  score = jax.random.uniform(key, ends.shape) + (done if prefer_episode_ends else 0.0)
  score = jnp.where(ends, score, -1.0).reshape(-1)
  score, flat_index = jax.lax.top_k(score, num_segments)
  valid = score >= 0
  num_envs = done.shape[1]
  end_time, env = flat_index // num_envs, flat_index % num_envs
  length = position[end_time, env] + 1

  # In `extended` time, the stream's step t sits at t + K - 1 and the segment ending at
  # stream step t starts at t + K - length >= 0.
  extended = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), state.tail, stream)
  offsets = jnp.arange(segment_length)
  time_index = end_time[:, None] + segment_length - length[:, None] + offsets  # [S, K]
  time_index = jnp.minimum(time_index, extended.mask.shape[0] - 1)
  segments = jax.tree.map(lambda x: x[time_index, env[:, None]], extended)
  mask = (offsets[None, :] < length[:, None]).astype(jnp.float32)
  segments = segments._replace(mask=mask, true_reward=segments.true_reward * mask)

  tail = jax.tree.map(lambda x: x[x.shape[0] - (segment_length - 1) :], extended)
  return CutterState(tail, steps_in_episode), segments, valid


def init_buffer(example_segment: Segment, capacity: int) -> SegmentBuffer:
  """An empty buffer for `capacity` segments shaped like `example_segment` ([K, ...])."""
  segments = jax.tree.map(lambda x: jnp.zeros((capacity,) + x.shape, x.dtype), example_segment)
  return SegmentBuffer(segments, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def ring_write(stored, rows, keep: jax.Array, next_index: jax.Array, size: jax.Array):
  """Writes the rows of `rows` ([R, ...] leaves) where `keep` after the newest rows of the
  ring buffer `stored` ([C, ...] leaves, R <= C), overwriting the oldest.

  Returns (stored, next_index, size).
  """
  capacity = jax.tree.leaves(stored)[0].shape[0]
  keep = keep.astype(jnp.int32)
  slot = (next_index + jnp.cumsum(keep) - 1) % capacity
  slot = jnp.where(keep > 0, slot, capacity)  # out of range: dropped
  stored = jax.tree.map(lambda old, new: old.at[slot].set(new, mode="drop"), stored, rows)
  added = jnp.sum(keep)
  return stored, (next_index + added) % capacity, jnp.minimum(size + added, capacity)


def add(buffer: SegmentBuffer, segments: Segment, valid: jax.Array) -> SegmentBuffer:
  """Writes the valid rows of `segments` ([S, K, ...], S <= capacity) after the newest."""
  stored, next_index, size = ring_write(
    buffer.segments, segments, valid, buffer.next_index, buffer.size
  )
  return SegmentBuffer(stored, next_index, size)


def sample_pairs(buffer: SegmentBuffer, key, num_pairs: int):
  """Draws `num_pairs` pairs of two different stored segments, uniformly.

  Returns (first [P, K, ...], second [P, K, ...]). Needs at least two stored segments.
  """
  key_first, key_shift = jax.random.split(key)
  size = jnp.maximum(buffer.size, 2)
  first = jax.random.randint(key_first, (num_pairs,), 0, size)
  second = (first + jax.random.randint(key_shift, (num_pairs,), 1, size)) % size
  take = lambda index: jax.tree.map(lambda x: x[index], buffer.segments)
  return take(first), take(second)
