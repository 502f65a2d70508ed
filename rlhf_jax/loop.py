"""The training loop: the one place where envs, rollouts, rewards and PPO are strung.

`make_trainer(config)` reads the config at trace time and returns pure functions:

  init(key) -> TrainState
  chunk(state) -> (state, metrics)    `iterations_per_chunk` iterations (each one rollout
                                      and one PPO update) in a `lax.scan`, jitted with
                                      the state donated

With `config.reward.source == "learned"` one iteration is the whole preference loop, the
preference side being one component (rlhf_jax/preference.py):

  rollout -> preferences.step: cut segments -> segment buffer -> candidate pairs -> pick
  queries -> teacher -> preference buffer -> reward-model update -> learned reward of the
  rollout -> PPO update

and `init` first hands the component a rollout of the random initial policy, whose
segments the initial labels are about (one iteration's worth of env steps, counted in
`Trainer.initial_env_steps`). Only the metrics of a chunk reach the host.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import envs, learners, preference, rollout, sharding


@flax.struct.dataclass
class TrainState:
  agent: Any  # the learner's state: ppo.PPOState, or learners.SACAgent
  env_state: Any
  key: jax.Array
  iteration: jax.Array  # int32 []; env steps = iteration * env_steps_per_iteration
  preferences: preference.PreferenceState | None  # None when PPO runs on the true reward


class Trainer(NamedTuple):
  init: Callable
  chunk: Callable
  env: Any
  learner: learners.Learner
  env_steps_per_iteration: int
  initial_env_steps: int  # env steps taken by `init` (the random policy's labels)
  preferences: preference.Preferences | None  # None for the true reward
  mesh: jax.sharding.Mesh
  abstract_state: Any  # TrainState of jax.ShapeDtypeStructs with their shardings
  # Labels fed from the host (a person, or a saved dataset): `preferences`' methods of the
  # same names on a TrainState, jitted with its shardings; None for the true reward.
  # propose(state, key, num_pairs, method) -> (first, second): pairs to ask about
  # ingest(state, key, first, second, labels, asked, keep) -> state: adds labelled pairs
  # fit(state, key, num_steps) -> (state, metrics): that many reward-model steps
  propose: Callable | None
  ingest: Callable | None
  fit: Callable | None


# How a chunk reduces each iteration metric: summed, the last value, or (default) the mean.
SUMMED = (
  "episode_return_sum",
  "episodes",
  "learned_return_sum",
  "new_labels",
  "teacher_wrong",
  "rm_updates",
)
LAST = ("queries_asked", "labels_used")


def all_finite(tree) -> jax.Array:
  """bool []: no NaN or Inf in any float leaf of `tree`."""
  checks = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def learned_parts(state: TrainState) -> dict:
  """The learned quantities of a state, by name (what the NaN guard watches)."""
  parts = learners.learned_parts(state.agent)
  if state.preferences is not None:
    model = state.preferences.reward_model
    parts["reward model params"] = model.params
    parts["reward normalizer"] = (model.reward_mean, model.reward_var, model.inputs)
  return parts


@jax.jit
def nonfinite_parts(state: TrainState) -> dict:
  """{name: bool} for each of `learned_parts`: True where it holds a NaN or Inf."""
  return {name: ~all_finite(part) for name, part in learned_parts(state).items()}


def make_trainer(config, mesh: jax.sharding.Mesh | None = None) -> Trainer:
  """The trainer of `config` on `mesh` (default: `sharding.make_mesh(config)`)."""
  mesh = sharding.make_mesh(config) if mesh is None else mesh
  config_lib.validate(config, sharding.data_size(mesh))
  env = envs.make_training_env(config)
  shard = sharding.data_splitter(mesh)
  learner = learners.make_learner(config, env, shard, sharding.data_size(mesh))
  steps_per_iteration = config_lib.env_steps_per_iteration(config)
  learned = config.reward.source == "learned"
  relabel = learned and learner.relabel is not None and config.sac.relabel
  prefs = None
  if learned:
    control_dt = envs.control_dt(env, config.env.action_repeat)
    prefs = preference.Preferences(
      config, env.observation_size, env.action_size, control_dt, shard, envs.frame_shape(env)
    )

  def run_rollout(state: TrainState, key):
    """One iteration's rollout: transitions [U, T, N] (U unrolls of T steps of N envs)."""
    policy = lambda obs, key_sample: learner.act(state.agent, obs, key_sample)  # noqa: E731
    unroll = rollout.make_rollout(env, policy, learner.unroll_length)
    return jax.lax.scan(unroll, state.env_state, jax.random.split(key, learner.num_unrolls))

  def as_stream(x):  # [U, T, N, ...] -> [U * T, N, ...]: each env's steps in time order
    return x.reshape((-1,) + x.shape[2:])

  def init(key) -> TrainState:
    key_agent, key_env, key_loop, key_prefs = jax.random.split(key, 4)
    env_state = env.reset(jax.random.split(key_env, learner.num_envs))
    agent = learner.init(key_agent)
    state = TrainState(agent, env_state, key_loop, jnp.zeros((), jnp.int32), None)
    if not learned:
      return state
    # The random initial policy's rollout gives the first segments (and initial labels).
    key_rollout, key_prefs = jax.random.split(key_prefs)
    env_state, transitions = run_rollout(state, key_rollout)
    preferences = prefs.init(key_prefs, jax.tree.map(as_stream, transitions))
    return state.replace(env_state=env_state, preferences=preferences)

  def iteration(state: TrainState):
    key, key_rollout, key_update, key_prefs = jax.random.split(state.key, 4)
    env_state, transitions = run_rollout(state, key_rollout)  # [U, T, N]
    metrics = {}
    preferences = state.preferences
    if learned:
      stream = jax.tree.map(as_stream, transitions)
      preferences, reward, metrics = prefs.step(preferences, key_prefs, stream, state.iteration)
      transitions = transitions._replace(reward=reward.reshape(transitions.reward.shape))
    agent, agent_metrics = learner.update(state.agent, transitions, key_update)
    if relabel:  # PEBBLE: the stored steps' rewards follow each reward-model update
      reward_fn = functools.partial(prefs.reward_of, preferences)
      updated = metrics.get("rm_updates", 1.0) > 0  # the model may update on a schedule
      agent = learner.relabel(agent, reward_fn, updated)

    metrics.update(
      agent_metrics,
      **preference.episode_metrics(transitions),
      true_reward_per_step=jnp.mean(transitions.true_reward),
      reward_per_step=jnp.mean(transitions.reward),
    )
    new_state = TrainState(agent, env_state, key, state.iteration + 1, preferences)
    metrics["finite"] = all_finite((metrics, learned_parts(new_state)))
    return new_state, metrics

  # Labels from the host: the component's methods on a TrainState's preferences.
  def propose(state: TrainState, key, num_pairs: int, method: str):
    return prefs.propose(state.preferences, key, num_pairs, method)

  def ingest(state: TrainState, key, first, second, labels, asked, keep):
    preferences = prefs.ingest(state.preferences, key, first, second, labels, asked, keep)
    return state.replace(preferences=preferences)

  def fit(state: TrainState, key, num_steps: int):
    preferences, rm_metrics = prefs.fit(state.preferences, key, num_steps)
    return state.replace(preferences=preferences), rm_metrics

  def reduce(name, values, updates):
    if name in SUMMED:
      return jnp.sum(values)
    if name in LAST:
      return values[-1]
    if updates is not None and name in preference.UPDATE_METRICS:  # over the updates only
      return jnp.sum(values * updates) / jnp.maximum(jnp.sum(updates), 1.0)
    return jnp.mean(values)

  def chunk(state: TrainState):
    state, metrics = jax.lax.scan(
      lambda s, _: iteration(s), state, None, length=config.iterations_per_chunk
    )
    finite = metrics.pop("finite")
    updates = metrics.get("rm_updates")
    summary = {name: reduce(name, values, updates) for name, values in metrics.items()}
    # The guard's clue: the first iteration of the chunk that produced a NaN or Inf.
    summary["nonfinite_iteration"] = jnp.where(jnp.all(finite), -1, jnp.argmin(finite))
    return state, summary

  # num_seeds > 1: independent runs side by side, every array with a leading seed axis.
  seeded = config.num_seeds > 1
  init_fn, chunk_fn = (jax.vmap(init), jax.vmap(chunk)) if seeded else (init, chunk)
  abstract = jax.eval_shape(init_fn, seed_keys(config))
  shardings = sharding.state_shardings(mesh, abstract, learner.num_envs, seed_axis=seeded)
  return Trainer(
    init=jax.jit(init_fn, out_shardings=shardings),
    chunk=jax.jit(
      chunk_fn,
      in_shardings=(shardings,),
      out_shardings=(shardings, sharding.replicated(mesh)),
      donate_argnums=0,
    ),
    env=env,
    learner=learner,
    env_steps_per_iteration=steps_per_iteration,
    initial_env_steps=steps_per_iteration if learned else 0,
    preferences=prefs,
    mesh=mesh,
    abstract_state=jax.tree.map(
      lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
      abstract,
      shardings,
    ),
    # For one seed (num_seeds == 1); the state keeps the shardings `chunk` expects.
    propose=jax.jit(propose, static_argnums=(2, 3)) if learned else None,
    ingest=jax.jit(ingest, out_shardings=shardings, donate_argnums=0) if learned else None,
    fit=jax.jit(
      fit,
      static_argnums=2,
      out_shardings=(shardings, sharding.replicated(mesh)),
      donate_argnums=0,
    )
    if learned
    else None,
  )


