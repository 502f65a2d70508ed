"""Command line: the InstructGPT pipeline on a language model (host side, NOT jittable).

  python -m rlhf_jax.lm.pipeline --config=configs/lm_rlhf.py --workdir=runs/lm_rlhf

Stages, in order (`config.stages` picks some; each writes its output to the workdir and
is skipped when that output is already there, so a stopped run picks up where it left):

  sft          `sft_main.train_sft` into <workdir>/sft/ (model in sft/model/)
  comparisons  `comparisons.num_pairs` pairs of SFT samples of train prompts, labelled
               by a simulated B-Pref teacher on their gold rewards  -> comparisons.jsonl
               (a user's `data.comparisons_path` replaces this stage)
  rm           the reward model fit on them (Bradley–Terry, `rm.py`), held-out accuracy,
               scores normalized over SFT samples                     -> rm/params.msgpack
               (its trunk the SFT model's first `rm.layers` blocks; 0: all)
  ppo          token PPO on the reward model with a KL penalty to the SFT model
               (`token_ppo.py`), checkpointed every `ppo.eval_every` steps: resumes exactly
  online       the same PPO with Ziegler et al.'s online labels: every `online.label_every`
               steps, pairs of the policy's own samples chosen by a query method are
               labelled and the reward model refit (`stage_online`); not in the default
               stages
  best_of_n    best-of-n of the SFT model by the reward model, n in `best_of_n.ns`
  dpo          DPO on the same train comparisons (`dpo.py`), checkpointed like ppo

Every evaluation (`evaluate.Evaluator`: gold reward, proxy reward, KL to the SFT model on
held-out prompts) is a row of <workdir>/results.jsonl with its `method` (sft, ppo, dpo,
best_of_<n>) and `step`, and prints a few samples; training metrics go to
<workdir>/metrics.jsonl with their `stage`. Both also go to TensorBoard under
<workdir>/tensorboard: a results row as `<method>/<metric>` at its step (best-of-n rows
as `best_of_n/<metric>` at n), a metrics row with a step as `<stage>/<metric>` (SFT's own
under <workdir>/sft/tensorboard). `experiments/lm_gold_vs_kl.py` plots gold
reward against KL from results.jsonl. The config is saved as <workdir>/config.json; a
rerun may change only the keys in RESUMABLE (extend ppo or dpo, add stages).
"""

import json
import math
import os
import sys
import time

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tensorboardX import SummaryWriter

from rlhf_jax import checkpoint as checkpoint_lib
from rlhf_jax import queries, teachers
from rlhf_jax.labeling import dataset
from rlhf_jax.labeling.store import STORE_NAME, Store
from rlhf_jax.lm import (
  data,
  dpo,
  gold,
  heads,
  human,
  model,
  rm,
  sampling,
  sft_main,
  synthetic,
  token_ppo,
  weights,
)
from rlhf_jax.lm.config import STAGES, validate_pipeline
from rlhf_jax.lm.evaluate import Evaluator
from rlhf_jax.lm.sharding import make_placement
from rlhf_jax.lm.tokenizer import make_tokenizer
from rlhf_jax.types import Segment

# Config keys a rerun in the same workdir may change (the outputs already written do not
# depend on them).
RESUMABLE = (
  "stages",
  "ppo.steps",
  "ppo.eval_every",  # training does not depend on when it is evaluated
  "dpo.steps",
  "best_of_n.ns",
  "eval.num_printed",
  "comparisons.poll_seconds",
  "checkpoint_keep",
  "sharding.mesh",  # a stage resumes its checkpoint onto another mesh or preset
  "sharding.rules",
  "sharding.batch_axes",
  "sharding.gather_params",
)
# fold_in(key(seed), n) for each stage's randomness, so that stages draw independently.
STAGE_KEYS = {
  "online": 10,
  "comparisons": 1,
  "rm": 3,
  "rm_bootstrap": 4,
  "rm_normalize": 5,
  "eval": 7,
  "ppo": 8,
  "dpo": 9,
}


