"""The preference component: what a learner gets back, checked against NumPy by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import preference, reward_model
from rlhf_jax import segments as segments_lib
from rlhf_jax.config import default_config
from rlhf_jax.types import Segment, Transition

OBS, ACT, ENVS, STEPS = 3, 2, 4, 12


def small_config(teacher="oracle"):
  config = default_config()
  config.reward.source = "learned"
  config.reward.hidden_sizes = (8,)
  config.reward.initial_train_steps = 3
  config.reward.train_steps = 2
  config.teacher = teacher
  config.env.episode_length = 100
  config.segments.length = 4
  config.segments.per_iteration = 8
  config.segments.buffer_size = 32
  config.queries.total_labels = 20
  config.queries.buffer_size = 40
  config.ppo.num_envs = ENVS
  config.ppo.batch_size = ENVS
  config.ppo.unroll_length = STEPS
  config.ppo.num_minibatches = 1
  config.total_env_steps = 10 * ENVS * STEPS
  return config


def random_stream(key, done_every=5) -> Transition:
  """[STEPS, ENVS] steps of made-up envs; env e's episodes end every done_every + e steps."""
  k_obs, k_act, k_reward = jax.random.split(key, 3)
  obs = jax.random.normal(k_obs, (STEPS + 1, ENVS, OBS))
  action = jax.random.uniform(k_act, (STEPS, ENVS, ACT), minval=-1, maxval=1)
  reward = jax.random.normal(k_reward, (STEPS, ENVS))
  t, e = np.meshgrid(np.arange(STEPS), np.arange(ENVS), indexing="ij")
  done = (t + 1) % (done_every + e) == 0
  return Transition(
    obs=obs[:-1],
    action=action,
    raw_action=action,
    log_prob=jnp.zeros((STEPS, ENVS)),
    reward=reward,
    true_reward=reward,
    discount=jnp.asarray(1.0 - done, jnp.float32),
    truncation=jnp.zeros((STEPS, ENVS)),
    next_obs=obs[1:],
    episode_return=jnp.full((STEPS, ENVS), 7.0),
    qpos=obs[:-1],
  )


def numpy_member_reward(params, x):
  """One member's MLP (leaky ReLU hidden layers, one output), written out in NumPy."""
  layers = sorted(params["params"], key=lambda name: int(name.split("_")[1]))
  for i, name in enumerate(layers):
    x = x @ np.asarray(params["params"][name]["kernel"]) + np.asarray(
      params["params"][name]["bias"]
    )
    if i < len(layers) - 1:
      x = np.where(x > 0, x, 0.01 * x)
  return x[..., 0]


