"""The LM pipeline: teachers' labels of gold rewards by hand, the text-to-array layouts
against hand-made rows, the evaluator's KL against a per-row NumPy loop, a tiny end-to-end
run of every stage, exact resume of PPO, and its config checks."""

import json
import os
import threading
import time

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from rlhf_jax.labeling.store import STORE_NAME, Store
from rlhf_jax.lm import config as config_lib
from rlhf_jax.lm import data, pipeline
from rlhf_jax.lm.evaluate import Evaluator
from rlhf_jax.lm.tokenizer import ByteTokenizer
from tests.references import tensorboard_scalars
from tests.test_lm_model import MODEL, PARAMS

TOKENIZER = ByteTokenizer()


def comparisons_config(teacher="oracle", **params) -> ConfigDict:
  config = config_lib.pipeline_config().comparisons
  config.teacher = teacher
  config.teacher_params.update(params)
  return config


def test_oracle_labels_follow_gold_and_equal_golds_tie():
  first = np.array([0.5, -0.2, 0.3, 0.0])
  second = np.array([0.1, 0.4, 0.3, -1.0])
  labels, valid = pipeline.label_pairs(comparisons_config(), jax.random.key(0), first, second)
  np.testing.assert_array_equal(labels, [1.0, 0.0, 0.5, 1.0])
  assert valid.all()


def test_mistake_teacher_with_certain_mistakes_flips_every_strict_label():
  first, second = np.array([0.5, -0.2]), np.array([0.1, 0.4])
  config = comparisons_config("mistake", eps_mistake=1.0)
  labels, _ = pipeline.label_pairs(config, jax.random.key(0), first, second)
  np.testing.assert_array_equal(labels, [0.0, 1.0])


def test_equal_teacher_ties_pairs_closer_than_eps_times_the_std():
  # margin = std of [0, 0.05, 1, 0] = 0.4330; eps_equal 0.2 -> ties below 0.0866.
  first, second = np.array([0.0, 1.0]), np.array([0.05, 0.0])
  config = comparisons_config("equal", eps_equal=0.2)
  labels, _ = pipeline.label_pairs(config, jax.random.key(0), first, second)
  np.testing.assert_array_equal(labels, [0.5, 1.0])


def test_prompt_and_completion_arrays_by_hand():
  tokens, mask = data.prompt_arrays(TOKENIZER, ["ab", "c"], 4)
  bos, pad, eos = TOKENIZER.bos_id, TOKENIZER.pad_id, TOKENIZER.eos_id
  np.testing.assert_array_equal(tokens, [[pad, bos, 97, 98], [pad, pad, bos, 99]])
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 1, 1]])
  tokens, mask = data.completion_arrays(TOKENIZER, ["xy", "uvwz"], 4)
  np.testing.assert_array_equal(tokens, [[120, 121, eos, pad], [117, 118, 119, 122]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 1]])
  assert data.decode_completions(TOKENIZER, tokens, mask) == ["xy", "uvwz"]


def test_read_comparisons_reads_ties_and_rejects_a_non_boolean_tie(tmp_path):
  path = str(tmp_path / "c.jsonl")
  data.write_jsonl(path, [{"prompt": "p", "chosen": "a", "rejected": "b", "tie": True}])
  assert data.read_comparisons(path) == [data.Comparison("p", "a", "b", tie=True)]
  data.write_jsonl(path, [{"prompt": "p", "chosen": "a", "rejected": "b", "tie": "yes"}])
  with pytest.raises(ValueError, match="c.jsonl:1: field 'tie'"):
    data.read_comparisons(path)


def numpy_log_prob(params, ids: list[int], start: int) -> float:
  """Σ log p(ids[t] | ids[:t]) for t >= start, from the model's logits of the unpadded row."""
  tokens = np.array([ids], np.int32)
  logits = np.asarray(MODEL.apply(params, tokens, np.ones_like(tokens, bool))[0], np.float64)
  total = 0.0
  for t in range(start, len(ids)):
    row = logits[t - 1]
    total += row[ids[t]] - row.max() - np.log(np.sum(np.exp(row - row.max())))
  return total


def test_evaluator_kl_is_the_mean_log_ratio_of_its_samples():
  vocab = MODEL.config.vocab_size
  other = jax.tree.map(lambda x: x * 1.3, PARAMS)  # a different policy
  chars = {i: chr(i) for i in range(32, 96)}  # byte ids the tiny model's vocabulary holds

  class SmallBytes(ByteTokenizer):  # special ids inside the tiny model's vocabulary
    pad_id, bos_id, eos_id = vocab - 3, vocab - 2, vocab - 1

    def decode(self, ids):
      return "".join(chars.get(int(i), "?") for i in ids)

  tokenizer = SmallBytes()
  prompts = ["AB", "CDE", "F"]
  evaluator = Evaluator(
    MODEL, tokenizer, prompts, PARAMS, max_new_tokens=6, temperature=1.0, key=jax.random.key(3)
  )
  evaluation = evaluator(other)
  completion = evaluator._sample(
    other, evaluator.key, evaluator.prompt_tokens, evaluator.prompt_mask
  )
  expected = []
  for row, prompt in enumerate(prompts):
    real = np.asarray(completion.tokens[row])[np.asarray(completion.mask[row])]
    ids = [*data.encode_prompt(tokenizer, prompt), *map(int, real)]
    start = len(ids) - len(real)
    expected.append(numpy_log_prob(other, ids, start) - numpy_log_prob(PARAMS, ids, start))
  np.testing.assert_allclose(evaluation.metrics["kl"], np.mean(expected), rtol=1e-4, atol=1e-5)
  assert evaluation.metrics["completion_length"] == np.mean(np.sum(completion.mask, -1))
  assert "gold" not in evaluation.metrics and "proxy" not in evaluation.metrics


