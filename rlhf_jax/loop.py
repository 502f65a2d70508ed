"""The training loop: the one place where envs, rollouts, rewards and PPO are strung.

`make_trainer(config)` reads the config at trace time and returns pure functions:

  init(key) -> TrainState
  chunk(state) -> (state, metrics)    `iterations_per_chunk` iterations (each one rollout
                                      and one PPO update) in a `lax.scan`, jitted with
                                      the state donated

With `config.reward.source == "learned"` one iteration is the whole preference loop:

  rollout -> cut segments -> segment buffer -> candidate pairs -> pick queries -> teacher
  -> preference buffer -> reward-model update -> learned reward of the rollout -> PPO update

and `init` first asks the initial labels about segments of the random initial policy and
fits the reward model to them (one iteration's worth of env steps, counted in
`Trainer.initial_env_steps`). Only the metrics of a chunk reach the host.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import envs, ppo, queries, reward_model, rollout, segments, sharding, teachers
from rlhf_jax.types import Transition


@flax.struct.dataclass
class PreferenceState:
  """Everything the preference loop carries between iterations."""

  cutter: segments.CutterState
  segments: segments.SegmentBuffer
  preferences: reward_model.PreferenceBuffer
  reward_model: reward_model.RewardModelState
  learned_return: jax.Array  # float32 [N]: learned return of each env's running episode
  recent_return: jax.Array  # float32 []: true return of recently ended episodes (teacher)
  queries_asked: jax.Array  # int32 []
  labels_used: jax.Array  # int32 []: queries the teacher answered (not skipped)


@flax.struct.dataclass
class TrainState:
  ppo: ppo.PPOState
  env_state: Any
  key: jax.Array
  iteration: jax.Array  # int32 []; env steps = iteration * env_steps_per_iteration
  preferences: PreferenceState | None  # None when PPO runs on the true reward


class Trainer(NamedTuple):
  init: Callable
  chunk: Callable
  env: Any
  networks: Any
  env_steps_per_iteration: int
  initial_env_steps: int  # env steps taken by `init` (the random policy's labels)
  reward_model: Any  # reward_model.RewardModel, or None for the true reward
  segment_length: int
  mesh: jax.sharding.Mesh
  abstract_state: Any  # TrainState of jax.ShapeDtypeStructs with their shardings
  # Labels fed from the host (a person, or a saved dataset); None for the true reward.
  # propose(state, key, num_pairs, method) -> (first, second): pairs to ask about
  # ingest(state, key, first, second, labels, asked, keep) -> state: adds labelled pairs
  # fit(state, key, num_steps) -> (state, metrics): that many reward-model steps
  propose: Callable | None
  ingest: Callable | None
  fit: Callable | None
  num_initial_labels: int  # asked about the random policy's segments, before PPO
  label_schedule: np.ndarray  # int [num_iterations]: labels asked in each iteration


# How a chunk reduces each iteration metric: summed, the last value, or (default) the mean.
SUMMED = ("episode_return_sum", "episodes", "learned_return_sum", "new_labels", "teacher_wrong")
LAST = ("queries_asked", "labels_used")


def episode_metrics(transitions: Transition) -> dict:
  """Sums of finished episodes' true returns and their count (summed again per chunk)."""
  ended = 1.0 - transitions.discount
  return {
    "episode_return_sum": jnp.sum(ended * transitions.episode_return),
    "episodes": jnp.sum(ended),
  }


def recent_episode_return(previous, transitions: Transition) -> jax.Array:
  """The mean true return of the episodes that ended in `transitions`, or `previous` when
  none did: the teacher's stand-in for B-Pref's mean over the last 10 episodes."""
  ended = episode_metrics(transitions)
  count = ended["episodes"]
  return jnp.where(count > 0, ended["episode_return_sum"] / jnp.maximum(count, 1.0), previous)


def all_finite(tree) -> jax.Array:
  """bool []: no NaN or Inf in any float leaf of `tree`."""
  checks = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def learned_parts(state: TrainState) -> dict:
  """The learned quantities of a state, by name (what the NaN guard watches)."""
  parts = {
    "policy params": state.ppo.params.policy,
    "value params": state.ppo.params.value,
    "observation normalizer": state.ppo.normalizer,
  }
  if state.preferences is not None:
    model = state.preferences.reward_model
    parts["reward model params"] = model.params
    parts["reward normalizer"] = (model.reward_mean, model.reward_var, model.inputs)
  return parts


@jax.jit
def nonfinite_parts(state: TrainState) -> dict:
  """{name: bool} for each of `learned_parts`: True where it holds a NaN or Inf."""
  return {name: ~all_finite(part) for name, part in learned_parts(state).items()}