@pytest.mark.parametrize("members", ["loop", "vmap"])
def test_reward_is_the_normalized_ensemble_mean_of_the_members_applied_directly(members):
  config = small_config()
  config.reward.members = members
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  stream = random_stream(jax.random.PRNGKey(2))
  new_state, reward, learned_return_sum = prefs.reward(state, stream)

  features = np.concatenate([np.asarray(stream.obs), np.asarray(stream.action)], axis=-1)
  members = state.reward_model.params
  raw = np.stack(
    [
      numpy_member_reward(jax.tree.map(lambda x, m=m: x[m], members), features)
      for m in range(config.reward.ensemble_size)
    ]
  )  # [M, STEPS, ENVS]
  # The normalizer's first batch sets its statistics outright (no decay yet).
  mean = raw.mean(axis=(1, 2), keepdims=True)
  var = raw.var(axis=(1, 2), keepdims=True)
  expected = np.mean((raw - mean) / np.sqrt(var + 1e-8), axis=0)
  np.testing.assert_allclose(np.asarray(reward), expected, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(new_state.reward_model.reward_mean, mean.ravel(), rtol=1e-4)

  # The learned return of the episodes that ended, summed in time order per env.
  done = np.asarray(stream.discount) == 0
  running, ended = np.asarray(state.learned_return, np.float64).copy(), 0.0
  for t in range(STEPS):
    running += expected[t]
    ended += running[done[t]].sum()
    running[done[t]] = 0.0
  assert float(learned_return_sum) == pytest.approx(ended, rel=1e-3, abs=1e-3)
  np.testing.assert_allclose(new_state.learned_return, running, rtol=1e-3, atol=1e-4)


def test_step_asks_the_labels_the_schedule_says_are_due():
  config = small_config()
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  initial = round(20 * config.queries.initial_fraction)
  assert int(state.labels_used) == int(state.preferences.size) == initial
  step = jax.jit(prefs.step)
  due = initial + np.cumsum(prefs.label_schedule)
  for i in range(3):
    state, reward, metrics = step(
      state, jax.random.PRNGKey(10 + i), random_stream(jax.random.PRNGKey(20 + i)), i
    )
    assert reward.shape == (STEPS, ENVS)
    assert int(metrics["labels_used"]) == int(state.preferences.size) == due[i]
    assert int(metrics["new_labels"]) == prefs.label_schedule[i]


def test_a_human_teacher_gets_no_labels_from_init_and_the_host_side_policy():
  config = small_config(teacher="human")
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  assert int(state.labels_used) == 0 and int(state.segments.size) > 0
  assert prefs.max_queries == 0
  assert prefs.query_method(0) == "uniform"
  assert prefs.query_method(3) == config.queries.method
  initial = prefs.num_initial_labels  # 5 of 20
  assert prefs.initial_fit_steps(0, initial - 1) == 0
  assert prefs.initial_fit_steps(0, initial) == config.reward.initial_train_steps
  assert prefs.initial_fit_steps(initial - 2, initial + 3) == config.reward.initial_train_steps
  assert prefs.initial_fit_steps(initial, initial + 3) == 0  # already had its first fit


def test_members_batched_or_one_by_one_train_alike():
  """Both layouts of the ensemble take the same Adam steps, up to float rounding."""
  results = []
  for members in ("loop", "vmap"):
    config = small_config()
    config.reward.members = members
    prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
    state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
    state, metrics = prefs.fit(state, jax.random.PRNGKey(5), 20)
    results.append((state.reward_model.params, metrics))
  (params_loop, metrics_loop), (params_vmap, metrics_vmap) = results
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), params_loop, params_vmap
  )
  for name in preference.FIT_METRICS:
    assert float(metrics_loop[name]) == pytest.approx(float(metrics_vmap[name]), rel=1e-4)


def test_updates_follow_env_steps_not_iterations():
  config = small_config()  # 4 envs x 12 steps: 48 env steps an iteration
  config.reward.update_every_env_steps = 120  # 2.5 iterations
  config.iterations_per_chunk = 5
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  # By hand: after iteration i, 48 (i + 1) env steps; 120, 240, 360 are crossed in
  # iterations 2 (144), 4 (240) and 7 (384); iteration 9 ends at 480.
  expected = [i in (2, 4, 7, 9) for i in range(10)]
  np.testing.assert_array_equal(prefs.update_schedule, expected)

  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  step = jax.jit(prefs.step)
  for i in range(5):
    before = state.reward_model.params
    state, _, metrics = step(
      state, jax.random.PRNGKey(i), random_stream(jax.random.PRNGKey(9 + i)), i
    )
    changed = any(
      not np.array_equal(a, b)
      for a, b in zip(
        jax.tree.leaves(before), jax.tree.leaves(state.reward_model.params), strict=True
      )
    )
    assert changed == expected[i] == bool(metrics["rm_updates"])


