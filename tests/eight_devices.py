"""Run by tests/test_sharding.py in a process that sees 8 CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8); skipped anywhere else."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rlhf_jax import checkpoint, loop, sharding
from tests.test_loop import host_transfers, tiny_pref_config, tiny_sac_config

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason="needs 8 devices")


@pytest.fixture(scope="module")
def trainers():
  config = tiny_pref_config()
  one = sharding.make_mesh(config, devices=jax.devices()[:1])
  return loop.make_trainer(config, mesh=one), loop.make_trainer(config)


def test_one_chunk_on_8_devices_matches_1_device(trainers):
  results = []
  for trainer in trainers:
    state = trainer.init(jax.random.PRNGKey(0))
    state, metrics = trainer.chunk(state)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (state_1, metrics_1), (state_8, metrics_8) = results
  assert sharding.data_size(trainers[1].mesh) == 8
  for name in metrics_1:
    np.testing.assert_allclose(metrics_8[name], metrics_1[name], rtol=2e-3, atol=1e-4, err_msg=name)
  learned = lambda s: (s.agent.params, s.preferences.reward_model.params)  # noqa: E731
  for a, b in zip(
    jax.tree.leaves(learned(state_8)), jax.tree.leaves(learned(state_1)), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4)
  assert int(state_8.preferences.labels_used) == int(state_1.preferences.labels_used)


def test_state_carries_the_intended_shardings(trainers):
  state = trainers[1].init(jax.random.PRNGKey(0))
  assert state.env_state.obs.sharding.spec == P("data")
  assert len(state.env_state.obs.sharding.device_set) == 8
  assert state.preferences.cutter.tail.obs.sharding.spec == P(None, "data")
  assert state.preferences.learned_return.sharding.spec == P("data")
  for replicated in (
    state.agent.params.policy,
    state.agent.optimizer_state,
    state.preferences.reward_model.params,
    state.preferences.segments.segments.obs,
    state.preferences.preferences,
    state.key,
  ):
    for leaf in jax.tree.leaves(replicated):
      assert leaf.sharding.is_fully_replicated
  state, _ = trainers[1].chunk(state)
  assert state.env_state.obs.sharding.spec == P("data")


def test_minibatches_are_split_over_the_devices(trainers):
  """Each device computes its share of a minibatch (not the whole one, replicated)."""
  shard = sharding.data_splitter(trainers[1].mesh)
  uneven = jnp.ones((4, 3, 12, 5))
  placed, left = jax.jit(lambda x, y: shard((2 * x, y), 2))(jnp.ones((4, 3, 16, 5)), uneven)
  assert placed.sharding.spec == P(None, None, "data")
  assert placed.addressable_shards[0].data.shape == (4, 3, 2, 5)
  assert left.addressable_shards[0].data.shape == (4, 3, 12, 5)  # 12 % 8: left to XLA
  assert sharding.data_splitter(trainers[0].mesh)(uneven, 2) is uneven  # one device
  # The chunk splits PPO's minibatches (sequences, axis 2) and the reward model's
  # minibatches of pairs ([members, pairs]: axis 1), and nothing but over `data`.
  trainer = trainers[1]
  text = trainer.chunk.lower(trainer.init(jax.random.PRNGKey(0))).as_text()
  constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
  assert all('{"data"}' in line for line in constraints), constraints
  assert any('[{}, {}, {"data"}' in line for line in constraints), constraints
  assert any('[{}, {"data"}]> : tensor<3x64xi32>' in line for line in constraints), constraints


@pytest.fixture(scope="module")
def compiled_chunk(trainers):
  """The chunk on 8 devices, compiled once for the tests that read or run the program."""
  trainer = trainers[1]
  return trainer.chunk.lower(trainer.init(jax.random.PRNGKey(0))).compile()


def test_learned_reward_of_the_rollout_is_computed_where_its_envs_live(trainers, compiled_chunk):
  """No all-gather of the reward model's input features (obs and action) in the chunk:
  each device computes the learned reward of its own envs' steps, not of every env's."""
  trainer = trainers[1]
  text = compiled_chunk.as_text()
  gathered = re.findall(r"= f32\[([\d,]+)\]\S* all-gather(?:-start)?\(", text)
  assert gathered  # the regex still reads XLA's text (the segment cutter gathers obs)
  width = str(trainer.env.observation_size + trainer.env.action_size)
  assert not [shape for shape in gathered if shape.split(",")[-1] == width], gathered


def test_no_host_transfer_inside_a_chunk_on_8_devices(trainers, compiled_chunk):
  assert host_transfers(compiled_chunk) == []
  state = trainers[1].init(jax.random.PRNGKey(0))
  with jax.transfer_guard("disallow"):
    state, metrics = compiled_chunk(state)
    jax.block_until_ready(metrics)


def test_sharded_state_saves_and_restores(trainers, tmp_path):
  trainer = trainers[1]
  state = trainer.init(jax.random.PRNGKey(0))
  checkpoints = checkpoint.Checkpointer(str(tmp_path), keep=1)
  checkpoints.save(1, state, {"env_steps": 0, "elapsed_seconds": 0.0, "config": {}})
  checkpoints.wait()
  restored, _ = checkpoints.restore_latest(trainer.abstract_state, print)
  assert restored.env_state.obs.sharding.spec == P("data")
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    assert a.sharding == b.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # about a minute of compiling on 2 cores
def test_seeds_and_mesh_together():
  """num_seeds=2 on 8 devices: a leading seed axis, envs still split over the mesh."""
  config = tiny_pref_config()
  config.num_seeds = 2
  trainer = loop.make_trainer(config)
  state = trainer.init(loop.seed_keys(config))
  assert state.env_state.obs.shape[:2] == (2, 8)
  assert state.env_state.obs.sharding.spec == P(None, "data")
  assert state.preferences.cutter.tail.obs.sharding.spec == P(None, None, "data")
  state, metrics = trainer.chunk(state)
  assert metrics["ppo_loss"].shape == (2,)
  assert np.all(np.isfinite(np.asarray(metrics["ppo_loss"])))


def test_sac_replay_is_one_ring_per_device_and_steps_stay_on_theirs():
  """SAC's replay buffer is 8 rings, one per device: each device stores its envs' steps
  and draws its share of every minibatch from its ring, so no step (no array ending in
  the observation's width) is gathered across devices, unlike a replicated buffer."""
  trainer = loop.make_trainer(tiny_sac_config())
  state = trainer.init(jax.random.PRNGKey(0))
  obs = state.agent.replay.data.obs
  assert obs.shape[:2] == (8, 12) and obs.sharding.spec == P("data")  # 100 // 8 rows each
  assert obs.addressable_shards[0].data.shape == (1, 12, trainer.env.observation_size)
  compiled = trainer.chunk.lower(state).compile()
  gathered = re.findall(r"= f32\[([\d,]+)\]\S* all-gather(?:-start)?\(", compiled.as_text())
  width = str(trainer.env.observation_size)
  assert not [shape for shape in gathered if shape.split(",")[-1] == width], gathered
  state, metrics = compiled(state)
  assert state.agent.replay.data.obs.sharding.spec == P("data")
  assert int(state.agent.replay.size) == 96  # 120 steps: every ring full
  assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