def tiny_config(**stage_steps) -> ConfigDict:
  config = config_lib.pipeline_config()
  config.model.size = "tiny"
  config.model.n_positions = 96
  config.data.num_sft_examples = 64
  config.data.sequence_length = 96
  config.train.update(steps=4, warmup_steps=1, batch_size=4)
  config.log_every = 2
  config.sample.update(num_prompts=2, max_new_tokens=8, num_printed=0)
  config.completion.max_new_tokens = 8
  config.comparisons.update(num_pairs=24, batch_size=8)
  config.rm.update(steps=3, batch_size=4, normalize_samples=8)
  config.ppo.update(steps=2, eval_every=1, batch_size=4, num_minibatches=2, ppo_epochs=1)
  config.ppo.learning_rate = 1e-3
  config.dpo.update(steps=2, eval_every=1, batch_size=4)
  config.online.update(label_every=1, candidates=4, labels_per_round=2, rm_steps=1)
  config.best_of_n.ns = (1, 2)
  config.eval.update(num_prompts=4, num_printed=0)
  for key, value in stage_steps.items():
    config[key].steps = value
  return config


# The two runs below take ~1 min each on a quiet 2-core CPU, and far longer on a loaded
# one: they run with the slow tests.
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pipeline"))
  config = tiny_config()
  config.stages = ",".join(config_lib.STAGES)  # every stage, online too
  rows = pipeline.run_pipeline(config, workdir, stream=open(os.devnull, "w"))
  return workdir, rows


@pytest.mark.slow
def test_every_stage_writes_its_output_and_results(finished_run):
  workdir, rows = finished_run
  for path in ("sft/model/model.safetensors", "comparisons.jsonl", "rm/params.msgpack"):
    assert os.path.exists(os.path.join(workdir, path)), path
  methods = [(row["method"], row["step"]) for row in rows]
  assert methods == [
    ("sft", 0),
    ("ppo", 1),
    ("ppo", 2),
    ("online", 1),
    ("online", 2),
    ("best_of_1", 0),
    ("best_of_2", 0),
    ("dpo", 1),
    ("dpo", 2),
  ]
  sft = rows[0]
  assert sft["kl"] == 0.0 and -1 <= sft["gold"] <= 1 and "proxy" in sft
  assert rows[5]["kl"] == 0.0 and rows[6]["kl"] == pytest.approx(np.log(2) - 0.5)
  comparisons = data.read_comparisons(os.path.join(workdir, "comparisons.jsonl"))
  assert len(comparisons) == 24
  with open(os.path.join(workdir, "metrics.jsonl")) as file:
    metrics = [json.loads(line) for line in file]
  assert {row["stage"] for row in metrics} == {"comparisons", "rm", "ppo", "online", "dpo"}
  # Online: 22 offline train pairs (24 less 2 held out), then 2 more before each step.
  assert [row["labels"] for row in metrics if row["stage"] == "online"] == [24, 26]
  dpo_rows = [row for row in metrics if row["stage"] == "dpo"]
  assert [row["step"] for row in dpo_rows] == [1, 2]
  assert all(0 <= row["held_out_dpo_accuracy"] <= 1 for row in dpo_rows)
  assert all(np.isfinite(row["held_out_dpo_loss"]) for row in dpo_rows)
  logged = tensorboard_scalars(os.path.join(workdir, "tensorboard"))
  ppo = [row["gold"] for row in rows if row["method"] == "ppo"]
  assert [step for step, _ in logged["ppo/gold"]] == [1, 2]
  np.testing.assert_allclose([value for _, value in logged["ppo/gold"]], ppo, rtol=1e-6)
  assert [step for step, _ in logged["best_of_n/kl"]] == [1, 2]
  assert logged["best_of_n/kl"][1][1] == pytest.approx(np.log(2) - 0.5)
  rm_rows = [row for row in metrics if row["stage"] == "rm"]
  assert [step for step, _ in logged["rm/held_out_rm_accuracy"]] == [r["step"] for r in rm_rows]


