"""The training loop end to end: determinism, outputs of the CLI, and learning."""

import json
import math
import os
import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import config as config_lib
from rlhf_jax import loop, metrics, preference, train
from rlhf_jax.config import default_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(seed=0):
  config = default_config()
  config.seed = seed
  config.env.episode_length = 50
  config.ppo.num_envs = 8
  config.ppo.batch_size = 8
  config.ppo.num_minibatches = 2
  config.ppo.unroll_length = 5
  config.ppo.num_updates_per_batch = 2
  config.ppo.policy_hidden_sizes = (16,)
  config.ppo.value_hidden_sizes = (16,)
  config.iterations_per_chunk = 3
  config.total_env_steps = 2 * 3 * 8 * 2 * 5  # two chunks
  return config


def tiny_pref_config(seed=0):
  """tiny_config with the preference loop: segments of 10 steps, 20 labels."""
  config = tiny_config(seed)
  config.reward.source = "learned"
  config.reward.hidden_sizes = (16,)
  config.reward.initial_train_steps = 10
  config.segments.length = 10
  config.segments.per_iteration = 16
  config.segments.buffer_size = 64
  config.queries.total_labels = 20
  config.queries.buffer_size = 50
  return config


def tiny_sac_config(seed=0):
  """SAC on inverted_pendulum: 8 envs x 5 steps an iteration, 2 chunks of 3."""
  config = tiny_config(seed)
  config.learner = "sac"
  config.sac.num_envs = 8
  config.sac.unroll_length = 5
  config.sac.grad_updates_per_step = 2
  config.sac.batch_size = 16
  config.sac.min_replay_size = 40  # training starts in the second iteration
  config.sac.max_replay_size = 100  # wraps within the run
  config.sac.hidden_sizes = (16,)
  config.total_env_steps = 2 * 3 * 8 * 5
  return config


def tiny_sac_pref_config(seed=0):
  """tiny_sac_config learning from tiny_pref_config's labels."""
  config = tiny_sac_config(seed)
  preferences = tiny_pref_config(seed)
  for block in ("reward", "segments", "queries"):
    config[block] = preferences[block]
  return config


def _deterministic(records):
  timing = {"steps_per_second", "elapsed_seconds", "compile_seconds"}
  return [{k: v for k, v in r.items() if k not in timing} for r in records]


@pytest.mark.parametrize(
  "make_config", [tiny_config, tiny_pref_config, tiny_sac_config, tiny_sac_pref_config]
)
def test_same_config_and_seed_give_identical_metrics(tmp_path, make_config):
  first = train.train(make_config(), str(tmp_path / "a")).records
  second = train.train(make_config(), str(tmp_path / "b")).records
  other_seed = train.train(make_config(seed=1), str(tmp_path / "c")).records
  assert len(first) == 2
  assert _deterministic(first) == _deterministic(second)
  assert _deterministic(first) != _deterministic(other_seed)


def test_workdir_outputs(tmp_path):
  workdir = tmp_path / "run"
  records = train.train(tiny_config(), str(workdir)).records
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == records
  for record in records:
    assert {"env_steps", "true_return", "steps_per_second", "ppo_loss"} <= record.keys()
  assert [r["env_steps"] for r in records] == [240, 480]
  assert json.loads((workdir / "config.json").read_text())["ppo"]["num_envs"] == 8
  assert (workdir / "return.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
  assert os.listdir(workdir / "checkpoints") == ["2"]  # after the last chunk


def test_return_plot_draws_the_learned_return_and_a_baseline_run(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="holds no metrics.jsonl"):
    train.train(tiny_pref_config(), str(tmp_path / "pref"), baseline=str(tmp_path / "none"))
  assert not (tmp_path / "pref").exists()  # refused before anything was written
  baseline = train.train(tiny_config(), str(tmp_path / "true")).records
  drawn = {}

  def plot_lines(lines, path, title, ylabel, right=None):
    drawn.update(lines, **(right or {}))

  monkeypatch.setattr(metrics, "plot_lines", plot_lines)
  baseline_dir = str(tmp_path / "true")
  records = train.train(tiny_pref_config(), str(tmp_path / "pref"), baseline=baseline_dir).records
  steps = lambda rows, key: [r["env_steps"] for r in rows if r[key] is not None]  # noqa: E731
  assert [x for x, _ in drawn["true return of true-reward PPO"]] == steps(baseline, "true_return")
  assert [x for x, _ in drawn["true return"]] == steps(records, "true_return")
  assert [y for _, y in drawn["learned return (right axis)"]] == [
    r["learned_return"] for r in records if r["learned_return"] is not None
  ]


def test_iterations_count_and_chunk_metrics_are_finite():
  trainer = loop.make_trainer(tiny_config())
  state = trainer.init(jax.random.PRNGKey(0))
  state, metrics = trainer.chunk(state)
  assert int(state.iteration) == 3
  summary = loop.chunk_summary(metrics)
  assert all(v is None or math.isfinite(v) for v in summary.values()), summary  # no NaN/Inf


@pytest.mark.slow  # a learning goal, about 40 s; experiments/ show learning at full size
def test_ppo_learns_inverted_pendulum(tmp_path):
  """True-reward PPO on inverted_pendulum: from ~40 to a clear >300 within 1.2M steps."""
  config = config_lib.load(os.path.join(REPO, "configs/inverted_pendulum.py"))
  config.total_env_steps = 1_228_800
  records = train.train(config, str(tmp_path / "ip")).records
  returns = [r["true_return"] for r in records if r["true_return"] is not None]
  assert returns[0] < 100
  assert max(returns[-2:]) > 300, returns


def host_transfers(compiled) -> list[str]:
  """The instructions of a compiled program that move data between host and device: host
  callbacks (`jax.debug.callback`, `jax.pure_callback`, `jax.debug.print` compile to a
  custom call into Python), infeed/outfeed and send/recv. `jax.transfer_guard` does not
  see a callback compiled into the program; its HLO does."""
  callback = re.compile(r'custom_call_target="[^"]*(callback|host)[^"]*"', re.IGNORECASE)
  transfer = re.compile(r"= \S+ (infeed|outfeed|send|recv)(-done)?\(")
  return [
    line.strip()
    for line in compiled.as_text().splitlines()
    if callback.search(line) or transfer.search(line)
  ]


def test_host_transfers_are_found_in_a_compiled_program():
  """The detector itself: it finds each kind of callback, and nothing in a plain program."""
  x = jax.numpy.ones(3)
  compile = lambda f: jax.jit(f).lower(x).compile()  # noqa: E731
  assert host_transfers(compile(lambda v: v * 2)) == []

  def debug_callback(v):
    jax.debug.callback(print, v)
    return v

  def pure_callback(v):
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(v.shape, v.dtype), v)

  for f in (debug_callback, pure_callback):
    assert len(host_transfers(compile(f))) == 1, f.__name__