def test_with_an_update_interval_labels_are_asked_in_the_updating_iterations():
  # By hand: due per iteration 1 2 0 3 1 1 0 2; updates in iterations 2 and 5. Iteration
  # 2 asks 1+2+0, iteration 5 asks 3+1+1, and the 0+2 due after the last update come
  # with it (they could not be learned from later).
  schedule = np.array([1, 2, 0, 3, 1, 1, 0, 2])
  updates = np.array([0, 0, 1, 0, 0, 1, 0, 0], bool)
  np.testing.assert_array_equal(preference.batch_at(schedule, updates), [0, 0, 3, 0, 0, 7, 0, 0])

  config = small_config()  # 4 envs x 12 steps: 48 env steps an iteration
  config.reward.update_every_env_steps = 120  # updates in iterations 2, 4, 7, 9
  config.iterations_per_chunk = 5
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  asks = np.flatnonzero(prefs.label_schedule)
  assert set(asks) <= {2, 4, 7, 9} and len(asks) > 0
  total = config.queries.total_labels - prefs.num_initial_labels
  assert prefs.label_schedule.sum() == total
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  step = jax.jit(prefs.step)
  for i in range(10):
    before = int(state.labels_used)
    state, _, metrics = step(
      state, jax.random.PRNGKey(i), random_stream(jax.random.PRNGKey(9 + i)), i
    )
    assert int(metrics["labels_used"]) - before == prefs.label_schedule[i]
  assert int(state.labels_used) == config.queries.total_labels


def test_an_iteration_shorter_than_the_segments_kept_per_iteration_keeps_one_per_step():
  """SAC's iteration is one step of each env: fewer steps than `segments.per_iteration`."""
  config = small_config()
  config.segments.per_iteration = 64
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  stream = jax.tree.map(lambda x: x[:1], random_stream(jax.random.PRNGKey(1)))  # [1, 4]
  state = prefs.empty(
    jax.random.PRNGKey(0), jax.tree.map(lambda x: x[0], segments_lib.steps_of(stream))
  )
  for i in range(3 * prefs.segment_length):
    state = prefs.store_segments(state, jax.random.PRNGKey(i), stream)
  # Each env's episode runs on: a segment ends every `segment_length` steps per env.
  assert int(state.segments.size) == 3 * ENVS


def test_an_update_interval_longer_than_a_chunk_is_refused():
  config = small_config()
  config.iterations_per_chunk = 2
  config.reward.update_every_env_steps = 3 * ENVS * STEPS
  with pytest.raises(ValueError, match="update_every_env_steps"):
    config_lib.validate(config)
  config.reward.update_every_env_steps = 0
  config.reward.members = "threads"
  with pytest.raises(ValueError, match="reward.members"):
    config_lib.validate(config)


@pytest.mark.parametrize("relabel", [True, False])
def test_relabeling_gives_every_stored_transition_the_new_models_reward(tmp_path, relabel):
  """PEBBLE: after a chunk of SAC from labels (the ensemble updated every iteration), every
  replay row's reward is the final ensemble's, written out in NumPy; without relabeling,
  the rows stored before the last update keep older rewards."""
  from rlhf_jax import loop  # noqa: PLC0415
  from tests.test_loop import tiny_sac_pref_config  # noqa: PLC0415

  config = tiny_sac_pref_config()
  config.sac.relabel = relabel
  trainer = loop.make_trainer(config)
  state, _ = trainer.chunk(trainer.init(jax.random.PRNGKey(0)))
  replay, rm = state.agent.replay, state.preferences.reward_model
  stored = int(replay.size)
  (ring,) = jax.tree.map(lambda x: x[0], [replay.data])  # one device: one ring
  features = np.concatenate([ring.obs, ring.action], axis=-1)[:stored]
  raw = np.stack(
    [
      numpy_member_reward(jax.tree.map(lambda x, m=m: x[m], rm.params), features)
      for m in range(config.reward.ensemble_size)
    ]
  )
  mean, var = np.asarray(rm.reward_mean)[:, None], np.asarray(rm.reward_var)[:, None]
  centered = raw - mean if config.reward.normalize_mean else raw
  expected = np.mean(centered / np.sqrt(var + 1e-8), axis=0)
  got = np.asarray(ring.reward)[:stored]
  if relabel:
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  else:  # only the newest iteration's rows have the final model's reward
    assert not np.allclose(got, expected, atol=1e-3)