def correlation(x, y):
  """Pearson correlation of two vectors (0 where either is constant)."""
  dx, dy = x - jnp.mean(x), y - jnp.mean(y)
  covariance, var_x, var_y = jnp.mean(dx * dy), jnp.mean(dx * dx), jnp.mean(dy * dy)
  return jnp.where(var_x * var_y > 0, covariance / jnp.sqrt(var_x * var_y + 1e-30), 0.0)


def make_trainer(config, mesh: jax.sharding.Mesh | None = None) -> Trainer:
  """The trainer of `config` on `mesh` (default: `sharding.make_mesh(config)`)."""
  mesh = sharding.make_mesh(config) if mesh is None else mesh
  config_lib.validate(config, sharding.data_size(mesh))
  env = envs.make_env(
    config.env.name,
    config.env.backend,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
  )
  ppo_config = config.ppo
  networks = ppo.make_networks(env.observation_size, env.action_size, ppo_config)
  optimizer = ppo.make_optimizer(ppo_config)
  shard = sharding.data_splitter(mesh)
  update = ppo.make_update_fn(networks, optimizer, ppo_config, shard)
  num_unrolls = config_lib.num_unrolls_per_iteration(config)
  steps_per_iteration = config_lib.env_steps_per_iteration(config)
  learned = config.reward.source == "learned"
  segment_length = config_lib.segment_length(config, envs.control_dt(env, config.env.action_repeat))
  episode_steps = config_lib.steps_per_episode(config)
  model = reward_model.make_reward_model(config, env.observation_size, env.action_size, shard)
  human = config.teacher == "human"  # labels come from the host, between chunks
  teacher = None if human else teachers.from_config(config)
  queries_config = config.queries
  num_initial = queries.initial_labels(queries_config.total_labels, queries_config.initial_fraction)
  schedule = queries.label_schedule(
    queries_config.total_labels,
    queries_config.initial_fraction,
    queries_config.schedule,
    queries_config.schedule_timescale,
    steps_per_iteration,
    config_lib.num_iterations(config),
  )
  max_queries = int(schedule.max()) if learned and not human else 0

  def run_rollout(state: TrainState, key):
    """One iteration's rollout: transitions [U, T, N] (U unrolls of T steps of N envs)."""
    params = state.ppo.params

    def policy(obs, key_sample):
      return ppo.sample_actions(networks, state.ppo.normalizer, params.policy, obs, key_sample)

    unroll = rollout.make_rollout(env, policy, ppo_config.unroll_length)
    return jax.lax.scan(unroll, state.env_state, jax.random.split(key, num_unrolls))

  def as_stream(x):  # [U, T, N, ...] -> [U * T, N, ...]: each env's steps in time order
    return x.reshape((-1,) + x.shape[2:])

  def as_ppo_batch(x):  # [U, T, N, ...] -> [T, U * N, ...]: sequences of T steps
    return jnp.swapaxes(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:])

  def choose_pairs(prefs: PreferenceState, key_pool, key_select, num_pairs: int, method: str):
    """`num_pairs` pairs of stored segments to ask about, picked by `method`."""
    pool = num_pairs if method == "uniform" else queries_config.oversampling * num_pairs
    first, second = shard(segments.sample_pairs(prefs.segments, key_pool, pool), 0)
    if method != "uniform":  # the pool is already in random order
      rm_state = prefs.reward_model
      returns = lambda pair: model.segment_returns(rm_state.params, rm_state.inputs, pair)
      chosen = queries.select(method, key_select, returns(first), returns(second), num_pairs)
      first, second = jax.tree.map(lambda x: x[chosen], (first, second))
    return first, second

  def ask(prefs: PreferenceState, key, num_pairs: int, num_asked, method: str):
    """Picks `num_pairs` pairs, has the teacher label the first `num_asked`, stores them."""
    key_pool, key_select, key_teacher, key_store = jax.random.split(key, 4)
    first, second = choose_pairs(prefs, key_pool, key_select, num_pairs, method)
    margin = teachers.margin(prefs.recent_return, segment_length, episode_steps)
    labels, labelled = teachers.label(teacher, key_teacher, first, second, margin)
    asked = jnp.arange(num_pairs) < num_asked
    keep = asked & labelled  # a skipped query is asked, not kept
    prefs = store_labels(prefs, key_store, first, second, labels, asked, keep)
    wrong = teachers.oracle_disagreement(labels, keep, first, second) * jnp.sum(keep)
    return prefs, {"new_labels": jnp.sum(keep), "teacher_wrong": wrong}

  def store_labels(prefs: PreferenceState, key, first, second, labels, asked, keep):
    """Adds the pairs with `keep` to the preference buffer; `asked` (skipped queries
    included) counts toward `queries_asked`, `keep` toward `labels_used`."""
    return prefs.replace(
      preferences=reward_model.add_preferences(prefs.preferences, key, first, second, labels, keep),
      queries_asked=prefs.queries_asked + jnp.sum(asked),
      labels_used=prefs.labels_used + jnp.sum(keep),
    )

  def collect_segments(prefs: PreferenceState, transitions, key):
    stream = jax.tree.map(as_stream, transitions)
    cutter, new_segments, valid = segments.cut(
      prefs.cutter,
      segments.steps_of(stream),
      1.0 - stream.discount,
      key,
      config.segments.per_iteration,
    )
    buffer = segments.add(prefs.segments, new_segments, valid)
    return prefs.replace(cutter=cutter, segments=buffer)

  def learned_rewards(prefs: PreferenceState, transitions, key):
    """The normalized ensemble reward of the rollout ([U, T, N]) and its metrics."""
    # Envs first ([N, U, T]), as `step_rewards` wants the sharded axis (see its docstring).
    obs, action, next_obs = (
      jnp.moveaxis(x, 2, 0) for x in (transitions.obs, transitions.action, transitions.next_obs)
    )
    rm_state, reward = model.normalized_reward(prefs.reward_model, obs, action, next_obs)
    reward = jnp.moveaxis(reward, 0, 2)  # back to [U, T, N]

    def accumulate(running, step):  # per env, in time order: sums of finished episodes
      reward_t, done_t = step
      running = running + reward_t
      return jnp.where(done_t, 0.0, running), jnp.sum(jnp.where(done_t, running, 0.0))

    stream_done = as_stream(transitions.discount) == 0
    learned_return, ended_sums = jax.lax.scan(
      accumulate, prefs.learned_return, (as_stream(reward), stream_done)
    )
    # How well the learned return of stored segments tracks their true return.
    index = shard(jax.random.randint(key, (256,), 0, jnp.maximum(prefs.segments.size, 1)), 0)
    sample = jax.tree.map(lambda x: x[index], prefs.segments.segments)
    raw = model.step_rewards(
      rm_state.params, rm_state.inputs, sample.obs, sample.action, sample.next_obs
    )
    learned_segment = jnp.sum(model.normalize(rm_state, raw) * sample.mask, axis=-1)
    true_segment = teachers.segment_return(sample)
    prefs = prefs.replace(reward_model=rm_state, learned_return=learned_return)
    return (
      prefs,
      reward,
      {
        "learned_return_sum": jnp.sum(ended_sums),
        "rm_true_correlation": correlation(learned_segment, true_segment),
      },
    )

  def init_preferences(state: TrainState, key) -> TrainState:
    """Labels from the random initial policy, and the reward model fit to them."""
    key_model, key_rollout, key_cut, key_ask, key_fit = jax.random.split(key, 5)
    env_state, transitions = run_rollout(state, key_rollout)
    one_step = jax.tree.map(lambda x: x[0, 0], segments.steps_of(transitions))  # [N, ...]
    empty_segment = jax.tree.map(
      lambda x: jnp.zeros((segment_length,) + x.shape[1:], x.dtype), one_step
    )
    prefs = PreferenceState(
      cutter=segments.init_cutter(one_step, segment_length),
      segments=segments.init_buffer(empty_segment, config.segments.buffer_size),
      preferences=reward_model.init_preference_buffer(
        empty_segment, queries_config.buffer_size, config.reward.ensemble_size
      ),
      reward_model=model.init(key_model),
      learned_return=jnp.zeros(one_step.mask.shape, jnp.float32),
      recent_return=recent_episode_return(jnp.zeros((), jnp.float32), transitions),
      queries_asked=jnp.zeros((), jnp.int32),
      labels_used=jnp.zeros((), jnp.int32),
    )
    prefs = collect_segments(prefs, transitions, key_cut)
    if not human:  # a person's initial labels come from the host (labeling/human.py)
      # The untrained ensemble's disagreement means nothing yet: the first pairs are uniform.
      prefs, _ = ask(prefs, key_ask, num_initial, num_initial, "uniform")
    rm_state = model.observe(
      prefs.reward_model, transitions.obs, transitions.action, transitions.next_obs
    )
    if config.reward.initial_train_steps and not human:
      rm_state, _ = model.update(
        rm_state, prefs.preferences, key_fit, config.reward.initial_train_steps
      )
    prefs = prefs.replace(reward_model=rm_state)
    return state.replace(env_state=env_state, preferences=prefs)

  def propose(state: TrainState, key, num_pairs: int, method: str):
    return choose_pairs(state.preferences, *jax.random.split(key), num_pairs, method)

  def ingest(state: TrainState, key, first, second, labels, asked, keep):
    prefs = store_labels(state.preferences, key, first, second, labels, asked, keep)
    return state.replace(preferences=prefs)

  def fit(state: TrainState, key, num_steps: int):
    prefs = state.preferences
    rm_state, rm_metrics = model.update(prefs.reward_model, prefs.preferences, key, num_steps)
    return state.replace(preferences=prefs.replace(reward_model=rm_state)), rm_metrics

  def init(key) -> TrainState:
    key_ppo, key_env, key_loop, key_prefs = jax.random.split(key, 4)
    env_state = env.reset(jax.random.split(key_env, ppo_config.num_envs))
    ppo_state = ppo.init_state(key_ppo, networks, optimizer, env.observation_size)
    state = TrainState(ppo_state, env_state, key_loop, jnp.zeros((), jnp.int32), None)
    return init_preferences(state, key_prefs) if learned else state

  def iteration(state: TrainState):
    key, key_rollout, key_update, key_prefs = jax.random.split(state.key, 4)
    env_state, transitions = run_rollout(state, key_rollout)  # [U, T, N]
    metrics = {}
    prefs = state.preferences
    if learned:
      key_cut, key_ask, key_fit, key_reward = jax.random.split(key_prefs, 4)
      prefs = collect_segments(prefs, transitions, key_cut)
      prefs = prefs.replace(recent_return=recent_episode_return(prefs.recent_return, transitions))
      if max_queries:
        due = jnp.asarray(schedule)[jnp.minimum(state.iteration, len(schedule) - 1)]
        prefs, query_metrics = ask(prefs, key_ask, max_queries, due, queries_config.method)
        metrics.update(query_metrics)
      rm_state = model.observe(
        prefs.reward_model, transitions.obs, transitions.action, transitions.next_obs
      )
      rm_state, rm_metrics = model.update(
        rm_state, prefs.preferences, key_fit, config.reward.train_steps
      )
      prefs = prefs.replace(reward_model=rm_state)
      prefs, reward, reward_metrics = learned_rewards(prefs, transitions, key_reward)
      transitions = transitions._replace(reward=reward)
      metrics.update(
        rm_metrics,
        **reward_metrics,
        queries_asked=prefs.queries_asked,
        labels_used=prefs.labels_used,
      )
    transitions = jax.tree.map(as_ppo_batch, transitions)
    ppo_state, ppo_metrics = update(state.ppo, transitions, key_update)

    metrics.update(
      ppo_metrics,
      **episode_metrics(transitions),
      true_reward_per_step=jnp.mean(transitions.true_reward),
      reward_per_step=jnp.mean(transitions.reward),
    )
    new_state = TrainState(ppo_state, env_state, key, state.iteration + 1, prefs)
    metrics["finite"] = all_finite((metrics, learned_parts(new_state)))
    return new_state, metrics

  def reduce(name, values):
    if name in SUMMED:
      return jnp.sum(values)
    return values[-1] if name in LAST else jnp.mean(values)

  def chunk(state: TrainState):
    state, metrics = jax.lax.scan(
      lambda s, _: iteration(s), state, None, length=config.iterations_per_chunk
    )
    finite = metrics.pop("finite")
    summary = {name: reduce(name, values) for name, values in metrics.items()}
    # The guard's clue: the first iteration of the chunk that produced a NaN or Inf.
    summary["nonfinite_iteration"] = jnp.where(jnp.all(finite), -1, jnp.argmin(finite))
    return state, summary

  # num_seeds > 1: independent runs side by side, every array with a leading seed axis.
  seeded = config.num_seeds > 1
  init_fn, chunk_fn = (jax.vmap(init), jax.vmap(chunk)) if seeded else (init, chunk)
  abstract = jax.eval_shape(init_fn, seed_keys(config))
  shardings = sharding.state_shardings(mesh, abstract, ppo_config.num_envs, seed_axis=seeded)
  return Trainer(
    init=jax.jit(init_fn, out_shardings=shardings),
    chunk=jax.jit(
      chunk_fn,
      in_shardings=(shardings,),
      out_shardings=(shardings, sharding.replicated(mesh)),
      donate_argnums=0,
    ),
    env=env,
    networks=networks,
    env_steps_per_iteration=steps_per_iteration,
    initial_env_steps=steps_per_iteration if learned else 0,
    reward_model=model if learned else None,
    segment_length=segment_length,
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
    num_initial_labels=num_initial if learned else 0,
    label_schedule=schedule,
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
  for name in (*LAST, "nonfinite_iteration"):
    if name in metrics:
      metrics[name] = int(metrics[name])
  return metrics
