"""The SFT run's config (`sft_main.py`) and its validation.

`configs/lm_sft.py` starts from `default_config()`; `validate(config)` runs before
anything is built and raises a ValueError saying which key is wrong and what to change.
"""

import os

import ml_collections

from rlhf_jax.lm import model, sft


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # "byte" (UTF-8 bytes, no files) or a directory with GPT-2's vocab.json + merges.txt
  # or tokenizer.json.
  config.tokenizer = "byte"

  config.model = ml_collections.ConfigDict()
  # A named size (model.SIZES) whose vocabulary becomes the tokenizer's; ignored when
  # `checkpoint` names a GPT-2 directory (config.json + model.safetensors) to start from.
  config.model.size = "cpu"
  config.model.n_positions = 256
  config.model.checkpoint = ""

  config.data = ml_collections.ConfigDict()
  config.data.sft_path = ""  # JSONL of {"text"} or {"prompt", "completion"}; "": default task
  config.data.eval_prompts_path = ""  # JSONL of {"prompt"}; "": the default task's eval prompts
  config.data.task_seed = 0  # of the default task
  config.data.num_sft_examples = 20_000  # of the default task
  config.data.sequence_length = 168  # tokens per SFT sequence (longer ones are cut)

  config.train = ml_collections.ConfigDict()
  config.train.steps = 2_000
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.schedule = "cosine"  # or "constant" (after the warmup)
  config.train.end_learning_rate_fraction = 0.1
  config.train.weight_decay = 0.0
  config.train.max_grad_norm = 1.0  # 0: no clipping

  config.log_every = 100

  config.sample = ml_collections.ConfigDict()
  config.sample.num_prompts = 64  # eval prompts sampled at the end (gold measured on them)
  config.sample.num_printed = 3
  config.sample.max_new_tokens = 128
  config.sample.temperature = 1.0
  return config


def validate(config) -> None:
  """Raises ValueError saying which key is wrong and what to change."""
  for key in (
    "model.n_positions",
    "data.sequence_length",
    "data.num_sft_examples",
    "train.steps",
    "train.batch_size",
    "log_every",
    "sample.num_prompts",
    "sample.max_new_tokens",
  ):
    value = config
    for part in key.split("."):
      value = value[part]
    if value < 1:
      raise ValueError(f"config.{key} must be at least 1, got {value}.")
  if not config.model.checkpoint and config.model.size not in model.SIZES:
    raise ValueError(
      f"config.model.size={config.model.size!r} is unknown; choose one of {tuple(model.SIZES)}."
    )
  if config.train.schedule not in sft.SCHEDULES:
    raise ValueError(
      f"config.train.schedule={config.train.schedule!r} is unknown; choose one of {sft.SCHEDULES}."
    )
  if config.train.learning_rate <= 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {config.train.learning_rate}.")
  if config.train.warmup_steps < 0 or config.train.warmup_steps > config.train.steps:
    raise ValueError(
      f"config.train.warmup_steps={config.train.warmup_steps} must be in 0..train.steps "
      f"({config.train.steps})."
    )
  if config.sample.temperature < 0:
    raise ValueError(f"config.sample.temperature must be >= 0, got {config.sample.temperature}.")
  if config.data.sequence_length > config.model.n_positions and not config.model.checkpoint:
    raise ValueError(
      f"config.data.sequence_length={config.data.sequence_length} exceeds "
      f"config.model.n_positions={config.model.n_positions}."
    )
  for key in ("sft_path", "eval_prompts_path"):
    path = config.data[key]
    if path and not os.path.isfile(path):
      raise ValueError(f"config.data.{key}={path!r}: no such file.")