def seed_keys(config) -> jax.Array:
  """The key `init` takes: PRNGKey(seed), or with num_seeds > 1 one per seed
  (seed, seed + 1, ...) stacked, so each run is the one that seed gives alone."""
  if config.num_seeds == 1:
    return jax.random.PRNGKey(config.seed)
  return jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.num_seeds)])


def chunk_summary(metrics: dict) -> dict:
  """`chunk_summary_one` of each seed; with several seeds, their mean (None values left
  out), `true_return_std` across seeds, and the per-seed records under `seeds`."""
  metrics = jax.device_get(metrics)
  if next(iter(metrics.values())).ndim == 0:
    return chunk_summary_one(metrics)
  count = len(next(iter(metrics.values())))
  per_seed = [chunk_summary_one({k: v[i] for k, v in metrics.items()}) for i in range(count)]
  summary = {}
  for name in per_seed[0]:
    values = [r[name] for r in per_seed if r[name] is not None]
    summary[name] = float(np.mean(values)) if values else None
  summary["episodes"] = sum(r["episodes"] for r in per_seed)
  for name in LAST:  # counters: the mean over seeds, as a whole number
    if name in summary:
      summary[name] = round(summary[name])
  bad = [r["nonfinite_iteration"] for r in per_seed if r["nonfinite_iteration"] >= 0]
  summary["nonfinite_iteration"] = min(bad, default=-1)
  returns = [r["true_return"] for r in per_seed if r["true_return"] is not None]
  summary["true_return_std"] = float(np.std(returns)) if returns else None
  summary["seeds"] = per_seed
  return summary


def chunk_summary_one(metrics: dict) -> dict:
  """Host side: turns a chunk's device metrics into plain floats with `true_return`.

  `true_return` (and `learned_return`, under the learned reward) is the mean return of the
  episodes that ended in the chunk, or None when none ended; `teacher_noise` is the
  fraction of the chunk's labels that differ from the oracle's; `nonfinite_iteration` is
  the first iteration of the chunk (counted from 0) that produced a NaN or Inf, or -1.
  """
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  episodes = metrics.pop("episodes")
  return_sum = metrics.pop("episode_return_sum")
  metrics["episodes"] = int(episodes)
  metrics["true_return"] = return_sum / episodes if episodes else None
  if "learned_return_sum" in metrics:
    metrics["learned_return"] = metrics.pop("learned_return_sum") / episodes if episodes else None
  if "new_labels" in metrics:
    new_labels, wrong = metrics.pop("new_labels"), metrics.pop("teacher_wrong")
    metrics["teacher_noise"] = wrong / new_labels if new_labels else None
  for name in (*LAST, "nonfinite_iteration", "rm_updates"):
    if name in metrics:
      metrics[name] = int(metrics[name])
  return metrics
