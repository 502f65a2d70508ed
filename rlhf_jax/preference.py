"""The preference machinery as one component: segments, teacher, queries, reward model.

A learner (PPO today) hands it what its envs did, as streams of transitions ([L, N]: L
steps of each of N envs, in time order, each stream running on from the previous call),
and gets the reward to learn from (`frame_shape`: (H, W, C) when observations are
flattened frames, as MinAtar's: the reward members are then conv nets):

  prefs = Preferences(config, observation_size, action_size, control_dt, shard, frame_shape)
  state = prefs.init(key, stream)        empty buffers + the random policy's segments;
                                         a simulated teacher labels the initial pairs
                                         (uniform) and the ensemble is fit to them
  state, reward, metrics = prefs.step(state, key, stream, iteration)
      one iteration: cut and store segments -> ask the labels due (schedule) ->
      update the ensemble -> the normalized learned reward of the stream, [L, N]

and, for labels from outside (a person, a dataset), the pieces `step` is made of:
`propose` (pairs to ask about), `ingest` (labelled pairs into the buffer), `fit`
(reward-model steps), `query_method` and `initial_fit_steps` (the initial-label policy).
Its state is one pytree, `PreferenceState`; every method is pure and jittable.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import queries, reward_model, segments, teachers
from rlhf_jax.types import Transition


@flax.struct.dataclass
class PreferenceState:
  """Everything the preference machinery carries between iterations."""

  cutter: segments.CutterState
  segments: segments.SegmentBuffer
  preferences: reward_model.PreferenceBuffer
  reward_model: reward_model.RewardModelState
  learned_return: jax.Array  # float32 [N]: learned return of each env's running episode
  recent_return: jax.Array  # float32 []: true return of recently ended episodes (teacher)
  queries_asked: jax.Array  # int32 []
  labels_used: jax.Array  # int32 []: queries the teacher answered (not skipped)


# Measured when the ensemble updates: with `reward.update_every_env_steps`, a chunk
# averages them over the iterations that updated (weighted by the `rm_updates` metric).
FIT_METRICS = ("rm_train_loss", "rm_train_accuracy", "rm_val_loss", "rm_val_accuracy", "rm_l2")
AGREEMENT_METRICS = ("rm_true_correlation", "rm_pair_accuracy", "rm_pair_ties")
UPDATE_METRICS = FIT_METRICS + AGREEMENT_METRICS


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


def batch_at(schedule: np.ndarray, updates: np.ndarray) -> np.ndarray:
  """`schedule` (labels per iteration) moved to the iterations where `updates` is true:
  each of those asks what came due since the previous one; what comes due after the
  last update is asked with the last update (it could not be learned from later)."""
  cumulative = np.cumsum(schedule)
  at = np.flatnonzero(updates)
  if at.size == 0:
    return schedule
  batched = np.zeros_like(schedule)
  taken = np.concatenate([[0], cumulative[at]])
  batched[at] = np.diff(taken)
  batched[at[-1]] += cumulative[-1] - taken[-1]
  return batched


def correlation(x, y):
  """Pearson correlation of two vectors (0 where either is constant)."""
  dx, dy = x - jnp.mean(x), y - jnp.mean(y)
  covariance, var_x, var_y = jnp.mean(dx * dy), jnp.mean(dx * dx), jnp.mean(dy * dy)
  return jnp.where(var_x * var_y > 0, covariance / jnp.sqrt(var_x * var_y + 1e-30), 0.0)


def pair_agreement(learned, true) -> dict:
  """Pairs the first half of two [2P] return vectors with the second half (i with P + i);
  a tie is what the oracle labels 0.5 (equal true returns, `teachers.label`)."""
  half = learned.shape[0] // 2
  learned_diff = learned[:half] - learned[half:]
  true_diff = true[:half] - true[half:]
  strict = true_diff != 0
  right = jnp.sum(strict & (learned_diff * true_diff > 0))
  count = jnp.sum(strict)
  return {
    "rm_pair_accuracy": jnp.where(count > 0, right / jnp.maximum(count, 1), 0.5),
    "rm_pair_ties": 1.0 - count / half,
  }


def step_fit(learned, true, mask) -> dict:
  """The least-squares line learned ≈ slope × true + intercept over the steps with mask
  1: `rm_step_slope` (learned units per true unit) and `rm_step_intercept` (the learned
  reward of a step whose true reward is 0). Their ratio is what a step pays beyond its
  true reward in true-reward units: 0 when the learned reward is the true one scaled,
  positive when it pays for surviving (a ratio, ill-conditioned where the slope is near 0,
  so it is left to the reader). The slope is 0 where the true reward does not vary."""
  weight = mask / jnp.maximum(jnp.sum(mask), 1.0)
  mean_true, mean_learned = jnp.sum(weight * true), jnp.sum(weight * learned)
  var_true = jnp.sum(weight * (true - mean_true) ** 2)
  covariance = jnp.sum(weight * (true - mean_true) * (learned - mean_learned))
  slope = jnp.where(var_true > 0, covariance / jnp.where(var_true > 0, var_true, 1.0), 0.0)
  return {"rm_step_slope": slope, "rm_step_intercept": mean_learned - slope * mean_true}


def label_ties(buffer: reward_model.PreferenceBuffer) -> dict:
  """Of the stored labels: `label_ties`, the share that are ties (0.5), and
  `label_length_ties`, the share that tie a segment cut short by its episode's end with
  one of another length: the labels that pin the learned reward's offset (`step_fit`)."""
  stored = jnp.arange(buffer.label.shape[0]) < buffer.size
  tie = stored & (buffer.label == 0.5)
  lengths_differ = jnp.sum(buffer.first.mask, -1) != jnp.sum(buffer.second.mask, -1)
  count = jnp.maximum(jnp.sum(stored), 1)
  return {
    "label_ties": jnp.sum(tie) / count,
    "label_length_ties": jnp.sum(tie & lengths_differ) / count,
  }


