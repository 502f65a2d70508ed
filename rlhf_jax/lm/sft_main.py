"""Command line: supervised fine-tuning of a language model (host side, NOT jittable).

  python -m rlhf_jax.lm.sft_main --config=configs/lm_sft.py --workdir=runs/lm_sft

With `data.sft_path` empty it trains on the default task (`synthetic.py`), first written
into `<workdir>/data/` as JSONL and read back like a user's files. It prints progress
every `log_every` steps (step, loss, token accuracy, tokens/s, elapsed), appends each
logged row to `<workdir>/metrics.jsonl` and to TensorBoard (`sft/<metric>` under
`<workdir>/tensorboard`), and at the end samples completions of held-out
prompts, prints a few (with their gold reward on the default task) and logs the
samples' mean gold reward and form. The final weights are written to `<workdir>/model/`
as a GPT-2 checkpoint (`weights.save_gpt2`); there is no resume within SFT (the pipeline
(`pipeline.py`) skips a finished SFT stage).
"""

import json
import math
import os
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tensorboardX import SummaryWriter

from rlhf_jax.lm import data, gold, model, sampling, sft, synthetic, weights
from rlhf_jax.lm.config import validate
from rlhf_jax.lm.sharding import make_placement
from rlhf_jax.lm.tokenizer import make_tokenizer


class SFTResult(NamedTuple):
  state: sft.SFTState
  model: model.Model
  records: list[dict]  # the rows of metrics.jsonl
  samples: list[tuple[str, str]]  # (prompt, completion) sampled at the end


def _build_model(config, tokenizer):
  """(Model, initial params or None) from a checkpoint or a named size."""
  if config.model.checkpoint:
    model_config, params = weights.load_gpt2(config.model.checkpoint)
  else:
    overrides = {"vocab_size": tokenizer.vocab_size, "n_positions": config.model.n_positions}
    model_config, params = model.gpt_config(config.model.size, **overrides), None
  if tokenizer.vocab_size > model_config.vocab_size:
    raise ValueError(
      f"The tokenizer has {tokenizer.vocab_size} ids but the model only "
      f"{model_config.vocab_size}: use a matching tokenizer and checkpoint."
    )
  return model.make_model(model_config), params


def _load_data(config, workdir: str):
  """(SFT examples, eval prompts, whether the default task's gold reward applies)."""
  sft_path, prompts_path = config.data.sft_path, config.data.eval_prompts_path
  default_task = not sft_path
  if default_task:
    paths = synthetic.write_default_task(
      os.path.join(workdir, "data"), config.data.task_seed, config.data.num_sft_examples
    )
    sft_path = paths["sft"]
    prompts_path = prompts_path or paths["eval_prompts"]
  examples = data.read_sft(sft_path)
  prompts = data.read_prompts(prompts_path) if prompts_path else []
  if not prompts:  # user text without eval prompts: sample after the examples' prompts
    prompts = [example.prompt for example in examples]
  return examples, prompts, default_task


def sample_completions(config, sft_model, params, tokenizer, prompts, key):
  """Host side: completion texts of `prompts` (left-padded after BOS) with the KV cache."""
  length = max(len(data.encode_prompt(tokenizer, prompt)) for prompt in prompts)
  length = min(length, sft_model.config.n_positions - 1)
  max_new_tokens = min(config.sample.max_new_tokens, sft_model.config.n_positions - length)
  tokens, mask = data.prompt_arrays(tokenizer, prompts, length)
  sample = jax.jit(sampling.sample, static_argnames=("model", "max_new_tokens", "top_k", "eos_id"))
  completion = sample(
    sft_model,
    params,
    key,
    tokens,
    mask,
    max_new_tokens=max_new_tokens,
    temperature=config.sample.temperature,
    eos_id=tokenizer.eos_id,
  )
  return data.decode_completions(tokenizer, completion.tokens, completion.mask)