def test_pebble_asks_no_label_before_pretraining_ends_and_all_of_them_after():
  config = small_config()
  config.learner = "sac"
  config.sac.num_envs = ENVS
  config.sac.unroll_length = STEPS  # 48 env steps an iteration, 10 iterations
  config.sac.unsupervised_env_steps = 100  # ends in iteration 2 (at 144 steps)
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  assert prefs.initial_iteration == 2
  assert list(prefs.label_schedule[:2]) == [0, 0]
  initial = prefs.num_initial_labels
  assert initial + prefs.label_schedule.sum() == config.queries.total_labels
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  assert int(state.labels_used) == 0
  step = jax.jit(prefs.step)
  used = []
  for i in range(10):
    stream = random_stream(jax.random.PRNGKey(20 + i))
    state, _, metrics = step(state, jax.random.PRNGKey(i), stream, i)
    used.append(int(metrics["labels_used"]))
  assert used[:2] == [0, 0]
  assert used[2] == initial + prefs.label_schedule[2]
  assert used[-1] == config.queries.total_labels


@pytest.mark.parametrize("method", ["kcenter", "kcenter_disagreement"])
def test_kcenter_queries_are_the_pool_pairs_farthest_from_the_labelled_ones(method):
  """B-Pref's KCenter (and its mix with disagreement, from the best-scored half of the
  pool), redone by hand: the same pool, the ensemble's disagreement in NumPy, a plain
  greedy loop over both segments' observations against the labelled pairs."""
  from tests.test_queries import numpy_kcenter  # noqa: PLC0415

  config = small_config()
  config.queries.method = method
  config.queries.oversampling = 4
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  key_pool, key_select = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
  first, second = prefs.choose_pairs(state, key_pool, key_select, 3, method)

  pool = segments_lib.sample_pairs(state.segments, key_pool, 12)
  flat = lambda a, b: np.concatenate(  # noqa: E731
    [np.asarray(a.obs).reshape(len(a.obs), -1), np.asarray(b.obs).reshape(len(b.obs), -1)], -1
  )
  candidates = flat(*pool)
  if method == "kcenter_disagreement":
    rm = state.reward_model
    returns = [np.asarray(prefs.model.segment_returns(rm.params, rm.inputs, p)) for p in pool]
    p_first = 1 / (1 + np.exp(-(returns[0] - returns[1])))  # [M, 12]
    half = np.argsort(-p_first.var(axis=0), kind="stable")[:6]
    candidates = candidates[half]
  size = int(state.preferences.size)
  labelled = flat(state.preferences.first, state.preferences.second)[:size]
  expected = candidates[numpy_kcenter(candidates, labelled, 3)]
  np.testing.assert_allclose(flat(first, second), expected, rtol=1e-6)
  # In the jitted loop step, the labels due are asked with it.
  before = int(state.labels_used)
  state, _, metrics = jax.jit(prefs.step)(state, key_pool, random_stream(key_select), 0)
  assert int(state.labels_used) == before + prefs.label_schedule[0] > before


def test_pair_agreement_counts_the_pairs_with_unequal_true_returns_ordered_right():
  learned = jnp.array([1.0, 5.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0])
  true = jnp.array([1.0, 2.0, 3.0, 0.0, 0.0, 2.0, 1.0, 0.0])
  # Pairs (i, 4 + i): true 1 > 0, learned 1 < 3: wrong; 2 = 2: a tie; 3 > 1, learned 2 < 4:
  # wrong; 0 = 0: a tie. Two pairs with unequal true returns, neither ordered right.
  metrics = preference.pair_agreement(learned, true)
  assert float(metrics["rm_pair_accuracy"]) == 0.0
  assert float(metrics["rm_pair_ties"]) == 0.5
  metrics = preference.pair_agreement(-learned, true)  # reversed: both right
  assert float(metrics["rm_pair_accuracy"]) == 1.0
  metrics = preference.pair_agreement(learned, jnp.zeros(8))  # all tie: a coin's 0.5
  assert float(metrics["rm_pair_accuracy"]) == 0.5
  assert float(metrics["rm_pair_ties"]) == 1.0


