"""Command line: train from a config file.

  python -m rlhf_jax.train --config=configs/hopper.py --config.ppo.num_envs=256 \
      --workdir=runs/hopper

This is the host loop (NOT jittable): it compiles one chunk of iterations, runs the
chunks, and between them writes metrics, TensorBoard events and progress. At the end it
writes `return.png`. The workdir also gets the resolved config as `config.json`.
"""

import os
import sys
import time
from typing import Any, NamedTuple

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from rlhf_jax import config as config_lib
from rlhf_jax import loop, metrics

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, logs and plots.")


class TrainResult(NamedTuple):
  records: list[dict]  # the rows of metrics.jsonl
  state: loop.TrainState  # the final state (policy, value, normalizer, envs, ...)
  trainer: Any  # loop.Trainer: the networks and functions the run used


def train(config, workdir: str, stream=sys.stdout) -> TrainResult:
  """Runs the experiment described by `config`, writing its outputs to `workdir`."""
  config_lib.validate(config)
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise FileExistsError(f"{workdir} already holds a run's metrics.jsonl; choose a new --workdir.")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  trainer = loop.make_trainer(config)
  num_chunks = config_lib.num_chunks(config)
  steps_per_chunk = trainer.env_steps_per_iteration * config.iterations_per_chunk
  total_env_steps = trainer.initial_env_steps + num_chunks * steps_per_chunk
  reward = "the true reward"
  if trainer.reward_model is not None:
    reward = (
      f"a reward learned from {config.queries.total_labels} labels of a simulated "
      f"{config.teacher} teacher (segments of {trainer.segment_length} steps)"
    )
  print(
    f"rlhf_jax: {config.env.name} ({config.env.backend}) on {jax.devices()[0].platform}, "
    f"{total_env_steps:,} env steps in {num_chunks} chunks of {steps_per_chunk:,}; "
    f"PPO optimizes {reward}",
    file=stream,
    flush=True,
  )

  start = time.perf_counter()
  state = trainer.init(jax.random.PRNGKey(config.seed))
  chunk = trainer.chunk.lower(state).compile()
  compile_seconds = time.perf_counter() - start
  print(f"initialized and compiled one chunk in {compile_seconds:.1f} s", file=stream, flush=True)

  writer = metrics.MetricsWriter(workdir, total_env_steps, stream)
  records = []
  try:
    for index in range(num_chunks):
      chunk_start = time.perf_counter()
      state, chunk_metrics = chunk(state)
      record = loop.chunk_summary(chunk_metrics)  # waits for the chunk to finish
      seconds = time.perf_counter() - chunk_start
      record.update(
        env_steps=trainer.initial_env_steps + (index + 1) * steps_per_chunk,
        steps_per_second=steps_per_chunk / seconds,
        elapsed_seconds=time.perf_counter() - start,
        compile_seconds=compile_seconds,
      )
      writer.write(record)
      records.append(record)
  finally:
    writer.close()
    if records:
      metrics.plot_returns(records, os.path.join(workdir, "return.png"), title=f"{config.env.name}")
  return TrainResult(records, state, trainer)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required.")
  logging.set_verbosity(logging.WARNING)  # keep the console for our progress lines
  try:
    train(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileExistsError) as error:
    sys.exit(f"error: {error}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