def train_sft(config, workdir: str, stream=sys.stdout) -> SFTResult:
  """Runs SFT as configured (see the module doc) and returns the final state."""
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  tokenizer = make_tokenizer(config.tokenizer)
  sft_model, initial_params = _build_model(config, tokenizer)
  examples, eval_prompts, default_task = _load_data(config, workdir)
  length = config.data.sequence_length
  print(
    f"{len(examples)} SFT examples ({data.count_truncated(tokenizer, examples, length)} cut at "
    f"{length} tokens); model {sft_model.config}",
    file=stream,
    flush=True,
  )
  dataset = data.sft_batch(tokenizer, examples, length)

  placement = make_placement(config.sharding)
  sft_model = placement.model(sft_model)
  trainer = sft.make_sft(config.train, sft_model)
  key = jax.random.key(config.seed)
  key_init, key_train, key_sample = jax.random.split(key, 3)
  state = placement.create(trainer.init, key_init, initial_params)
  step = placement.jit_step(trainer.step, state)
  order = np.random.default_rng(config.seed)
  batch_size = config.train.batch_size
  permutation, cursor = order.permutation(len(examples)), 0

  records = []
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  start = last_time = time.time()
  tokens_since = 0.0
  tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
  with open(metrics_path, "a", encoding="utf-8") as metrics_file, tensorboard:

    def log(record: dict) -> None:
      records.append(record)
      metrics_file.write(json.dumps(record) + "\n")
      metrics_file.flush()
      for name, value in record.items():
        if name != "step" and math.isfinite(value):
          tensorboard.add_scalar(f"sft/{name}", value, record["step"])
      tensorboard.flush()

    for step_index in range(config.train.steps):
      if cursor + batch_size > len(permutation):
        permutation, cursor = order.permutation(len(examples)), 0
      rows = permutation[cursor : cursor + batch_size]
      cursor += batch_size
      batch = data.SFTBatch(*(array[rows] for array in dataset))
      tokens_since += float(batch.mask.sum())
      batch = placement.batch(batch)
      state, metrics = step(state, batch, jax.random.fold_in(key_train, step_index))
      if (step_index + 1) % config.log_every == 0 or step_index + 1 == config.train.steps:
        metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
        now = time.time()
        record = {
          "step": step_index + 1,
          **metrics,
          "tokens_per_second": tokens_since / (now - last_time),
          "elapsed": now - start,
        }
        tokens_since, last_time = 0.0, now
        log(record)
        print(
          f"step {record['step']:6d}  loss {record['loss']:.4f}  "
          f"accuracy {record['accuracy']:.3f}  {record['tokens_per_second']:,.0f} tokens/s  "
          f"elapsed {record['elapsed']:.0f} s",
          file=stream,
          flush=True,
        )

    prompts = eval_prompts[: config.sample.num_prompts]
    completions = sample_completions(
      config, sft_model, state.params, tokenizer, prompts, key_sample
    )
    samples = list(zip(prompts, completions, strict=True))
    for prompt, completion in samples[: config.sample.num_printed]:
      score = f"  [gold {gold.gold_reward(prompt, completion):+.3f}]" if default_task else ""
      print(f"{prompt!r} -> {completion!r}{score}", file=stream, flush=True)
    if default_task:
      details = [gold.gold_details(prompt, completion) for prompt, completion in samples]
      summary = {
        "step": config.train.steps,
        "sample_gold": float(np.mean([d.reward for d in details])),
        "sample_form": float(np.mean([d.form for d in details])),
        "sample_well_formed": float(np.mean([d.form == 1 for d in details])),
        "elapsed": time.time() - start,
      }
      log(summary)
      print(
        f"{len(samples)} samples: mean gold {summary['sample_gold']:+.3f}, mean form "
        f"{summary['sample_form']:.3f}, {summary['sample_well_formed']:.0%} perfectly formed",
        file=stream,
        flush=True,
      )
  weights.save_gpt2(os.path.join(workdir, "model"), sft_model.config, state.params)
  return SFTResult(state=state, model=sft_model, records=records, samples=samples)


def run() -> None:
  """The CLI. Its flags are defined here, not at import, so that this module and
  rlhf_jax.train (whose --config is another) can both be imported in one process."""
  config = config_flags.DEFINE_config_file("config", None, "SFT config file (configs/lm_sft.py).")
  workdir = flags.DEFINE_string("workdir", None, "Directory for data, metrics and the model.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: train_sft(config.value, workdir.value))


if __name__ == "__main__":
  run()
