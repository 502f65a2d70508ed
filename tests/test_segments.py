"""Cutting streams into segments, against a plain Python reference; the ring buffer."""

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import segments
from rlhf_jax.types import Segment


def stream_of(ids):
  """A stream whose obs is a step's unique id ([L, N] -> Segment [L, N, ...])."""
  ids = jnp.asarray(ids, jnp.float32)
  return Segment(
    ids[..., None], ids[..., None], ids[..., None], ids, jnp.ones_like(ids), ids[..., None]
  )


def reference_cut(ids, done, length):
  """Per env: a segment starts at an episode's start and every `length` steps after."""
  found = []
  for env in range(ids.shape[1]):
    current = []
    for t in range(ids.shape[0]):
      current.append(int(ids[t, env]))
      if len(current) == length or done[t, env]:
        found.append(tuple(current))
        current = []
      if done[t, env]:
        current = []
  return found


def test_segments_never_cross_an_episode_end_and_match_a_python_loop():
  length, num_envs, steps = 5, 3, 23
  rng = np.random.default_rng(0)
  ids = np.arange(2 * steps * num_envs).reshape(2 * steps, num_envs)
  done = rng.uniform(size=ids.shape) < 0.12
  expected = reference_cut(ids, done, length)

  example = jax.tree.map(lambda x: x[0], stream_of(ids[:1]))
  state = segments.init_cutter(example, length)
  found = []
  for half in (slice(0, steps), slice(steps, 2 * steps)):  # two calls: the carry matters
    key = jax.random.PRNGKey(half.start)
    state, cut, valid = segments.cut(
      state, stream_of(ids[half]), jnp.asarray(done[half], jnp.float32), key, steps * num_envs
    )
    obs_ids, masks = np.asarray(cut.obs[..., 0])[valid], np.asarray(cut.mask)[valid]
    for obs, mask in zip(obs_ids, masks, strict=True):
      assert mask[0] == 1 and np.all(np.diff(mask) <= 0)  # padding only at the end
      found.append(tuple(int(i) for i in obs[mask > 0]))
  assert sorted(found) == sorted(expected)
  # Crossing check, independent of the reference: no step but the last ends an episode.
  done_ids = set(ids[done].tolist())
  assert all(not (set(segment[:-1]) & done_ids) for segment in found)


def test_cut_keeps_a_random_subset_when_more_segments_end():
  ids = np.arange(40).reshape(20, 2)
  example = jax.tree.map(lambda x: x[0], stream_of(ids[:1]))
  state = segments.init_cutter(example, 2)
  done = jnp.zeros((20, 2))
  _, cut, valid = segments.cut(state, stream_of(ids), done, jax.random.PRNGKey(0), 6)
  assert bool(valid.all()) and cut.obs.shape == (6, 2, 1)
  starts = np.asarray(cut.obs[:, 0, 0]).astype(int)
  assert len(set(starts.tolist())) == 6 and all(s // 2 % 2 == 0 for s in starts)


def test_cut_can_keep_every_segment_that_ends_an_episode_first():
  length, num_envs, steps, keep = 4, 8, 30, 12
  rng = np.random.default_rng(1)
  ids = np.arange(steps * num_envs).reshape(steps, num_envs)
  done = rng.uniform(size=ids.shape) < 0.03
  # By the Python reference: the segments that end at an episode's end, and the others.
  ending = {s for s in reference_cut(ids, done, length) if done.flat[s[-1]]}  # ids: 0, 1, ...
  assert 0 < len(ending) < keep  # fewer than are kept: all of them must be
  example = jax.tree.map(lambda x: x[0], stream_of(ids[:1]))
  found = {}
  for prefer in (False, True):
    state = segments.init_cutter(example, length)
    _, cut, valid = segments.cut(
      state, stream_of(ids), jnp.asarray(done, jnp.float32), jax.random.PRNGKey(3), keep, prefer
    )
    assert bool(valid.all())
    obs, mask = np.asarray(cut.obs[..., 0]), np.asarray(cut.mask)
    found[prefer] = {tuple(int(i) for i in o[m > 0]) for o, m in zip(obs, mask, strict=True)}
  assert ending <= found[True] and len(found[True]) == keep
  assert not ending <= found[False]  # a uniform choice of 12 of ~64 misses some of them


def test_buffer_overwrites_the_oldest_and_pairs_are_distinct():
  empty = Segment(*(jnp.zeros((2,)) for _ in range(6)))
  buffer = segments.init_buffer(empty, capacity=4)
  rows = lambda values: Segment(*(jnp.asarray(values, jnp.float32)[:, None].repeat(2, 1),) * 6)
  buffer = segments.add(buffer, rows([1, 2, 3]), jnp.array([True, False, True]))
  assert int(buffer.size) == 2 and int(buffer.next_index) == 2
  buffer = segments.add(buffer, rows([4, 5, 6]), jnp.array([True, True, True]))
  np.testing.assert_array_equal(buffer.segments.obs[:, 0], [6, 3, 4, 5])  # 1 was the oldest
  assert int(buffer.size) == 4 and int(buffer.next_index) == 1
  first, second = segments.sample_pairs(buffer, jax.random.PRNGKey(0), 200)
  assert bool(jnp.all(first.obs[:, 0] != second.obs[:, 0]))
  assert set(np.asarray(first.obs[:, 0]).tolist()) == {3, 4, 5, 6}