class Run:
  """What every stage reads: the config, the workdir, the tokenizer, the data, the log."""

  def __init__(self, config, workdir: str, stream):
    self.config, self.workdir, self.stream = config, workdir, stream
    self.tokenizer = make_tokenizer(config.tokenizer)
    self.default_task = not config.data.sft_path
    self.gold_fn = gold.gold_reward if self.default_task else None
    task_dir = os.path.join(workdir, "sft", "data")
    if self.default_task:
      paths = synthetic.write_default_task(
        task_dir, config.data.task_seed, config.data.num_sft_examples
      )
    prompts_path = config.data.prompts_path or (paths["train_prompts"] if self.default_task else "")
    eval_path = config.data.eval_prompts_path or (
      paths["eval_prompts"] if self.default_task else ""
    )
    if not prompts_path:
      raise ValueError("config.data.prompts_path must name the train prompts of a user's task.")
    self.train_prompts = data.read_prompts(prompts_path)
    self.eval_prompts = data.read_prompts(eval_path or prompts_path)[: config.eval.num_prompts]
    self.key = jax.random.key(config.seed)
    self.placement = make_placement(config.sharding)  # every stage's state and batches
    self.tensorboard = SummaryWriter(self.path("tensorboard"))

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def print(self, text: str) -> None:
    print(text, file=self.stream, flush=True)

  def append(self, file: str, row: dict) -> None:
    with open(self.path(file), "a", encoding="utf-8") as out:
      out.write(json.dumps(row) + "\n")
    if "step" in row:
      self.scalars(row["stage"] if "stage" in row else row["method"], row["step"], row)

  def scalars(self, group: str, step: int, row: dict) -> None:
    """A row's finite numbers to TensorBoard as `group/name` at `step`."""
    for name, value in row.items():
      if name not in ("step", "stage", "method") and isinstance(value, (int, float)):
        if math.isfinite(value):
          self.tensorboard.add_scalar(f"{group}/{name}", value, step)
    self.tensorboard.flush()

  def result(self, method: str, step: int, evaluation, elapsed: float) -> None:
    """Logs an evaluation as a results.jsonl row and prints it with a few samples."""
    row = {"method": method, "step": step, **evaluation.metrics, "elapsed": elapsed}
    with open(self.path("results.jsonl"), "a", encoding="utf-8") as out:
      out.write(json.dumps(row) + "\n")
    if method.startswith("best_of_"):
      self.scalars("best_of_n", int(method.removeprefix("best_of_")), row)
    else:
      self.scalars(method, step, row)
    shown = ", ".join(f"{k} {v:+.3f}" for k, v in evaluation.metrics.items() if k != "gold_std")
    self.print(f"[{method} step {step}] {shown}")
    for prompt, completion, score in evaluation.samples[: self.config.eval.num_printed]:
      suffix = "" if score is None else f"  [gold {score:+.3f}]"
      self.print(f"  {prompt!r} -> {completion!r}{suffix}")

  def prompt_length(self, prompts) -> int:
    longest = max(len(data.encode_prompt(self.tokenizer, p)) for p in prompts)
    return min(longest, self.model.config.n_positions - self.config.completion.max_new_tokens)

  def sampler(self):
    """jitted (params, key, prompts, prompt_mask) -> Completion with the completion config."""
    options = dict(
      max_new_tokens=self.config.completion.max_new_tokens,
      temperature=self.config.completion.temperature,
      eos_id=self.tokenizer.eos_id,
    )
    return jax.jit(
      lambda params, key, p, m: sampling.sample(self.model, params, key, p, m, **options)
    )

  def evaluator(self, score_params=None) -> Evaluator:
    return Evaluator(
      self.model,
      self.tokenizer,
      self.eval_prompts,
      self.sft_params,
      max_new_tokens=self.config.completion.max_new_tokens,
      temperature=self.config.completion.temperature,
      key=jax.random.fold_in(self.key, STAGE_KEYS["eval"]),
      gold_fn=self.gold_fn,
      score_fn=None if score_params is None else rm.make_score_fn(self.rm_model),
      score_params=score_params,
    )


def _check_config(run: Run) -> None:
  """Saves config.json on the first run; refuses a rerun that changes anything else than
  RESUMABLE keys."""
  path = run.path("config.json")
  current = checkpoint_lib.config_dict(run.config)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as file:
      saved = json.load(file)
    old, new = checkpoint_lib._flatten(saved), checkpoint_lib._flatten(current)
    changed = [
      f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
      for key in sorted(set(old) | set(new))
      if old.get(key) != new.get(key) and key not in RESUMABLE
    ]
    if changed:
      raise ValueError(
        f"{run.workdir} holds a run with another config ({'; '.join(changed)}); use a new "
        "--workdir, or change only " + ", ".join(RESUMABLE) + "."
      )
  with open(path, "w", encoding="utf-8") as file:
    json.dump(current, file, indent=2)


