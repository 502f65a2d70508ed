"""Environments: shapes, auto-reset, and clear errors for unknown names and backends."""

import os

import jax
import jax.numpy as jnp
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import envs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="Unknown environment 'hoper'.*hopper.*inverted_pendulum"):
    envs.make_env("hoper")


def test_unknown_backend_lists_valid_ones():
  with pytest.raises(ValueError, match="Unknown backend 'sprng'.*generalized.*spring"):
    envs.make_env("hopper", backend="sprng")


@pytest.mark.parametrize("kwargs", [{"episode_length": 0}, {"action_repeat": -1}])
def test_nonpositive_lengths_rejected(kwargs):
  with pytest.raises(ValueError, match="must be positive"):
    envs.make_env("inverted_pendulum", **kwargs)


def test_shapes_and_auto_reset():
  num_envs, episode_length = 3, 5
  env = envs.make_env("inverted_pendulum", "spring", episode_length=episode_length)
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))
  assert state.obs.shape == (num_envs, env.observation_size)
  assert env.action_size == 1
  step = jax.jit(env.step)
  action = jnp.zeros((num_envs, env.action_size))
  first_obs = state.obs
  dones = []
  for _ in range(episode_length):
    state = step(state, action)
    assert state.obs.shape == (num_envs, env.observation_size)
    assert state.reward.shape == (num_envs,)
    dones.append(state.done)
  # A zero action keeps the pendulum up for 5 steps: only the cut-off ends the episode,
  # it is marked as truncation, and the env is back at its first observation.
  assert [float(d.sum()) for d in dones] == [0.0] * (episode_length - 1) + [num_envs]
  assert bool(jnp.all(state.info["truncation"] == 1))
  assert bool(jnp.allclose(state.obs, first_obs))
  state = step(state, action)
  assert float(state.done.sum()) == 0.0


def test_action_repeat_counts_env_steps():
  env = envs.make_env("inverted_pendulum", "spring", episode_length=6, action_repeat=3)
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
  step = jax.jit(env.step)
  action = jnp.zeros((2, 1))
  state = step(state, action)
  assert float(state.done.sum()) == 0.0
  state = step(state, action)  # 2 decisions x 3 repeats = 6 physics steps: cut off
  assert float(state.done.sum()) == 2.0
  assert envs.control_dt(envs.make_env("inverted_pendulum"), 3) == pytest.approx(0.06)


def test_fixed_length_episodes_run_on_after_a_fall():
  """With terminate_when_unhealthy=False a fallen hopper's episode goes on to the cut-off
  and it loses the healthy reward; the standard env ends the episode at the fall."""
  config = config_lib.load(os.path.join(REPO, "configs", "hopper.py"))
  config.env.backend, config.env.episode_length = "spring", 200
  standard = envs.make_training_env(config)
  config.env.terminate_when_unhealthy = False
  fixed = envs.make_training_env(config)
  action = jnp.ones((1, standard.action_size))  # full torque: the hopper falls

  def episode(env):  # (done, healthy reward) of 200 steps, in one compiled scan
    def step(state, _):
      state = env.step(state, action)
      return state, (state.done[0], state.metrics["reward_healthy"][0])

    state = env.reset(jax.random.split(jax.random.PRNGKey(0), 1))
    return jax.jit(lambda s: jax.lax.scan(step, s, length=200)[1])(state)

  done, _ = episode(standard)
  fall = int(jnp.argmax(done)) + 1
  assert 0 < fall < 200 and done[fall - 1] == 1  # it fell, and that ended the episode
  done, healthy = episode(fixed)
  assert [int(jnp.argmax(done)) + 1, float(done.sum())] == [200, 1.0]  # only the cut-off
  # the same fall, which now costs the healthy reward instead of ending the episode
  assert [float(healthy[fall - 2]), float(healthy[fall - 1])] == [1.0, 0.0]


def test_swimmer_steps_through_brax_fluid_drag():
  """swimmer's viscous drag (brax.fluid) called jnp.clip(a_min=...), which jax 0.10 removed;
  its forces should still slow a swimmer: with no action, the speed of a pushed one decays."""
  env = envs.make_env("swimmer", "generalized", episode_length=100)
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
  state = state.replace(
    pipeline_state=state.pipeline_state.replace(qd=state.pipeline_state.qd.at[:, 0].set(1.0))
  )
  step = jax.jit(env.step)
  zero = jnp.zeros((2, env.action_size))
  speeds = []
  for _ in range(5):
    state = step(state, zero)
    speeds.append(float(jnp.abs(state.pipeline_state.qd[0, 0])))
  assert all(jnp.isfinite(jnp.asarray(speeds)))
  assert speeds[-1] < speeds[0]