class Preferences:
  """The preference side of `config` (read once, here): which teacher, how many labels
  when, the segment length, the reward ensemble. `shard(tree, axis)` places batches over
  the mesh's data axis (`sharding.data_splitter`); the default leaves them alone."""

  def __init__(
    self,
    config,
    observation_size: int,
    action_size: int,
    control_dt: float,
    shard=lambda tree, axis: tree,
    frame_shape: tuple[int, int, int] | None = None,
  ):
    self.config = config
    self.shard = shard
    self.model = reward_model.make_reward_model(
      config, observation_size, action_size, shard, frame_shape
    )
    self.segment_length = config_lib.segment_length(config, control_dt)
    self.episode_steps = config_lib.steps_per_episode(config)
    self.human = config.teacher == "human"  # labels come from the host, between chunks
    self.teacher = None if self.human else teachers.from_config(config)
    q = config.queries
    self.num_initial_labels = queries.initial_labels(q.total_labels, q.initial_fraction)
    steps_per_iteration = config_lib.env_steps_per_iteration(config)
    num_iterations = config_lib.num_iterations(config)
    # PEBBLE asks no label while SAC pre-trains without a reward: the initial labels come
    # in the iteration that ends pre-training (about the explorer's segments), not in
    # `init`, and the schedule of the rest starts there. None: in `init`.
    self.initial_iteration = None
    unsupervised = config.sac.unsupervised_env_steps if config.learner == "sac" else 0
    if unsupervised:
      self.initial_iteration = min(-(-unsupervised // steps_per_iteration) - 1, num_iterations - 1)
    first = 0 if self.initial_iteration is None else self.initial_iteration
    # Labels asked in each iteration after the initial ones, int [num_iterations].
    self.label_schedule = np.concatenate(
      [
        np.zeros(first, np.int32),
        queries.label_schedule(
          q.total_labels,
          q.initial_fraction,
          q.schedule,
          q.schedule_timescale,
          steps_per_iteration,
          num_iterations - first,
        ),
      ]
    )
    # None: the ensemble updates every iteration. Else the iterations that cross a
    # multiple of `reward.update_every_env_steps` env steps update it, bool [iterations],
    # and the labels due since the last update are asked then, in one batch, as B-Pref
    # asks them (scoring candidates each iteration would cost what the schedule saves).
    every = config.reward.update_every_env_steps
    self.update_schedule = None
    if every:
      done = steps_per_iteration * np.arange(num_iterations + 1, dtype=np.int64)
      self.update_schedule = np.diff(done // every) > 0
      self.label_schedule = batch_at(self.label_schedule, self.update_schedule)
    self.max_queries = 0 if self.human else int(self.label_schedule.max())

  # -- state ----------------------------------------------------------------------------

  def empty(self, key, example_step) -> PreferenceState:
    """Empty buffers and a fresh ensemble; `example_step` is one step of the N streams
    (`segments.steps_of`, leaves [N, ...])."""
    empty_segment = jax.tree.map(
      lambda x: jnp.zeros((self.segment_length,) + x.shape[1:], x.dtype), example_step
    )
    return PreferenceState(
      cutter=segments.init_cutter(example_step, self.segment_length),
      segments=segments.init_buffer(empty_segment, self.config.segments.buffer_size),
      preferences=reward_model.init_preference_buffer(
        empty_segment, self.config.queries.buffer_size, self.config.reward.ensemble_size
      ),
      reward_model=self.model.init(key),
      learned_return=jnp.zeros(example_step.mask.shape, jnp.float32),
      recent_return=jnp.zeros((), jnp.float32),
      queries_asked=jnp.zeros((), jnp.int32),
      labels_used=jnp.zeros((), jnp.int32),
    )

  def init(self, key, stream: Transition) -> PreferenceState:
    """The state after the random initial policy's `stream`: its segments stored and,
    with a simulated teacher, the initial labels asked (uniform: an untrained ensemble's
    disagreement means nothing) and `reward.initial_train_steps` fit to them. A person's
    initial labels come from the host (labeling/human.py), with the same policy."""
    key_model, key_cut, key_ask, key_fit = jax.random.split(key, 4)
    state = self.empty(key_model, jax.tree.map(lambda x: x[0], segments.steps_of(stream)))
    state = state.replace(recent_return=recent_episode_return(state.recent_return, stream))
    state = self.store_segments(state, key_cut, stream)
    state = self.observe_inputs(state, stream)
    if not self.human and self.initial_iteration is None:
      state = self.ask_initial(state, key_ask, key_fit)
    return state

  def ask_initial(self, state: PreferenceState, key_ask, key_fit) -> PreferenceState:
    """The initial labels, about uniform pairs (an untrained ensemble's disagreement
    means nothing), and `reward.initial_train_steps` of fitting to them."""
    num = self.num_initial_labels
    state, _ = self.ask(state, key_ask, num, num, self.query_method(0))
    if self.config.reward.initial_train_steps:
      state, _ = self.fit(state, key_fit, self.config.reward.initial_train_steps)
    return state

  # -- one iteration ----------------------------------------------------------------------

  def step(self, state: PreferenceState, key, stream: Transition, iteration):
    """One iteration of the preference loop on the learner's latest `stream` [L, N]:
    returns (state, the normalized learned reward [L, N], metrics)."""
    key_cut, key_ask, key_fit, key_reward = jax.random.split(key, 4)
    state = self.store_segments(state, key_cut, stream)
    state = state.replace(recent_return=recent_episode_return(state.recent_return, stream))
    if self.initial_iteration is not None and not self.human:
      keys = jax.random.split(jax.random.fold_in(key, 1), 2)
      state = jax.lax.cond(
        iteration == self.initial_iteration,
        lambda s: self.ask_initial(s, *keys),
        lambda s: s,
        state,
      )
    metrics = {}
    if self.max_queries:  # scoring candidates costs: only in iterations with labels due
      schedule = jnp.asarray(self.label_schedule)
      due = schedule[jnp.minimum(iteration, len(schedule) - 1)]
      method = self.config.queries.method
      state, ask_metrics = jax.lax.cond(
        due > 0,
        lambda s: self.ask(s, key_ask, self.max_queries, due, method),
        lambda s: (s, {"new_labels": jnp.zeros((), jnp.int32), "teacher_wrong": jnp.zeros(())}),
        state,
      )
      metrics.update(ask_metrics)
    state = self.observe_inputs(state, stream)
    state, fit_metrics = self.scheduled_fit(state, key_fit, iteration)
    state, reward, learned_return_sum = self.reward(state, stream)
    if self.update_schedule is None:
      agreement = self.reward_agreement(state, key_reward)
    else:  # a diagnostic, costlier than the reward of a small rollout: with the updates
      agreement = jax.lax.cond(
        fit_metrics["rm_updates"] > 0,
        lambda s: self.reward_agreement(s, key_reward),
        lambda s: {name: jnp.zeros(()) for name in AGREEMENT_METRICS},
        state,
      )
    metrics.update(
      fit_metrics,
      **agreement,
      **label_ties(state.preferences),
      learned_return_sum=learned_return_sum,
      queries_asked=state.queries_asked,
      labels_used=state.labels_used,
    )
    return state, reward, metrics

  def scheduled_fit(self, state: PreferenceState, key, iteration):
    """`reward.train_steps` reward-model steps, in the iterations `update_schedule` says;
    with a schedule, `rm_updates` (1 or 0) weighs the fit's metrics in a chunk's mean."""
    num_steps = self.config.reward.train_steps
    if self.update_schedule is None:
      return self.fit(state, key, num_steps)
    due = jnp.asarray(self.update_schedule)[jnp.minimum(iteration, len(self.update_schedule) - 1)]

    def skip(state):
      _, shapes = jax.eval_shape(lambda s: self.fit(s, key, num_steps), state)
      return state, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    state, metrics = jax.lax.cond(due, lambda s: self.fit(s, key, num_steps), skip, state)
    return state, dict(metrics, rm_updates=due.astype(jnp.float32))

  def store_segments(self, state: PreferenceState, key, stream: Transition) -> PreferenceState:
    """Cuts the segments that end in `stream` and keeps `segments.per_iteration` of them
    (at most one per step: an iteration of SAC is one step of each env), those that end an
    episode first with `segments.prefer_episode_ends`."""
    cutter, new, valid = segments.cut(
      state.cutter,
      segments.steps_of(stream),
      1.0 - stream.discount,
      key,
      min(self.config.segments.per_iteration, stream.discount.size),
      self.config.segments.prefer_episode_ends,
    )
    return state.replace(cutter=cutter, segments=segments.add(state.segments, new, valid))

  def observe_inputs(self, state: PreferenceState, stream: Transition) -> PreferenceState:
    """The ensemble's input statistics take in the stream's steps (if it standardizes)."""
    model = self.model.observe(state.reward_model, stream.obs, stream.action, stream.next_obs)
    return state.replace(reward_model=model)

  def ask(self, state: PreferenceState, key, num_pairs: int, num_asked, method: str):
    """Picks `num_pairs` pairs by `method`, has the simulated teacher label the first
    `num_asked` (a traced count: the schedule's), stores what it answered."""
    key_pool, key_select, key_teacher, key_store = jax.random.split(key, 4)
    first, second = self.choose_pairs(state, key_pool, key_select, num_pairs, method)
    margin = teachers.margin(state.recent_return, self.segment_length, self.episode_steps)
    labels, labelled = teachers.label(self.teacher, key_teacher, first, second, margin)
    asked = jnp.arange(num_pairs) < num_asked
    keep = asked & labelled  # a skipped query is asked, not kept
    state = self.ingest(state, key_store, first, second, labels, asked, keep)
    wrong = teachers.oracle_disagreement(labels, keep, first, second) * jnp.sum(keep)
    return state, {"new_labels": jnp.sum(keep), "teacher_wrong": wrong}

  def reward(self, state: PreferenceState, stream: Transition):
    """The normalized ensemble reward of `stream` ([L, N]; the normalizer takes it in):
    (state, reward, the summed learned return of the episodes that ended in it)."""
    # Envs first ([N, L]): `step_rewards` wants the sharded axis first (see its docstring).
    obs, action, next_obs = (
      jnp.swapaxes(x, 0, 1) for x in (stream.obs, stream.action, stream.next_obs)
    )
    rm_state, reward = self.model.normalized_reward(state.reward_model, obs, action, next_obs)
    reward = jnp.swapaxes(reward, 0, 1)

    def accumulate(running, step):  # per env, in time order: sums of finished episodes
      reward_t, done_t = step
      running = running + reward_t
      return jnp.where(done_t, 0.0, running), jnp.sum(jnp.where(done_t, running, 0.0))

    learned_return, ended_sums = jax.lax.scan(
      accumulate, state.learned_return, (reward, stream.discount == 0)
    )
    state = state.replace(reward_model=rm_state, learned_return=learned_return)
    return state, reward, jnp.sum(ended_sums)

  def reward_of(self, state: PreferenceState, obs, action, next_obs) -> jax.Array:
    """The normalized ensemble reward of steps of any batch shape, under the normalizer
    as it stands (which they leave alone): what relabeling a replay buffer writes."""
    rm = state.reward_model
    return self.model.normalize(
      rm, self.model.step_rewards(rm.params, rm.inputs, obs, action, next_obs)
    )

  def reward_agreement(self, state: PreferenceState, key) -> dict:
    """How well the learned return of 512 stored segments tracks their true return:
    `rm_true_correlation` (Pearson, all 512) and, over the 256 pairs they make (i with
    256 + i), `rm_pair_accuracy` (the share of pairs whose true returns differ that the
    learned ones order the same way; 0.5 when none differ) and `rm_pair_ties` (the share
    whose true returns are equal: on sparse rewards most pairs tie, and the correlation
    then rests on a handful of segments)."""
    size = jnp.maximum(state.segments.size, 1)
    index = self.shard(jax.random.randint(key, (512,), 0, size), 0)
    sample = jax.tree.map(lambda x: x[index], state.segments.segments)
    rm = state.reward_model
    raw = self.model.step_rewards(rm.params, rm.inputs, sample.obs, sample.action, sample.next_obs)
    learned = jnp.sum(self.model.normalize(rm, raw) * sample.mask, axis=-1)
    true = teachers.segment_return(sample)
    return dict(rm_true_correlation=correlation(learned, true), **pair_agreement(learned, true))

  # -- the pieces, for labels from outside --------------------------------------------------

  def choose_pairs(self, state: PreferenceState, key_pool, key_select, num_pairs: int, method):
    """`num_pairs` pairs of stored segments to ask about, picked by `method` out of a
    pool `queries.oversampling` times larger (uniform: the pool itself)."""
    pool = num_pairs if method == "uniform" else self.config.queries.oversampling * num_pairs
    first, second = self.shard(segments.sample_pairs(state.segments, key_pool, pool), 0)
    if method == "uniform":  # the pool is already in random order
      return first, second
    rm = state.reward_model
    returns = lambda pair: self.model.segment_returns(rm.params, rm.inputs, pair)  # noqa: E731
    scoring = queries.KCENTER.get(method, method)
    if scoring is not None:  # the best-scored num_pairs, or half the pool for kcenter
      keep = num_pairs if method == scoring else pool // 2
      chosen = queries.select(scoring, key_select, returns(first), returns(second), keep)
      first, second = jax.tree.map(lambda x: x[chosen], (first, second))
    if method in queries.KCENTER:
      flat = lambda a, b: jnp.concatenate(  # noqa: E731  both segments' observations
        [a.obs.reshape(a.obs.shape[0], -1), b.obs.reshape(b.obs.shape[0], -1)], axis=-1
      )
      labelled = state.preferences
      valid = jnp.arange(labelled.label.shape[0]) < labelled.size
      chosen = queries.kcenter(
        flat(first, second), flat(labelled.first, labelled.second), valid, num_pairs
      )
      first, second = jax.tree.map(lambda x: x[chosen], (first, second))
    return first, second

  def propose(self, state: PreferenceState, key, num_pairs: int, method: str):
    """(first, second): `num_pairs` pairs to ask a teacher outside about."""
    return self.choose_pairs(state, *jax.random.split(key), num_pairs, method)

  def ingest(self, state: PreferenceState, key, first, second, labels, asked, keep):
    """Adds the pairs with `keep` to the preference buffer (drawing their bootstrap
    weights); `asked` (skipped queries included) counts toward `queries_asked`, `keep`
    toward `labels_used`."""
    buffer = reward_model.add_preferences(state.preferences, key, first, second, labels, keep)
    return state.replace(
      preferences=buffer,
      queries_asked=state.queries_asked + jnp.sum(asked),
      labels_used=state.labels_used + jnp.sum(keep),
    )

  def fit(self, state: PreferenceState, key, num_steps: int):
    """`num_steps` reward-model steps on the stored labels: (state, metrics)."""
    model, metrics = self.model.update(state.reward_model, state.preferences, key, num_steps)
    return state.replace(reward_model=model), metrics

  def query_method(self, labels_used: int) -> str:
    """How to pick the next pairs: uniform before any label, else `queries.method`."""
    return "uniform" if labels_used == 0 else self.config.queries.method

  def initial_fit_steps(self, labels_before: int, labels_after: int) -> int:
    """Host side, for labels from outside: the long first fit that `init` gives a
    simulated teacher's initial labels (`reward.initial_train_steps`) is due once the
    labels in hand go from fewer than the initial labels to all of them; else 0."""
    crossed = labels_before < self.num_initial_labels <= labels_after
    return self.config.reward.initial_train_steps if crossed else 0