@pytest.mark.parametrize("make_config", [tiny_config, tiny_pref_config])
def test_no_host_transfer_inside_a_chunk(make_config):
  trainer = loop.make_trainer(make_config())
  state = trainer.init(jax.random.PRNGKey(0))
  chunk = trainer.chunk.lower(state).compile()
  assert host_transfers(chunk) == []
  with jax.transfer_guard("disallow"):
    state, metrics = chunk(state)
    jax.block_until_ready(metrics)
  assert int(state.iteration) == 3


def test_preference_metrics_and_label_budget(tmp_path):
  workdir = tmp_path / "pref"
  result = train.train(tiny_pref_config(), str(workdir))
  records = result.records
  keys = {"labels_used", "learned_return", "rm_val_accuracy", "rm_true_correlation"}
  keys |= {"rm_pair_accuracy", "rm_pair_ties"}
  keys |= {"label_ties", "label_length_ties"}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    assert keys <= json.loads(line).keys()
  assert records[-1]["labels_used"] == records[-1]["queries_asked"] == 20  # the whole budget
  assert 5 <= records[0]["labels_used"] < 20  # 5 initial labels, the rest on a schedule
  assert records[0]["env_steps"] == 80 + 240  # the initial labels' rollout (80) counts
  buffer = result.state.preferences.preferences
  assert disagreeing_labels(buffer, np.arange(20)) == 0  # the oracle's labels, in NumPy
  assert [r["teacher_noise"] for r in records] == [0.0, 0.0]


def disagreeing_labels(buffer, rows) -> int:
  """NumPy reference: how many of the stored labels `rows` differ from the sign of their
  pair's true-return difference (0.5 where the returns are equal)."""
  returns = lambda side: np.sum(  # noqa: E731
    np.asarray(side.true_reward, np.float64) * np.asarray(side.mask), axis=-1
  )[rows]
  difference = returns(buffer.first) - returns(buffer.second)
  oracle = np.where(difference > 0, 1.0, np.where(difference < 0, 0.0, 0.5))
  return int(np.sum(np.asarray(buffer.label)[rows] != oracle))


def test_teacher_noise_is_the_share_of_labels_against_the_true_returns(tmp_path):
  """`teacher_noise` of each chunk, against a NumPy count over the preference buffer: a
  mistake teacher with eps 0.2 reports about 0.2 (the oracle's 0 is checked above)."""
  noise = 0.2
  config = tiny_pref_config()
  config.env.name = "reacher"  # a continuous reward: few pairs of equal return
  config.teacher = "mistake"
  config.teacher_params.eps_mistake = noise
  config.queries.total_labels = config.queries.buffer_size = 400  # nothing overwritten
  result = train.train(config, str(tmp_path / "run"))
  buffer = result.state.preferences.preferences
  initial = result.trainer.preferences.num_initial_labels
  used = [initial] + [r["labels_used"] for r in result.records]
  assert used[-1] == int(buffer.size) == 400
  reported = sum(
    r["teacher_noise"] * (after - before)
    for r, before, after in zip(result.records, used[:-1], used[1:], strict=True)
  )
  # The chunks' labels follow the initial ones (asked in `init`, outside any chunk).
  assert round(reported) == disagreeing_labels(buffer, np.arange(initial, 400))
  share = disagreeing_labels(buffer, np.arange(400)) / 400
  assert abs(share - noise) < 0.06, share  # 3 standard deviations of Binomial(400, 0.2)