# --- the stages -------------------------------------------------------------------------


def stage_sft(run: Run) -> None:
  if os.path.exists(run.path("sft", "model", "model.safetensors")):
    return
  sft_main.train_sft(run.config, run.path("sft"), stream=run.stream)


def load_sft(run: Run) -> None:
  directory = run.path("sft", "model") if "sft" in run.stages else run.config.model.checkpoint
  model_config, params = weights.load_gpt2(directory)
  run.model = run.placement.model(model.make_model(model_config))
  run.sft_params = run.placement.state(params)
  # The reward model's trunk: the SFT model's first rm.layers blocks (0: all of them).
  rm_config, rm_trunk = model.first_layers(model_config, params, run.config.rm.layers)
  run.rm_model = run.placement.model(model.make_model(rm_config))
  run.rm_trunk = run.placement.state(rm_trunk)


def stage_comparisons(run: Run) -> None:
  """Samples pairs of SFT completions of train prompts and labels them with the teacher
  (a person's answers when it is "human": `human.py`)."""
  if run.config.data.comparisons_path or os.path.exists(run.path("comparisons.jsonl")):
    return
  if run.config.comparisons.teacher == "human":
    store = Store(run.path(STORE_NAME))
    # Queued by an earlier run (perhaps half labelled), or sampled and queued now.
    ids = human.queued(store, "c", run.config.comparisons.num_pairs)
    ids = ids or human.queue(store, "c", *sample_pairs(run))
    run.print(
      f"comparisons: {len(ids)} pairs for a person to label: "
      f"python -m rlhf_jax.label --workdir={run.workdir}"
    )
    human.wait(store, ids, run.config.comparisons.poll_seconds, run.print)
    rows = human.comparisons(store, ids)
    summary = {
      "stage": "comparisons",
      "pairs": len(rows),
      "skipped": len(ids) - len(rows),
      "ties": sum(row["tie"] for row in rows),
    }
    run.append("metrics.jsonl", summary)
    run.print(f"comparisons: {len(rows)} labelled by a person ({summary['skipped']} skipped)")
  elif run.gold_fn is None:
    raise ValueError(
      "A user's task has no gold reward to label comparisons with: set "
      "config.data.comparisons_path, label them yourself (comparisons.teacher='human'), "
      "or drop 'comparisons' from config.stages."
    )
  else:
    rows = simulated_comparisons(run, *sample_pairs(run))
  data.write_jsonl(run.path("comparisons.jsonl.tmp"), rows)
  os.replace(run.path("comparisons.jsonl.tmp"), run.path("comparisons.jsonl"))


def sample_pairs(run: Run):
  """(prompts, firsts, seconds): comparisons.num_pairs train prompts, two SFT samples of each."""
  config = run.config.comparisons
  sample = run.sampler()
  rng = np.random.default_rng([run.config.seed, 1])
  key = jax.random.fold_in(run.key, STAGE_KEYS["comparisons"])
  length = run.prompt_length(run.train_prompts)
  prompts, firsts, seconds = [], [], []
  while len(prompts) < config.num_pairs:
    batch = list(rng.choice(run.train_prompts, config.batch_size))
    tokens, mask = data.prompt_arrays(run.tokenizer, batch, length)
    for texts in (firsts, seconds):
      key, key_sample = jax.random.split(key)
      completion = sample(run.sft_params, key_sample, tokens, mask)
      texts.extend(data.decode_completions(run.tokenizer, completion.tokens, completion.mask))
    prompts.extend(batch)
  return tuple(x[: config.num_pairs] for x in (prompts, firsts, seconds))


