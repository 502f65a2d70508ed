"""The experiment scripts' own logic (their learning results are in the README)."""

import csv
import importlib.util
import itertools
import json
import os
import types

import numpy as np
import pytest

from rlhf_jax import checkpoint
from rlhf_jax import config as config_lib
from tests.test_loop import REPO


def experiment(name):
  """experiments/<name>.py as a module (the folder is not a package)."""
  path = os.path.join(REPO, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def fake_run(calls):
  def run(config, seed, condition, log, workdir):
    calls.append((condition, seed))
    gain = config.queries.total_labels if config.reward.source == "learned" else 1000
    row = {
      "condition": condition,
      "seed": seed,
      "env_steps": 100,
      "labels_used": config.queries.total_labels if config.reward.source == "learned" else 0,
      "initial_return": -1000.0,
      "final_return": -1000.0 + gain,
      "rm_true_correlation": None,
      "steps_per_second": 1.0,
    }
    return [{"condition": condition, "seed": seed, "env_steps": 100, "return": -500.0}], row

  return run


def test_label_efficiency_resume_runs_only_what_the_csvs_lack(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out = str(tmp_path / "out")
  calls = []
  monkeypatch.setattr(module, "run", fake_run(calls))
  args = ["--envs=inverted_pendulum", "--seeds=0,1", "--labels=100,200", f"--out={out}"]
  args.append(f"--workdirs={tmp_path / 'work'}")
  module.main(args)
  expected = [(c, s) for s in (0, 1) for c in ("true reward", "100 labels", "200 labels")]
  assert calls == expected

  env_out = os.path.join(out, "inverted_pendulum")
  rows = module.read_csv(env_out, "final.csv")
  module.write_csv(os.path.join(env_out, "final.csv"), [r for r in rows if r["seed"] == 0])
  calls.clear()
  summaries = module.main(args + ["--resume"])["inverted_pendulum"]
  assert calls == [("true reward", 1), ("100 labels", 1), ("200 labels", 1)]
  ratios = {s["condition"]: s["ratio"] for s in summaries}
  assert ratios == pytest.approx({"true reward": 1.0, "100 labels": 0.1, "200 labels": 0.2})
  assert len(module.read_csv(env_out, "final.csv")) == 6
  assert len(module.read_csv(env_out, "curves.csv")) == 6


def test_label_efficiency_resume_refuses_rows_of_another_config(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out = str(tmp_path / "out")
  calls = []
  monkeypatch.setattr(module, "run", fake_run(calls))
  args = ["--envs=inverted_pendulum", "--seeds=0", "--labels=100", f"--out={out}"]
  args += [f"--workdirs={tmp_path / 'work'}", "--resume"]
  module.main(args)
  path = os.path.join(out, "inverted_pendulum", "configs.json")
  with open(path) as f:
    stored = json.load(f)
  assert sorted(stored) == ["100 labels, seed 0", "true reward, seed 0"]
  assert stored["100 labels, seed 0"]["queries.total_labels"] == 100
  assert stored["true reward, seed 0"]["reward.source"] == "true"

  # A changed preference key: the 100-label row is refused, by name and key.
  with pytest.raises(ValueError, match=r"100 labels, seed 0: reward.learning_rate=") as error:
    module.main(args + ["--set", "reward.learning_rate=0.5", "--seeds=0,1"])
  assert "true reward" not in str(error.value)  # --set leaves the true-reward config alone
  assert len(calls) == 2  # nothing ran

  # A key the stored config lacks or only it has (added or removed since), a checkpoint
  # setting, or a row from before configs.json: resumed as before.
  del stored["100 labels, seed 0"]["reward.learning_rate"]
  stored["true reward, seed 0"]["a.removed_key"] = 1
  stored["true reward, seed 0"]["checkpoint.keep"] = 99
  with open(path, "w") as f:
    json.dump(stored, f)
  module.main(args + ["--set", "reward.learning_rate=0.5", "--seeds=0,1"])
  assert calls[2:] == [("true reward", 1), ("100 labels", 1)]
  os.remove(path)
  module.main(args + ["--seeds=0,1,2"])
  assert calls[4:] == [("true reward", 2), ("100 labels", 2)]


def test_paper_table_has_a_row_and_a_panel_per_env_and_the_noisy_teachers(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out = str(tmp_path / "out")
  calls, teachers, workdirs = [], {}, []
  inner = fake_run(calls)

  def recording(config, seed, condition, log, workdir):
    teachers[condition] = (config.teacher, config.queries.total_labels, config.reward.source)
    workdirs.append(workdir)
    return inner(config, seed, condition, log, workdir)

  monkeypatch.setattr(module, "run", recording)
  envs = "inverted_pendulum,reacher"
  module.main(
    [
      f"--envs={envs}",
      "--seeds=0",
      "--labels=350,700",
      "--teachers=mistake",
      f"--out={out}",
      f"--workdirs={tmp_path / 'work'}",
    ]
  )
  # Each run checkpoints in a workdir of its own, where --resume would continue it.
  assert len(set(workdirs)) == len(workdirs) == 8
  assert workdirs[3] == str(tmp_path / "work" / "inverted_pendulum" / "700_labels_mistake_seed0")
  assert (
    calls
    == [(c, 0) for c in ("true reward", "350 labels", "700 labels", "700 labels, mistake")] * 2
  )
  assert teachers["700 labels, mistake"] == ("mistake", 700, "learned")
  assert teachers["350 labels"] == ("oracle", 350, "learned")
  assert teachers["true reward"][2] == "true"
  table = module.read_csv(out, "paper_table.csv")
  assert [row["env"] for row in table] == envs.split(",") + [
    "inverted_pendulum, mistake",
    "reacher, mistake",
  ]
  assert table[2]["return_700"] == -300.0 and table[2]["return_350"] is None
  # fake_run: the true-reward run gains 1000 over the initial return, n labels gain n.
  assert table[0]["true_return"] == 0.0
  assert table[0]["ratio_350"] == pytest.approx(0.35) and table[1]["ratio_700"] == 0.7
  assert os.path.getsize(os.path.join(out, "paper_figure.png")) > 0


def test_paper_table_covers_the_tasks_earlier_calls_ran_into_the_same_out(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out, calls = str(tmp_path / "out"), []
  monkeypatch.setattr(module, "run", fake_run(calls))
  common = ["--seeds=0", "--labels=700", f"--out={out}", f"--workdirs={tmp_path / 'work'}"]
  module.main(["--envs=reacher", *common])  # as one core's process would
  module.main(["--envs=inverted_pendulum", *common])  # and the other's, later
  assert calls == [("true reward", 0), ("700 labels", 0)] * 2
  # The second call's table has both tasks, in the paper's order, not only its own.
  table = module.read_csv(out, "paper_table.csv")
  assert [row["env"] for row in table] == ["inverted_pendulum", "reacher"]
  assert [row["ratio_700"] for row in table] == pytest.approx([0.7, 0.7])


def test_brax_published_settings_replace_ours_where_brax_has_them():
  module = experiment("compare_brax_ppo")
  load = lambda name: config_lib.load(os.path.join(REPO, "configs", f"{name}.py"))  # noqa: E731
  ours = load("halfcheetah")
  theirs = module.brax_config(ours, "published")
  # Brax's training notebook, halfcheetah: 2,048 envs, batch 512, 32 minibatches, unroll
  # 20, 8 epochs, discount 0.95, entropy 1e-3; its default networks.
  ppo = theirs.ppo
  assert (ppo.num_envs, ppo.batch_size, ppo.num_minibatches, ppo.unroll_length) == (
    2048,
    512,
    32,
    20,
  )
  assert (ppo.num_updates_per_batch, ppo.discounting, ppo.entropy_cost) == (8, 0.95, 1e-3)
  assert tuple(ppo.value_hidden_sizes) == (256,) * 5 and tuple(ppo.policy_hidden_sizes) == (32,) * 4
  assert theirs.env == ours.env and theirs.total_env_steps == ours.total_env_steps
  assert ours.ppo.num_envs == 256  # ours is left alone
  config_lib.validate(theirs)
  assert module.brax_config(load("reacher"), "published").env.action_repeat == 4
  hopper = load("hopper")  # Brax publishes SAC settings for hopper: Brax runs ours
  assert module.brax_config(hopper, "published") is hopper
  assert module.brax_config(ours, "ours") is ours


def test_label_efficiency_with_sac_runs_sac_and_pebble_configs_beside_ppos(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out = str(tmp_path / "out")
  calls, learners = [], {}
  inner = fake_run(calls)

  def recording(config, seed, condition, log, workdir):
    learners[(config.env.name, condition)] = (config.learner, config.reward.source)
    return inner(config, seed, condition, log, workdir)

  monkeypatch.setattr(module, "run", recording)
  common = ["--seeds=0", "--labels=700", f"--out={out}", f"--workdirs={tmp_path / 'work'}"]
  module.main(["--envs=all", "--learner=sac"] + common)
  assert learners[("hopper", "true reward")] == ("sac", "true")
  assert learners[("hopper", "700 labels")] == ("sac", "learned")
  assert "swimmer" not in {env for env, _ in learners}  # it has no SAC configs
  tasks = sorted(os.listdir(out))
  assert "hopper_sac" in tasks and "hopper" not in tasks  # only tasks with both configs
  assert all(t.endswith("_sac") for t in tasks if os.path.isdir(os.path.join(out, t)))
  assert module.read_csv(out, "paper_table_sac.csv")[0]["env"].endswith("_sac")
  assert not os.path.exists(os.path.join(out, "paper_table.csv"))  # PPO's is left alone
  with pytest.raises(ValueError, match="swimmer_sac"):
    module.main(["--envs=swimmer", "--learner=sac"] + common)


def test_env_steps_to_the_same_return_per_learner_by_hand(tmp_path):
  module = experiment("label_efficiency")

  def curves(points, condition="700 labels"):
    return [
      {"condition": condition, "seed": seed, "env_steps": step, "return": value + offset}
      for step, value in points
      for seed, offset in ((0, -1.0), (1, 1.0))  # mean: value
    ]

  ppo = curves([(100, 10), (200, 50), (300, 90), (400, 100)])
  sac = curves([(100, 60), (200, 95), (300, 95)])
  # Finals 100 and 95: target 0.9 x 95 = 85.5, which PPO's mean first reaches at 300
  # env steps and SAC's at 200: 1.5x fewer.
  (row,) = module.learner_rows(ppo + curves([(100, 1)], "true reward"), sac)
  assert row["condition"] == "700 labels" and row["target_return"] == pytest.approx(85.5)
  assert (row["ppo_env_steps"], row["other_env_steps"]) == (300, 200)
  assert row["fewer_steps"] == pytest.approx(1.5)


def test_compare_brax_sac_refuses_what_brax_cannot_run_and_times_training_chunks():
  module = experiment("compare_brax_sac")
  load = lambda name: config_lib.load(os.path.join(REPO, "configs", f"{name}.py"))  # noqa: E731
  module.check_comparable(load("hopper_sac"))
  with pytest.raises(ValueError, match="unsupervised_env_steps"):
    module.check_comparable(load("hopper_sac_pref"))
  config = load("hopper_sac")
  config.sac.target_entropy = -1.0
  with pytest.raises(ValueError, match="target_entropy"):
    module.check_comparable(config)
  # Chunks of 25,600 env steps; the buffer holds 8,192 (min_replay_size) 64 iterations
  # into the first chunk, so only chunks that began after that count: the second on.
  config = load("hopper_sac")
  assert config_lib.env_steps_per_chunk(config) == 25_600
  records = [
    {"env_steps": 25_600 * (i + 1), "steps_per_second": rate}
    for i, rate in enumerate([9000.0, 1500.0, 1400.0])
  ]
  assert module.training_rates(config, records) == [1500.0, 1400.0]


def test_compare_brax_sac_resume_keeps_the_csv_rows_it_has(tmp_path):
  module = experiment("compare_brax_sac")
  path = str(tmp_path / "rows.csv")
  written = [
    {
      "env": "hopper",
      "seed": 0,
      "brax_settings": "ours",
      "env_steps": 1024000,
      "ours_return": 2596.5,
    },
    {
      "env": "walker2d",
      "seed": 2,
      "brax_settings": "ours",
      "env_steps": 1024000,
      "ours_return": 1.5,
    },
  ]
  tables = experiment("label_efficiency")  # whose CSV reading and writing it uses
  tables.write_csv(path, written)
  assert tables.read_csv(*os.path.split(path)) == written  # numbers come back as numbers
  # hopper's seed 0 is in the CSV: nothing runs (one more seed would start a 1M-step run).
  rows_csv = module.side_by_side.RowsCsv(path, True, ("env", "seed"))
  rows = module.compare_env("hopper", [0], None, print, rows_csv)
  assert rows == [written[0]] and rows_csv.done == []


def test_compare_brax_ppo_resume_keys_rows_by_env_seed_and_brax_settings(tmp_path):
  module = experiment("compare_brax_ppo")
  tables = experiment("label_efficiency")
  path = str(tmp_path / "rows.csv")
  row = lambda env, seed, settings, ret: {  # noqa: E731
    "env": env,
    "seed": seed,
    "brax_settings": settings,
    "ours_return": ret,
  }
  tables.write_csv(path, [row("reacher", 0, "ours", -5.0), row("ant", 1, "published", 7.5)])
  rows_csv = module.RowsCsv(path, True, ("env", "seed", "brax_settings"))
  # reacher's seed 0 with Brax on our settings is there, so nothing trains.
  assert module.compare_env("reacher", [0], None, print, "ours", rows_csv) == [
    row("reacher", 0, "ours", -5.0)
  ]
  assert rows_csv.earlier(env="reacher", seed=0, brax_settings="published") is None
  assert rows_csv.earlier(env="ant", seed=1) == row("ant", 1, "published", 7.5)
  # A new row (here ant's seed 1 again, rerun) replaces its kept one; the others stay.
  rows_csv.add(row("ant", 1, "published", 9.0))
  rows_csv.add(row("ant", 2, "published", 3.0))
  assert tables.read_csv(*os.path.split(path)) == [
    row("ant", 1, "published", 9.0),
    row("ant", 2, "published", 3.0),
    row("reacher", 0, "ours", -5.0),
  ]
  # Without --resume the file starts over.
  fresh = module.RowsCsv(path, False, ("env", "seed", "brax_settings"))
  fresh.add(row("hopper", 0, "ours", 1.0))
  assert tables.read_csv(*os.path.split(path)) == [row("hopper", 0, "ours", 1.0)]


def test_label_efficiency_set_changes_only_the_preference_configs(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  seen = {}
  inner = fake_run([])

  def recording(config, seed, condition, log, workdir):
    seen[condition] = (config.sac.unsupervised_env_steps, config.reward.normalize_mean)
    return inner(config, seed, condition, log, workdir)

  monkeypatch.setattr(module, "run", recording)
  common = ["--envs=hopper", "--learner=sac", "--seeds=0", "--labels=700", f"--out={tmp_path}"]
  sets = ["--set=sac.unsupervised_env_steps=1000", "--set=reward.normalize_mean=True"]
  module.main(common + sets + [f"--workdirs={tmp_path / 'work'}"])
  # configs/hopper_sac_pref.py pre-trains for 50,000 steps and keeps the reward's mean
  # (normalize_mean False); configs/hopper_sac.py does not pre-train.
  assert seen == {"true reward": (0, True), "700 labels": (1000, True)}
  # --set_all reaches the true-reward config too; --set, after it, wins for the preference.
  sets = ["--set_all=sac.unsupervised_env_steps=7", "--set=sac.unsupervised_env_steps=9"]
  module.main(common + sets + [f"--workdirs={tmp_path / 'work2'}", f"--out={tmp_path / 'b'}"])
  assert seen == {"true reward": (7, True), "700 labels": (9, False)}
  for bad in ("sac.no_such_key=1", "sac.unsupervised_env_steps", "nothing.here=1"):
    with pytest.raises(ValueError, match="KEY=VALUE"):
      module.main(common + [f"--set={bad}", f"--workdirs={tmp_path / 'work'}"])


def test_benchmark_sweep_scales_the_batch_and_sets_the_update_interval():
  module = experiment("benchmark")
  base, pref = module.configs("hopper", 3, 32, update_every=40_960)
  hopper = config_lib.load(os.path.join(REPO, "configs", "hopper.py"))
  assert base.ppo.num_envs == pref.ppo.num_envs == 32
  # The same unrolls per iteration: batch_size scales with num_envs.
  assert base.ppo.batch_size == hopper.ppo.batch_size * 32 // hopper.ppo.num_envs
  # ... and a chunk the same env steps: hopper's 20 iterations of 64 envs x 4 unrolls of 64
  # steps (327,680) are 40 iterations of 32 envs x 4 x 64, or 1 iteration of 1,280 envs.
  assert base.iterations_per_chunk == pref.iterations_per_chunk == 40
  assert config_lib.env_steps_per_chunk(base) == 20 * 64 * 4 * 64
  wide, _ = module.configs("hopper", 3, 1280)
  assert wide.iterations_per_chunk == 1 and wide.ppo.batch_size == 1280
  assert pref.reward.update_every_env_steps == 40_960
  assert base.reward.source == "true" and pref.reward.source == "learned"
  assert module.configs("hopper", 3, 32)[1].reward.update_every_env_steps == 0  # hopper_pref's
  # Labels at the full run's rate: breakout_pref asks 5,500 over 20M env steps; 4 chunks of
  # one iteration of 4,096 envs x 128 steps are 2,097,152 env steps, so 5,500 x 0.1048576
  # = 576.7 -> 577.
  _, pref = module.configs("minatar_breakout", 4, None, keep_label_rate=True)
  assert pref.total_env_steps == 2_097_152 and pref.queries.total_labels == 577
  assert module.configs("minatar_breakout", 4, None)[1].queries.total_labels == 5500


def test_benchmark_runs_no_brax_on_minatar_and_gives_the_loops_ratio_to_ppo(monkeypatch):
  module = experiment("benchmark")

  def brax(config):
    raise AssertionError(f"Brax's PPO was asked to run {config.env.name}")

  def ours(config):
    rate = 2_000.0 if config.reward.source == "learned" else 8_000.0
    return {"steps_per_second": rate, "startup_seconds": 1.5, "env_steps": 1}

  monkeypatch.setattr(module, "measure_brax", brax)
  monkeypatch.setattr(module, "measure_ours", ours)
  row = module.measure("minatar_breakout", 3, None, lambda text: None)
  assert "brax" not in row and row["ratio_pref_over_brax"] is None
  assert row["ratio_pref_over_ppo"] == pytest.approx(0.25)  # 2,000 / 8,000
  line = module.format_rows([row]).splitlines()[-1].split()
  assert line[3:9] == ["-", "8,000", "2,000", "-", "-", "0.25"] and line[9] == "-/1.5/1.5"


def test_lm_gold_vs_kl_averages_each_evaluation_over_the_seeds_that_have_it(tmp_path):
  module = experiment("lm_gold_vs_kl")
  rows = {
    "s0": [("sft", 0, 0.0, -0.4), ("ppo", 25, 6.0, 0.1), ("best_of_2", 0, 0.19, -0.3)],
    "s1": [("sft", 0, 0.0, -0.6), ("ppo", 25, 4.0, 0.3), ("online", 10, 3.0, 0.0)],
  }
  workdirs = []
  for name, evaluations in rows.items():
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / "results.jsonl", "w") as file:
      for method, step, kl, gold in evaluations:
        file.write(json.dumps({"method": method, "step": step, "kl": kl, "gold": gold}) + "\n")
    workdirs.append(str(tmp_path / name))
  points = module.collect(workdirs)
  module.write_csv(points, str(tmp_path / "out.csv"))
  module.plot(points, str(tmp_path / "out.png"), "t")
  with open(tmp_path / "out.csv") as file:
    table = {(r["method"], r["step"]): r for r in csv.DictReader(file)}
  # By hand: sft gold (-0.4 - 0.6) / 2 = -0.5, spread 0.1; ppo KL (6 + 4) / 2 = 5.
  assert float(table["sft", "0"]["gold"]) == pytest.approx(-0.5)
  assert float(table["sft", "0"]["gold_std"]) == pytest.approx(0.1)
  assert float(table["ppo", "25"]["kl"]) == pytest.approx(5.0)
  assert table["online", "10"]["seeds"] == "1" and table["best_of_2", "0"]["seeds"] == "1"
  assert os.path.getsize(tmp_path / "out.png") > 0


def test_best_of_n_expectation_equals_the_mean_over_every_n_subset():
  """Against brute force: every n-subset of the S samples of each prompt, equally likely,
  its highest-scoring sample's value."""
  overoptimization = experiment("overoptimization")
  rng = np.random.default_rng(0)
  scores, values = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
  for n in range(1, 8):
    expected = np.mean(
      [
        np.mean(
          [
            values[max(subset, key=lambda i: scores[i, p]), p]
            for subset in itertools.combinations(range(7), n)
          ]
        )
        for p in range(3)
      ]
    )
    assert overoptimization.best_of_n_expectation(scores, values, n) == pytest.approx(expected)
  # n = 1 is the plain mean; n = S the best sample's value.
  assert overoptimization.best_of_n_expectation(scores, values, 1) == pytest.approx(values.mean())
  best = values[np.argmax(scores, axis=0), np.arange(3)].mean()
  assert overoptimization.best_of_n_expectation(scores, values, 7) == pytest.approx(best)
  with pytest.raises(ValueError, match="1 <= n <= 7"):
    overoptimization.best_of_n_expectation(scores, values, 8)


def test_gold_fits_recover_the_forms_parameters():
  """Points made from Gao et al.'s two forms with known alpha and beta (gold(0) = 0)."""
  overoptimization = experiment("overoptimization")
  d = np.array([0.0, 0.4, 0.9, 1.5, 2.2, 3.0])
  bon = d * (0.8 - 0.25 * d)
  rl = d * (0.5 - 0.3 * np.log(np.where(d > 0, d, 1.0)))
  assert overoptimization.fit_gold("best_of_n", d, bon) == pytest.approx((0.8, 0.25))
  assert overoptimization.fit_gold("rl", d, rl) == pytest.approx((0.5, 0.3))
  # By hand: one point d = 1 fixes RL's alpha (log 1 = 0): gold 0.7 -> alpha 0.7.
  alpha, _ = overoptimization.fit_gold("rl", [1.0, 2.0], [0.7, 2 * (0.7 - 0.1 * np.log(2))])
  assert alpha == pytest.approx(0.7)


@pytest.mark.slow  # about 3 minutes on 2 loaded cores: 4 tiny proxies, 2 with PPO
def test_overoptimization_runs_every_proxy_and_resumes_without_redoing_them(tmp_path, monkeypatch):
  from tests.test_lm_pipeline import tiny_config  # noqa: PLC0415

  overoptimization = experiment("overoptimization")
  monkeypatch.setattr(overoptimization, "pipeline_config", tiny_config)
  out = str(tmp_path / "out")
  argv = [f"--out={out}", "--layers=1,2", "--counts=12,24", "--prompts=4", "--samples=8"]
  argv += ["--ppo_steps=2", "--eval_every=1", "--rl=1:24,2:24"]
  overoptimization.main(argv)
  with open(os.path.join(out, "overoptimization.csv")) as file:
    rows = list(csv.DictReader(file))
  for layers in (1, 2):
    for count in (12, 24):
      bon = [
        r
        for r in rows
        if (r["method"], r["layers"], r["count"]) == ("best_of_n", str(layers), str(count))
      ]
      assert [int(r["n_or_step"]) for r in bon] == [1, 2, 4, 8]
      assert float(bon[0]["gold"]) == pytest.approx(0.0, abs=1e-12)
      assert float(bon[3]["kl"]) == pytest.approx(np.log(8) - 7 / 8)
      rl = [
        r for r in rows if (r["method"], r["layers"], r["count"]) == ("rl", str(layers), str(count))
      ]
      assert [int(r["n_or_step"]) for r in rl] == ([0, 1, 2] if count == 24 else [])
  # The 1-block proxy's trunk is the SFT model's first block.
  options = types.SimpleNamespace(
    seed=0, out=out, beta=0.01, ppo_steps=2, eval_every=1, rm_epochs=3.6
  )
  config = overoptimization.proxy_config(options, os.path.join(out, "base"), 1, 12)
  run = overoptimization.loaded_run(config, os.path.join(out, "proxy_L1_C12"))
  assert set(run.rm_params["transformer"]) == {"wte", "wpe", "h_0", "ln_f"}
  with open(os.path.join(out, "fits.csv")) as file:
    fits = list(csv.DictReader(file))
  assert {(f["method"], f["layers"], f["count"]) for f in fits} >= {
    ("rl", "1", "24"),
    ("best_of_n", "2", "12"),
  }
  assert os.path.exists(os.path.join(out, "overoptimization.png"))
  stamps = {
    path: os.path.getmtime(path)
    for path in (
      os.path.join(out, "proxy_L2_C24", "rm", "params.msgpack"),
      os.path.join(out, "proxy_L2_C24", "best_of_n_scores.npy"),
      os.path.join(out, "sft_samples.npz"),
    )
  }
  overoptimization.main(argv)  # everything is there: nothing is redone
  assert {path: os.path.getmtime(path) for path in stamps} == stamps


def test_pair_accuracy_by_hand():
  """Prompt 0: golds 1, 2, 3 and scores 1, 3, 2 order 2 of the 3 pairs alike; prompt 1:
  golds 5, 5, 1 (the tied pair left out), scores 0, 9, 1 order 1 of the 2 others alike."""
  overoptimization = experiment("overoptimization")
  gold = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 1.0]])
  scores = np.array([[1.0, 0.0], [3.0, 9.0], [2.0, 1.0]])
  assert overoptimization.pair_accuracy(scores, gold) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_lm_gold_vs_kl_picks_each_seeds_dpo_step_by_its_held_out_loss(tmp_path):
  """Seed s0's held-out DPO loss is lowest at step 50, s1's at 100: dpo_held_out averages
  s0's gold at 50 (0.2) and s1's at 100 (-0.2) to 0.0, without looking at gold."""
  module = experiment("lm_gold_vs_kl")
  runs = {
    "s0": ({50: 0.6, 100: 0.7}, {50: 0.2, 100: 0.5}),
    "s1": ({50: 0.6, 100: 0.5}, {50: 0.4, 100: -0.2}),
  }
  for name, (losses, golds) in runs.items():
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / "results.jsonl", "w") as file:
      for step, gold in golds.items():
        file.write(json.dumps({"method": "dpo", "step": step, "kl": 1.0, "gold": gold}) + "\n")
    with open(tmp_path / name / "metrics.jsonl", "w") as file:
      file.write(json.dumps({"stage": "rm", "step": 50, "held_out_rm_loss": 0.1}) + "\n")
      for step, loss in losses.items():
        file.write(json.dumps({"stage": "dpo", "step": step, "held_out_dpo_loss": loss}) + "\n")
  points = module.collect([str(tmp_path / "s0"), str(tmp_path / "s1")])
  picked = points["dpo_held_out", 0]
  assert [row["chosen_step"] for row in picked] == [50, 100]
  assert module.mean_std([row["gold"] for row in picked])[0] == pytest.approx(0.0)
  # A run without held-out losses (older ones) has no pick.
  os.remove(tmp_path / "s1" / "metrics.jsonl")
  assert len(module.collect([str(tmp_path / "s0"), str(tmp_path / "s1")])["dpo_held_out", 0]) == 1


def test_label_efficiency_table_widens_for_long_condition_names():
  module = experiment("label_efficiency")
  summary = {"seeds": 2, "labels": 700, "return": 2101.5, "std": 648.9, "ratio": 0.63}
  summaries = [
    dict(summary, condition="true reward", steps_per_second=9936.0),
    dict(summary, condition="700 labels, stochastic", steps_per_second=14060.0),
  ]
  lines = module.format_table("hopper", summaries, 13.3).splitlines()
  header, rule, rows = lines[1], lines[2], lines[3:]
  assert len(rule) == len(header) and all(len(row) == len(header) for row in rows)
  # "700 labels, stochastic" is 22 characters: its column is 24 wide, then " seeds" (6).
  assert header.index("seeds") == 24 + 1 and rows[1].startswith("700 labels, stochastic  ")


def test_label_efficiency_run_writes_trains_progress_to_the_workdir_as_it_goes(
  tmp_path, monkeypatch
):
  module = experiment("label_efficiency")
  workdir = str(tmp_path / "work" / "hopper" / "700_labels_seed1")
  progress = os.path.join(workdir, "train.log")
  seen_while_training = []

  def fake_train(config, workdir_arg, stream):
    assert workdir_arg == workdir and config.seed == 1
    stream.write("chunk 1 of 2\n")
    with open(progress) as f:  # already on disk mid-run: the stream is line-buffered
      seen_while_training.append(f.read())
    stream.write("chunk 2 of 2\n")
    records = [
      {"env_steps": 10, "true_return": 1.0, "steps_per_second": 4.0},
      {"env_steps": 20, "true_return": 3.0, "steps_per_second": 2.0},
    ]
    trainer = types.SimpleNamespace(learner="ppo", init=lambda key: types.SimpleNamespace(agent=0))
    return types.SimpleNamespace(
      records=records, state=types.SimpleNamespace(agent=1), trainer=trainer
    )

  monkeypatch.setattr(module.train, "train", fake_train)
  monkeypatch.setattr(
    module.evaluation, "evaluate_agent", lambda config, learner, agent, key: 100.0 * agent
  )
  logged = []
  config = config_lib.load(os.path.join(REPO, "configs", "hopper.py"))
  curve, row = module.run(config, 1, "true reward", logged.append, workdir)
  assert seen_while_training == ["chunk 1 of 2\n"]
  with open(progress) as f:
    assert f.read() == "chunk 1 of 2\nchunk 2 of 2\n"
  assert any(progress in line for line in logged)
  assert (row["initial_return"], row["final_return"], row["steps_per_second"]) == (0.0, 100.0, 3.0)
  assert [c["return"] for c in curve] == [1.0, 3.0]


def test_compare_brax_ppo_summarize_prints_the_csvs_table_without_running(tmp_path, capsys):
  module = experiment("compare_brax_ppo")
  tables = experiment("label_efficiency")
  path = str(tmp_path / "rows.csv")
  row = lambda env, seed, initial, ours, brax, sps: {  # noqa: E731
    "env": env,
    "seed": seed,
    "brax_settings": "ours",
    "env_steps": 1000,
    "initial_return": initial,
    "ours_return": ours,
    "brax_return": brax,
    "ours_steps_per_second": sps,
    "brax_steps_per_second": sps / 2,
  }
  rows = [row("ant", 0, -10.0, 100.0, 50.0, 10.0), row("reacher", 0, -50.0, -5.0, -10.0, 4.0)]
  tables.write_csv(path, rows + [row("ant", 1, -20.0, 200.0, 150.0, 20.0)])
  summaries = module.main(["--summarize", f"--csv={path}"])
  # the paper's order (reacher before ant); ant over its two seeds, by hand:
  # initial -15, ours 150, Brax 100, ratio (150 + 15) / (100 + 15), sps 15 against 7.5
  assert [(s["env"], s["seeds"]) for s in summaries] == [("reacher", 1), ("ant", 2)]
  ant = summaries[1]
  assert (ant["initial_return"], ant["ours_return"], ant["brax_return"]) == (-15, 150, 100)
  assert ant["return_ratio"] == pytest.approx(165 / 115) and ant["speed_ratio"] == 2.0
  assert summaries[0]["return_ratio"] == pytest.approx(45 / 40)
  printed = capsys.readouterr().out.splitlines()
  assert printed[2].startswith("reacher") and printed[3].startswith("ant")
  assert [s["env"] for s in module.main(["--summarize", "--envs=ant", f"--csv={path}"])] == ["ant"]
  with pytest.raises(SystemExit):
    module.main(["--summarize", f"--csv={tmp_path / 'none.csv'}"])


def test_compare_brax_ppo_refuses_transition_minibatches(monkeypatch):
  module = experiment("compare_brax_ppo")
  config = config_lib.default_config()
  config.ppo.minibatches = "transitions"
  monkeypatch.setattr(module.config_lib, "load", lambda path: config)
  with pytest.raises(ValueError, match="only whole-sequence minibatches"):
    module.compare_env("inverted_pendulum", [0], None, print)


def test_compare_brax_progress_keeps_rates_and_logs_a_line_per_epoch():
  module = experiment("compare_brax_ppo")
  sps, lines = [], []
  module.brax_progress(sps, 2_000_000, lines.append, 0, {"eval/episode_reward": 1.0})
  module.brax_progress(sps, 2_000_000, lines.append, 409_600, {"training/sps": 12_345.6})
  assert sps == [12_345.6]
  assert lines == ["  brax:      409,600 of 2,000,000 env steps |    12,346 steps/s"]


def test_label_efficiency_sets_aside_a_run_cut_off_before_its_first_checkpoint(tmp_path):
  module = experiment("label_efficiency")
  cut_off, resumable, fresh = (str(tmp_path / name) for name in ("a", "b", "c"))
  for workdir in (cut_off, resumable):
    os.makedirs(workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write('{"env_steps": 8}\n')
  saver = checkpoint.Checkpointer(resumable, keep=1)
  saver.save(0, {"x": np.zeros(3, np.float32)}, {"config": {}})
  saver.wait()
  saver.close()
  os.makedirs(f"{cut_off}.interrupted0")  # an earlier one: the next number is taken
  lines = []
  for workdir in (cut_off, resumable, fresh):
    module.set_aside_if_unresumable(workdir, lines.append)
  assert not os.path.exists(cut_off)
  with open(os.path.join(f"{cut_off}.interrupted1", "metrics.jsonl")) as f:
    assert f.read() == '{"env_steps": 8}\n'
  assert os.path.exists(os.path.join(resumable, "metrics.jsonl"))  # it can continue
  assert not os.path.exists(fresh)
  assert len(lines) == 1 and ".interrupted1" in lines[0]


def test_two_processes_fill_one_task_without_losing_each_others_runs(tmp_path, monkeypatch):
  module = experiment("label_efficiency")
  out, calls = str(tmp_path / "out"), []
  inner = fake_run(calls)
  common = ["--envs=inverted_pendulum", "--seeds=0", f"--out={out}", "--resume"]
  common.append(f"--workdirs={tmp_path / 'work'}")

  def with_the_other_process(config, seed, condition, log, workdir):
    # While this process trains its 700-label run, the other one (true reward only)
    # finishes and writes its row into the same --out.
    if condition == "700 labels":
      module.main(common + ["--labels="])
    return inner(config, seed, condition, log, workdir)

  # Alone, a --no-true_reward process keeps its row and writes no ratios (none to take).
  monkeypatch.setattr(module, "run", inner)
  alone = [f"--out={tmp_path / 'alone'}"] + [a for a in common if not a.startswith("--out")]
  assert module.main(alone + ["--labels=350", "--no-true_reward"]) == {}
  kept = module.read_csv(str(tmp_path / "alone" / "inverted_pendulum"), "final.csv")
  assert [r["condition"] for r in kept] == ["350 labels"]
  assert not os.path.exists(tmp_path / "alone" / "paper_table.csv")
  calls.clear()

  monkeypatch.setattr(module, "run", with_the_other_process)
  module.main(common + ["--labels=700", "--no-true_reward"])
  assert calls == [("true reward", 0), ("700 labels", 0)]  # each ran once, where meant
  env_out = os.path.join(out, "inverted_pendulum")
  rows = module.read_csv(env_out, "final.csv")
  assert sorted(r["condition"] for r in rows) == ["700 labels", "true reward"]
  curves = module.read_csv(env_out, "curves.csv")
  assert sorted(c["condition"] for c in curves) == ["700 labels", "true reward"]
  with open(os.path.join(env_out, "configs.json")) as f:
    assert sorted(json.load(f)) == ["700 labels, seed 0", "true reward, seed 0"]
  assert not [name for name in os.listdir(env_out) if name.endswith(".tmp")]
  # The last to finish reports the whole task: 700 labels gain 700 of true reward's 1000.
  table = module.read_csv(out, "paper_table.csv")
  assert table[0]["ratio_700"] == pytest.approx(0.7)


def test_label_efficiency_keeps_each_runs_metrics_when_it_removes_the_workdir(
  tmp_path, monkeypatch
):
  module = experiment("label_efficiency")
  calls = []
  fake = fake_run(calls)

  def run(config, seed, condition, log, workdir):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"env_steps": 100, "condition": condition, "seed": seed}) + "\n")
    return fake(config, seed, condition, log, workdir)

  monkeypatch.setattr(module, "run", run)
  out, work = tmp_path / "out", tmp_path / "work"
  module.main(["--envs=hopper", "--seeds=1", "--labels=700", f"--out={out}", f"--workdirs={work}"])
  for condition, name in (("true reward", "true_reward_seed1"), ("700 labels", "700_labels_seed1")):
    with open(out / "hopper" / "metrics" / f"{name}.jsonl") as f:
      assert json.loads(f.read()) == {"env_steps": 100, "condition": condition, "seed": 1}
    assert not (work / "hopper" / name).exists()  # the workdir itself is gone