def test_true_reward_runs_the_same_config_without_the_preference_loop():
  config = tiny_pref_config()
  config.reward.source = "true"
  trainer = loop.make_trainer(config)
  state, metrics = trainer.chunk(trainer.init(jax.random.PRNGKey(0)))
  assert state.preferences is None and "labels_used" not in metrics
  assert float(metrics["reward_per_step"]) == float(metrics["true_reward_per_step"])


@pytest.mark.slow  # about 2 min on one core; the default run stays under CI's 15 minutes
def test_inverted_pendulum_learns_from_200_labels(tmp_path):
  """configs/inverted_pendulum_pref.py, seeds 0-2 vmapped: the learned reward alone lifts
  the true return from about 25 (random policy) past a clear 300 within 2M env steps. Some
  seeds stay near 100 (README, the paper's table: one in three), and which ones differs
  from machine to machine (XLA's CPU code generation): seed 0 alone reached 590 on one
  2-core machine and 111 on another (2026-12-07), so the test asks it of the best of three."""
  config = config_lib.load(os.path.join(REPO, "configs/inverted_pendulum_pref.py"))
  config.num_seeds = 3
  records = train.train(config, str(tmp_path / "ip_pref")).records
  per_seed = [
    [r["seeds"][i]["true_return"] for r in records if r["seeds"][i]["true_return"] is not None]
    for i in range(3)
  ]
  assert all(r["labels_used"] <= 200 for r in records[-1]["seeds"])
  assert all(returns[0] < 150 for returns in per_seed), per_seed
  assert max(max(returns[-2:]) for returns in per_seed) > 300, per_seed


@pytest.mark.parametrize(
  "make_config, names",
  [
    (tiny_config, ("true_return", "ppo_loss", "entropy")),
    pytest.param(
      tiny_pref_config,
      ("true_return", "ppo_loss", "rm_train_loss", "rm_true_correlation"),
      marks=pytest.mark.slow,
    ),
  ],
)
def test_num_seeds_runs_each_seed_as_it_runs_alone(tmp_path, make_config, names):
  config = make_config()
  config.num_seeds = 4
  together = train.train(config, str(tmp_path / "together"))
  assert len(together.records[0]["seeds"]) == 4
  returns = [s["true_return"] for s in together.records[-1]["seeds"]]
  assert together.records[-1]["true_return"] == pytest.approx(np.mean(returns))
  assert together.records[-1]["true_return_std"] == pytest.approx(np.std(returns))
  for seed in range(4):
    alone = train.train(make_config(seed), str(tmp_path / f"alone{seed}"))
    for row, row_alone in zip(together.records, alone.records, strict=True):
      mine = row["seeds"][seed]
      assert mine.get("labels_used") == row_alone.get("labels_used")
      for name in names:
        assert mine[name] == pytest.approx(row_alone[name], rel=1e-3, abs=1e-4), name
    for mine, theirs in zip(
      jax.tree.leaves(jax.tree.map(lambda x, s=seed: x[s], together.state.agent.params)),
      jax.tree.leaves(alone.state.agent.params),
      strict=True,
    ):
      np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-5)


def test_recent_episode_return_is_the_mean_of_the_episodes_that_ended():
  rng = np.random.default_rng(0)
  discount = (rng.random((3, 4, 8)) > 0.2).astype(np.float32)
  episode_return = rng.normal(50.0, 20.0, discount.shape).astype(np.float32)
  transitions = SimpleNamespace(discount=jnp.asarray(discount), episode_return=episode_return)
  ended = [r for r, d in zip(episode_return.ravel(), discount.ravel(), strict=True) if d == 0]
  got = float(preference.recent_episode_return(jnp.float32(-7.0), transitions))
  assert got == pytest.approx(sum(ended) / len(ended), rel=1e-5)
  none_ended = SimpleNamespace(discount=jnp.ones((3, 4, 8)), episode_return=episode_return)
  assert float(preference.recent_episode_return(jnp.float32(-7.0), none_ended)) == -7.0


@pytest.mark.parametrize(
  "env_name", [pytest.param("reacher", marks=pytest.mark.slow), "inverted_pendulum"]
)
def test_skip_teacher_keeps_queries_as_bpref_would(env_name):
  """reacher's returns are negative, so B-Pref's skip threshold is too and nothing is
  skipped. inverted_pendulum's segments return 1 per step, and its threshold (ε = 1) is
  the mean return of recent episodes times 10 / 1,000 steps, below any segment's return;
  a margin of the mean reward per step times the segment length (10) skipped the
  segments that an episode end cut short."""
  config = tiny_pref_config()
  config.env.name = env_name
  config.teacher = "skip"
  config.teacher_params.eps_skip = 1.0
  trainer = loop.make_trainer(config)
  state = trainer.init(jax.random.PRNGKey(0))
  for _ in range(config_lib.num_chunks(config)):
    state, _ = trainer.chunk(state)
  prefs = state.preferences
  assert int(prefs.queries_asked) == config.queries.total_labels
  assert int(prefs.labels_used) == int(prefs.queries_asked)