def simulated_comparisons(run: Run, prompts, firsts, seconds) -> list[dict]:
  """The pairs labelled by the simulated teacher on their gold rewards, as rows."""
  config = run.config.comparisons
  key = jax.random.fold_in(run.key, STAGE_KEYS["comparisons"])
  gold_first = np.array([run.gold_fn(p, y) for p, y in zip(prompts, firsts, strict=True)])
  gold_second = np.array([run.gold_fn(p, y) for p, y in zip(prompts, seconds, strict=True)])
  labels, valid = label_pairs(run.config.comparisons, key, gold_first, gold_second)
  rows = []
  for i in np.flatnonzero(valid):
    chosen, rejected = (firsts[i], seconds[i]) if labels[i] >= 0.5 else (seconds[i], firsts[i])
    rows.append(
      {"prompt": prompts[i], "chosen": chosen, "rejected": rejected, "tie": bool(labels[i] == 0.5)}
    )
  strict = valid & (labels != 0.5) & (gold_first != gold_second)
  agree = float("nan")  # no strict pair: nothing to agree on
  if strict.any():
    agree = float(np.mean((labels[strict] == 1) == (gold_first[strict] > gold_second[strict])))
  summary = {
    "stage": "comparisons",
    "pairs": len(rows),
    "skipped": int(np.sum(~valid)),
    "ties": int(np.sum(valid & (labels == 0.5))),
    "gold_agreement": float(agree),
    "sample_gold": float(np.mean(np.concatenate([gold_first, gold_second]))),
  }
  run.append("metrics.jsonl", summary)
  run.print(
    f"comparisons: {summary['pairs']} labelled by the {config.teacher} teacher "
    f"({summary['skipped']} skipped, {summary['ties']} ties), {agree:.1%} agree with gold; "
    f"SFT samples' mean gold {summary['sample_gold']:+.3f}"
  )
  return rows


def label_pairs(comparisons_config, key, gold_first, gold_second):
  """(labels [P] in {1, 0.5, 0}, valid [P]) from the configured teacher, each completion
  a one-step segment whose reward is its gold reward. B-Pref's skip and equal margin is
  a return's scale; gold rewards centre near 0, so it is their std over the pairs."""
  params = teachers.from_config(comparisons_config)

  def segment(gold_rewards):  # the teacher reads only true_reward and mask
    reward = jnp.asarray(gold_rewards, jnp.float32)[:, None]
    return Segment(None, None, None, true_reward=reward, mask=jnp.ones_like(reward), qpos=None)

  margin = float(np.std(np.concatenate([gold_first, gold_second])))
  labels, valid = teachers.label(params, key, segment(gold_first), segment(gold_second), margin)
  return np.asarray(labels), np.asarray(valid)


def comparison_arrays(run: Run, comparisons) -> rm.Comparisons:
  """Text comparisons as arrays, chosen first (label 1; a tie 0.5); prompts as wide as
  the widest of them and of the train prompts (so online pairs fit beside them)."""
  length = run.prompt_length([c.prompt for c in comparisons] + run.train_prompts)
  prompts, prompt_mask = data.prompt_arrays(run.tokenizer, [c.prompt for c in comparisons], length)
  n = run.config.completion.max_new_tokens
  first, first_mask = data.completion_arrays(run.tokenizer, [c.chosen for c in comparisons], n)
  second, second_mask = data.completion_arrays(run.tokenizer, [c.rejected for c in comparisons], n)
  labels = np.array([0.5 if c.tie else 1.0 for c in comparisons], np.float32)
  return rm.Comparisons(prompts, prompt_mask, first, first_mask, second, second_mask, labels)


def split_comparisons(run: Run):
  """(train, held-out) rm.Comparisons: a seeded permutation of the comparisons."""
  path = run.config.data.comparisons_path or run.path("comparisons.jsonl")
  if os.path.isdir(path):  # a text dataset labeling/dataset.py exported: <data_dir>/<name>
    comparisons = dataset.comparisons(*os.path.split(os.path.normpath(path)))
  else:
    comparisons = data.read_comparisons(path)
  order = np.random.default_rng([run.config.seed, 2]).permutation(len(comparisons))
  held_out = max(1, round(run.config.rm.held_out_fraction * len(comparisons)))
  if held_out >= len(comparisons):
    raise ValueError(f"{path} has {len(comparisons)} comparisons: too few to hold some out.")
  arrays = comparison_arrays(run, comparisons)
  take = lambda rows: rm.Comparisons(*(x[rows] for x in arrays[:7]))
  return take(order[held_out:]), take(order[:held_out])