def test_reward_agreement_matches_numpy_on_the_stored_segments():
  config = small_config()
  prefs = preference.Preferences(config, OBS, ACT, control_dt=0.05)
  state = prefs.init(jax.random.PRNGKey(0), random_stream(jax.random.PRNGKey(1)))
  metrics = prefs.reward_agreement(state, jax.random.PRNGKey(3))

  index = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (512,), 0, state.segments.size))
  stored = jax.tree.map(lambda x: np.asarray(x)[index], state.segments.segments)
  rm = state.reward_model
  features = np.concatenate([stored.obs, stored.action], axis=-1)  # [512, K, OBS + ACT]
  raw = np.stack(
    [
      numpy_member_reward(jax.tree.map(lambda x, m=m: x[m], rm.params), features)
      for m in range(config.reward.ensemble_size)
    ]
  )
  scaled = (raw - np.asarray(rm.reward_mean)[:, None, None]) / np.sqrt(
    np.asarray(rm.reward_var)[:, None, None] + 1e-8
  )
  learned = (scaled.mean(axis=0) * stored.mask).sum(axis=-1)
  true = (stored.true_reward * stored.mask).sum(axis=-1)
  right = ties = 0
  for i in range(256):
    if true[i] == true[256 + i]:
      ties += 1
    elif (learned[i] > learned[256 + i]) == (true[i] > true[256 + i]):
      right += 1
  assert ties < 256
  assert float(metrics["rm_pair_accuracy"]) == pytest.approx(right / (256 - ties))
  assert float(metrics["rm_pair_ties"]) == pytest.approx(ties / 256)
  assert float(metrics["rm_true_correlation"]) == pytest.approx(
    np.corrcoef(learned, true)[0, 1], abs=1e-4
  )
  steps = stored.mask.reshape(-1) > 0
  slope, intercept = np.polyfit(
    stored.true_reward.reshape(-1)[steps], scaled.mean(axis=0).reshape(-1)[steps], 1
  )
  fit = preference.step_fit(
    jnp.asarray(scaled.mean(axis=0)), jnp.asarray(stored.true_reward), jnp.asarray(stored.mask)
  )
  assert float(fit["rm_step_slope"]) == pytest.approx(slope, rel=1e-3)
  assert float(fit["rm_step_intercept"]) == pytest.approx(intercept, rel=1e-3, abs=1e-4)


def test_label_ties_counts_stored_ties_and_those_of_unequal_lengths():
  def segments(lengths):
    mask = (np.arange(4)[None] < np.array(lengths)[:, None]).astype(np.float32)
    return Segment(obs=None, action=None, next_obs=None, true_reward=None, mask=mask, qpos=None)

  # Five slots, four stored: a tie of lengths 4 and 2, a tie of equal lengths, a decided
  # pair of unequal lengths, a tie of equal lengths; the fifth slot (a tie) is not stored.
  buffer = reward_model.PreferenceBuffer(
    first=segments([4, 4, 4, 3, 1]),
    second=segments([2, 4, 1, 3, 4]),
    label=jnp.array([0.5, 0.5, 1.0, 0.5, 0.5]),
    bootstrap=None,
    next_index=jnp.array(4),
    size=jnp.array(4),
  )
  metrics = preference.label_ties(buffer)
  assert float(metrics["label_ties"]) == pytest.approx(3 / 4)
  assert float(metrics["label_length_ties"]) == pytest.approx(1 / 4)


def test_step_fit_reads_scale_and_offset_of_a_line():
  true = jnp.array([[0.0, 1.0, 0.0, 3.0], [2.0, 0.0, 9.0, 9.0]])
  mask = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])  # the 9s are padding
  learned = jnp.where(mask > 0, 2.0 * (true + 0.5), -100.0)  # a step pays 0.5 beyond truth
  metrics = preference.step_fit(learned, true, mask)
  assert float(metrics["rm_step_slope"]) == pytest.approx(2.0)
  assert float(metrics["rm_step_intercept"]) == pytest.approx(1.0)  # 2 x 0.5: intercept / slope
  # Reversed: slope -2, intercept -1; a constant true reward: no slope.
  reversed_fit = preference.step_fit(-learned, true, mask)
  assert float(reversed_fit["rm_step_intercept"]) == pytest.approx(-1.0)
  flat = preference.step_fit(learned, jnp.ones_like(true), mask)
  assert float(flat["rm_step_slope"]) == 0.0