@pytest.mark.slow
def test_ppo_resumes_exactly_from_its_checkpoint(finished_run, tmp_path):
  workdir, rows = finished_run
  straight = [row for row in rows if row["method"] == "ppo" and row["step"] == 2][0]
  resumed_dir = str(tmp_path / "resumed")
  quiet = open(os.devnull, "w")
  # The same SFT model and comparisons, then PPO stopped after one step and resumed.
  config = tiny_config(ppo=1)
  config.stages = "sft,comparisons,rm,ppo"
  pipeline.run_pipeline(config, resumed_dir, stream=quiet)
  config.ppo.steps = 2
  resumed = pipeline.run_pipeline(config, resumed_dir, stream=quiet)
  row = [row for row in resumed if row["method"] == "ppo" and row["step"] == 2][0]
  for key in ("kl", "gold", "proxy", "completion_length"):
    assert row[key] == straight[key], key


def test_a_rerun_refuses_a_changed_config_but_may_extend(tmp_path):
  class Stub:  # what _check_config reads of a Run
    def __init__(self, config):
      self.config, self.workdir = config, str(tmp_path)

    def path(self, name):
      return os.path.join(self.workdir, name)

  pipeline._check_config(Stub(tiny_config()))  # the first run saves config.json
  pipeline._check_config(Stub(tiny_config(ppo=50, dpo=9)))  # longer ppo and dpo: allowed
  changed = tiny_config()
  changed.rm.learning_rate = 0.5
  with pytest.raises(ValueError, match="rm.learning_rate: 0.0001 -> 0.5"):
    pipeline._check_config(Stub(changed))


@pytest.mark.parametrize(
  "change, message",
  [
    ({"stages": "sft,reward"}, "not a stage"),
    ({"stages": "ppo"}, "model.checkpoint must name"),
    ({"rm.held_out_fraction": 1.0}, "held_out_fraction"),
    ({"comparisons.teacher": "lazy"}, "teacher='lazy' is unknown"),
    ({"ppo.batch_size": 6}, "num_minibatches=4 must divide"),
    ({"ppo.eval_every": 0}, "ppo.eval_every must be at least 1"),
    ({"ppo.kl.horizon": 0.0}, r"ppo.kl.horizon must be > 0"),
    ({"ppo.kl.controller": "pid"}, "controller='pid' is unknown"),
    ({"ppo.kl.init_beta": -0.1}, "init_beta must be >= 0"),
    ({"rm.layers": -1}, "rm.layers must be >= 0"),
  ],
)
def test_validate_pipeline_names_the_bad_key(change, message):
  config = config_lib.pipeline_config()
  for key, value in change.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate_pipeline(config)


@pytest.mark.slow  # about a minute on a loaded core: tiny SFT, RM and 2 online PPO steps
def test_a_person_labels_the_comparisons_in_the_store_while_the_stage_waits(tmp_path):
  """comparisons.teacher = "human": the stage queues its 24 pairs and waits; a person
  (a thread answering through the store, as the app does) picks left for odd pair ids,
  skips every fourth, right otherwise; comparisons.jsonl holds those answers, the reward
  model is fit on them; then online PPO asks the person 2 pairs before each of its 2
  steps, and its label count grows by them."""
  workdir = str(tmp_path / "run")
  config = tiny_config()
  config.stages = "sft,comparisons,rm,online"
  config.comparisons.teacher = "human"
  config.comparisons.poll_seconds = 0.05
  store = Store(os.path.join(workdir, STORE_NAME))
  answered = []

  def person():
    while len(answered) < 28:
      pair = store.next_pair("ann")
      if pair is None:
        time.sleep(0.05)
        continue
      choice = "left" if pair["pair_id"] % 2 else "skip" if pair["pair_id"] % 4 == 0 else "right"
      store.submit(pair["pair_id"], choice, "ann")
      answered.append((pair, choice))

  labeller = threading.Thread(target=person, daemon=True)
  labeller.start()
  pipeline.run_pipeline(config, workdir, stream=open(os.devnull, "w"))
  labeller.join(timeout=10)
  expected = []
  for pair, choice in answered[:24]:
    if choice == "skip":
      continue
    first, second = store.segment(pair["first"]), store.segment(pair["second"])
    chosen, rejected = (first, second) if choice == "left" else (second, first)
    expected.append(
      data.Comparison(str(first["prompt"]), str(chosen["completion"]), str(rejected["completion"]))
    )
  assert len(expected) == 18  # 24 less the 6 skipped
  assert data.read_comparisons(os.path.join(workdir, "comparisons.jsonl")) == expected
  assert os.path.exists(os.path.join(workdir, "rm", "params.msgpack"))
  # Online: 16 train comparisons (18 less 2 held out), then 2 asked before each step.
  assert [pair["first"] for pair, _ in answered[24:]] == [
    "online0_0a",
    "online0_1a",
    "online1_0a",
    "online1_1a",
  ]
  with open(os.path.join(workdir, "metrics.jsonl")) as file:
    metrics = [json.loads(line) for line in file]
  assert [row["labels"] for row in metrics if row["stage"] == "online"] == [18, 20]