def minibatch(batch: rm.Comparisons, rng, size: int) -> rm.Comparisons:
  rows = rng.choice(batch.labels.shape[0], size, replace=size > batch.labels.shape[0])
  return jax.tree.map(lambda x: x[rows], batch)


def stage_rm(run: Run) -> None:
  """Fits the reward model, reports held-out accuracy, normalizes, saves the params."""
  if os.path.exists(run.path("rm", "params.msgpack")):
    return
  config = run.config.rm
  train, held_out = split_comparisons(run)
  fit = rm.make_reward_fit(run.rm_model, config)
  state = run.placement.state(fit.init(jax.random.fold_in(run.key, STAGE_KEYS["rm"]), run.rm_trunk))
  if config.ensemble_size:
    weights_key = jax.random.fold_in(run.key, STAGE_KEYS["rm_bootstrap"])
    train = train._replace(
      weights=rm.bootstrap_weights(weights_key, len(train.labels), config.ensemble_size)
    )
  step, evaluate = run.placement.jit_step(fit.step, state), jax.jit(fit.evaluate)
  rng = np.random.default_rng([run.config.seed, 3])
  start = time.time()
  every = max(1, config.steps // 6)
  for index in range(config.steps):
    state, metrics = step(state, run.placement.batch(minibatch(train, rng, config.batch_size)))
    if (index + 1) % every == 0 or index + 1 == config.steps:
      held = {f"held_out_{k}": float(v) for k, v in evaluate(state.params, held_out).items()}
      row = {"stage": "rm", "step": index + 1, **{k: float(v) for k, v in metrics.items()}, **held}
      row["elapsed"] = time.time() - start
      run.append("metrics.jsonl", row)
      run.print(
        f"[rm step {index + 1}] loss {row['rm_loss']:.3f}  accuracy {row['rm_accuracy']:.3f}  "
        f"held-out accuracy {row['held_out_rm_accuracy']:.3f} ({len(held_out.labels)} pairs)"
      )
  # Normalize over SFT samples of train prompts (Ziegler et al. §2.2).
  prompts = list(
    np.random.default_rng([run.config.seed, 4]).choice(run.train_prompts, config.normalize_samples)
  )
  tokens, mask = data.prompt_arrays(run.tokenizer, prompts, run.prompt_length(run.train_prompts))
  completion = run.sampler()(
    run.sft_params, jax.random.fold_in(run.key, STAGE_KEYS["rm_normalize"]), tokens, mask
  )
  params, (gain, bias) = rm.normalize(
    run.rm_model, state.params, tokens, mask, completion.tokens, completion.mask
  )
  os.makedirs(run.path("rm"), exist_ok=True)
  with open(run.path("rm", "params.msgpack.tmp"), "wb") as file:
    file.write(flax.serialization.to_bytes(params))
  os.replace(run.path("rm", "params.msgpack.tmp"), run.path("rm", "params.msgpack"))
  gain, bias = np.asarray(gain), np.asarray(bias)
  run.print(
    f"rm: scores normalized over {config.normalize_samples} SFT samples: {gain} · s + {bias}"
  )


def load_rm(run: Run):
  template = (
    rm.make_reward_fit(run.rm_model, run.config.rm).init(jax.random.key(0), run.rm_trunk).params
  )
  with open(run.path("rm", "params.msgpack"), "rb") as file:
    return run.placement.state(flax.serialization.from_bytes(template, file.read()))


def _restore(checkpoints, state, run: Run, stage: str):
  """(state, first step) from the newest checkpoint of `stage`, or (state, 0)."""
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
  restored = checkpoints.restore_latest(abstract, run.print)
  if restored is None:
    return state, 0
  run.print(f"{stage}: resuming from step {restored[1]['chunk']}")
  return restored[0], restored[1]["chunk"]


def _train_with_checkpoints(
  run: Run, stage: str, state, step_fn, batch_fn, params_of, steps: int, every: int, held_out=None
):
  """The loop ppo, online and dpo share: `step_fn(state, *batch_fn(index), key)` (jitted
  by the caller, or a host function; the batch split by the placement) from the newest
  checkpoint on; an evaluation, a
  results row and a checkpoint every `every` steps and at the end. `held_out(state) ->
  dict` adds held-out metrics to each metrics row."""
  checkpoints = checkpoint_lib.Checkpointer(run.path(stage), run.config.checkpoint_keep)
  state, start = _restore(checkpoints, state, run, stage)
  if start >= steps:
    checkpoints.close()
    return
  evaluator = run.evaluator(run.rm_params)
  key = jax.random.fold_in(run.key, STAGE_KEYS[stage])
  begin, rows = time.time(), []
  for index in range(start, steps):
    batch = run.placement.batch(batch_fn(index))
    state, metrics = step_fn(state, *batch, jax.random.fold_in(key, index))
    rows.append(metrics)
    if (index + 1) % every == 0 or index + 1 == steps:
      means = {k: float(np.mean([jax.device_get(r[k]) for r in rows])) for k in rows[0]}
      means.update(held_out(state) if held_out else {})
      run.append("metrics.jsonl", {"stage": stage, "step": index + 1, **means})
      run.result(stage, index + 1, evaluator(params_of(state)), time.time() - begin)
      checkpoints.save(index + 1, state, {"config": checkpoint_lib.config_dict(run.config)})
      rows = []
  checkpoints.wait()
  checkpoints.close()


def _ppo_config(run: Run) -> ml_collections.ConfigDict:
  """config.ppo with the completion settings and the tokenizer's EOS filled in."""
  config = ml_collections.ConfigDict(run.config.ppo.to_dict())
  config.max_new_tokens = run.config.completion.max_new_tokens
  config.temperature = run.config.completion.temperature
  config.eos_id = run.tokenizer.eos_id
  return config


def _ppo_batches(run: Run, batch_size: int):
  """index -> (prompts, prompt_mask) of step `index`: a seeded draw of train prompts, the
  same for ppo and online."""
  length = run.prompt_length(run.train_prompts)

  def batch(index):
    rng = np.random.default_rng([run.config.seed, 5, index])
    prompts = list(rng.choice(run.train_prompts, batch_size))
    return data.prompt_arrays(run.tokenizer, prompts, length)

  return batch


def value_init(run: Run):
  """What PPO's value model starts from: the reward model (Ziegler et al.), or the SFT
  model with a zero head when the reward model's trunk is smaller than the policy's."""
  return run.rm_params if run.rm_model.config == run.model.config else run.sft_params


def stage_ppo(run: Run) -> None:
  config = _ppo_config(run)
  ppo = token_ppo.make_token_ppo(run.model, config, rm.make_score_fn(run.rm_model))
  # The state is donated to each step: it must not share buffers with run.rm_params.
  state = ppo.init(run.sft_params, value_init(run), score_params=rm.copy_tree(run.rm_params))
  state = run.placement.state(state)
  _train_with_checkpoints(
    run,
    "ppo",
    state,
    run.placement.jit_step(ppo.step, state),
    _ppo_batches(run, config.batch_size),
    lambda s: s.policy_params,
    config.steps,
    config.eval_every,
  )


@flax.struct.dataclass
class OnlineState:
  ppo: token_ppo.TokenPPOState
  reward: rm.RewardFitState  # the reward model being refit; ppo.score_params is a copy
  buffer: rm.Comparisons  # every label so far, in a fixed capacity (weights 0: empty)
  count: jax.Array  # int32 []: rows of `buffer` filled


def stage_online(run: Run) -> None:
  """Ziegler et al.'s online loop: PPO as in stage_ppo, and every `online.label_every`
  steps (from step 0) a round of labels about the current policy's own samples.

    candidates  `online.candidates` train prompts, two policy completions of each
    select      `online.labels_per_round` of them by `online.query` (queries.py: uniform,
                disagreement or entropy of the reward ensemble's members)
    label       the configured teacher on their gold rewards (label_pairs)
    refit       `online.rm_steps` reward-model steps on every label so far (the offline
                train comparisons first), then PPO's reward becomes the refit model

  The labels live in a buffer sized for ppo.steps, inside the checkpointed state: a
  finished online stage cannot be extended by raising ppo.steps (use a new workdir).
  """
  config, ppo_config = run.config.online, _ppo_config(run)
  ppo = token_ppo.make_token_ppo(run.model, ppo_config, rm.make_score_fn(run.rm_model))
  fit = rm.make_reward_fit(run.rm_model, run.config.rm)
  offline, _ = split_comparisons(run)
  rounds = -(-ppo_config.steps // config.label_every)
  capacity = len(offline.labels) + rounds * config.labels_per_round
  pad = lambda x: np.concatenate([x, np.zeros((capacity - len(x),) + x.shape[1:], x.dtype)])
  weights = np.ones_like(offline.labels)
  buffer = rm.Comparisons(*(pad(np.asarray(x)) for x in offline[:7]), weights=pad(weights))
  reward = fit.init(None, rm.copy_tree(run.rm_params))  # continues the offline model
  state = OnlineState(
    ppo=ppo.init(run.sft_params, value_init(run), score_params=rm.copy_tree(run.rm_params)),
    reward=reward,
    buffer=buffer,
    count=jnp.asarray(len(offline.labels), jnp.int32),
  )
  state = run.placement.state(state)
  width = offline.prompts.shape[1]
  ppo_step = run.placement.jit_step(ppo.step, state.ppo)
  fit_step = run.placement.jit_step(fit.step, state.reward)
  sample = run.sampler()
  member_scores = jax.jit(lambda params, *x: heads.completion_scores(run.rm_model, params, *x))
  select = jax.jit(queries.select, static_argnames=("method", "num"))

  def label_round(state: OnlineState, index: int, key) -> OnlineState:
    rng = np.random.default_rng([run.config.seed, STAGE_KEYS["online"], index])
    prompts = list(rng.choice(run.train_prompts, config.candidates))
    tokens, mask = data.prompt_arrays(run.tokenizer, prompts, width)
    keys = jax.random.split(key, 4)
    first, second = (sample(state.ppo.policy_params, k, tokens, mask) for k in keys[:2])
    as_members = lambda s: s.T if s.ndim == 2 else s[None]  # [M, C], as queries.py takes
    scores = [
      as_members(member_scores(state.reward.params, tokens, mask, c.tokens, c.mask))
      for c in (first, second)
    ]
    chosen = np.asarray(select(config.query, keys[2], *scores, config.labels_per_round))
    texts = [
      data.decode_completions(run.tokenizer, c.tokens[chosen], c.mask[chosen])
      for c in (first, second)
    ]
    if run.config.comparisons.teacher == "human":  # a person answers in the app
      store = Store(run.path(STORE_NAME))
      ids = human.queue(store, f"online{index}_", [prompts[i] for i in chosen], *texts)
      run.print(f"online: round at step {index}, {len(ids)} pairs for a person to label")
      answers = human.wait(store, ids, run.config.comparisons.poll_seconds, run.print)
      labels, valid = human.labels(answers, ids)
    else:
      golds = [
        np.array([run.gold_fn(prompts[i], y) for i, y in zip(chosen, side, strict=True)])
        for side in texts
      ]
      labels, valid = label_pairs(run.config.comparisons, keys[3], *golds)
    buffer = jax.tree.map(np.array, state.buffer)  # host copies to write the round into
    rows = slice(int(state.count), int(state.count) + len(chosen))
    buffer.prompts[rows], buffer.prompt_mask[rows] = tokens[chosen], mask[chosen]
    buffer.first[rows], buffer.first_mask[rows] = first.tokens[chosen], first.mask[chosen]
    buffer.second[rows], buffer.second_mask[rows] = second.tokens[chosen], second.mask[chosen]
    buffer.labels[rows], buffer.weights[rows] = labels, valid.astype(np.float32)  # 0: skipped
    reward, filled = state.reward, jax.tree.map(lambda x: x[: rows.stop], buffer)
    for _ in range(config.rm_steps):
      batch = run.placement.batch(minibatch(filled, rng, run.config.rm.batch_size))
      reward, _ = fit_step(reward, batch)
    return OnlineState(
      ppo=state.ppo.replace(score_params=rm.copy_tree(reward.params)),
      reward=reward,
      buffer=run.placement.state(buffer),
      count=jnp.asarray(rows.stop, jnp.int32),
    )

  def step(state: OnlineState, prompts, prompt_mask, key):
    key_label, key_ppo = jax.random.split(key)
    index = int(state.ppo.steps)
    if index % config.label_every == 0:
      state = label_round(state, index, key_label)
    ppo_state, metrics = ppo_step(state.ppo, prompts, prompt_mask, key_ppo)
    return state.replace(ppo=ppo_state), {**metrics, "labels": state.count}

  _train_with_checkpoints(
    run,
    "online",
    state,
    step,
    _ppo_batches(run, ppo_config.batch_size),
    lambda s: s.ppo.policy_params,
    ppo_config.steps,
    ppo_config.eval_every,
  )


def stage_dpo(run: Run) -> None:
  """DPO on the train comparisons; each evaluation also logs the DPO loss and accuracy on
  the held-out ones (`held_out_dpo_*`), which pick a step without looking at gold
  (experiments/lm_gold_vs_kl.py's "dpo (held-out)")."""
  config = run.config.dpo
  train, held_out = split_comparisons(run)
  method = dpo.make_dpo(run.model, config)
  state = run.placement.state(method.init(run.sft_params))
  evaluate = jax.jit(method.evaluate)

  def held_out_metrics(state):
    return {f"held_out_{k}": float(v) for k, v in evaluate(state, held_out).items()}

  def batch(index):
    return (
      minibatch(train, np.random.default_rng([run.config.seed, 6, index]), config.batch_size),
    )

  _train_with_checkpoints(
    run,
    "dpo",
    state,
    run.placement.jit_step(method.step, state),
    batch,
    lambda s: s.params,
    config.steps,
    config.eval_every,
    held_out_metrics,
  )


def stage_best_of_n(run: Run) -> None:
  done = {row["method"] for row in read_results(run.path("results.jsonl"))}
  evaluator = run.evaluator(run.rm_params)
  start = time.time()
  for n in run.config.best_of_n.ns:
    if f"best_of_{n}" not in done:
      run.result(f"best_of_{n}", 0, evaluator.best_of_n(run.sft_params, n), time.time() - start)


def read_results(path: str) -> list[dict]:
  """The rows of a results.jsonl, the last of each (method, step): a run stopped between
  an evaluation and its checkpoint repeats that evaluation when it resumes."""
  if not os.path.exists(path):
    return []
  rows = {}
  with open(path, encoding="utf-8") as file:
    for line in file:
      if line.strip():
        row = json.loads(line)
        rows.pop((row["method"], row["step"]), None)
        rows[(row["method"], row["step"])] = row
  return list(rows.values())


def run_pipeline(config, workdir: str, stream=sys.stdout) -> list[dict]:
  """Runs the configured stages (see the module doc); returns the rows of results.jsonl."""
  validate_pipeline(config)
  os.makedirs(workdir, exist_ok=True)
  run = Run(config, workdir, stream)
  try:
    _check_config(run)
    _run_stages(run)
  finally:
    run.tensorboard.close()
  return read_results(run.path("results.jsonl"))


def _run_stages(run: Run) -> None:
  run.stages = [stage for stage in STAGES if stage in run.config.stages.split(",")]
  if "sft" in run.stages:
    stage_sft(run)
  load_sft(run)
  if "comparisons" in run.stages:
    stage_comparisons(run)
  if "rm" in run.stages:
    stage_rm(run)
  if {"ppo", "online", "best_of_n"} & set(run.stages) and not os.path.exists(
    run.path("rm", "params.msgpack")
  ):
    raise ValueError("ppo, online and best_of_n need the reward model: add 'rm' to config.stages.")
  run.rm_params = load_rm(run) if os.path.exists(run.path("rm", "params.msgpack")) else None
  # The starting point of every curve, measured again once a reward model gives a proxy.
  sft_rows = [row for row in read_results(run.path("results.jsonl")) if row["method"] == "sft"]
  if not sft_rows or ("proxy" not in sft_rows[-1] and run.rm_params is not None):
    run.result("sft", 0, run.evaluator(run.rm_params)(run.sft_params), 0.0)
  later = (
    ("ppo", stage_ppo),
    ("online", stage_online),
    ("best_of_n", stage_best_of_n),
    ("dpo", stage_dpo),
  )
  for name, stage in later:
    if name in run.stages:
      stage(run)


def run() -> None:
  """The CLI (flags defined here, not at import; see sft_main.run)."""
  config = config_flags.DEFINE_config_file("config", None, "Pipeline config (configs/lm_rlhf.py).")
  workdir = flags.DEFINE_string("workdir", None, "Directory for every stage's outputs.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: run_pipeline(config.value, workdir.value))


if __name__ == "__main__":
  run()
