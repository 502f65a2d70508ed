"""Command line: train from a config file.

  python -m rlhf_jax.train --config=configs/hopper.py --config.ppo.num_envs=256 \
      --workdir=runs/hopper

This is the host loop (NOT jittable): it compiles one chunk of iterations, runs the
chunks, and between them writes metrics, TensorBoard events, progress and checkpoints. At
the end it writes `return.png`. The workdir also gets the resolved config as `config.json`.
Rerunning with the same --workdir resumes from the newest checkpoint (README: Checkpoints
and resume); SIGTERM or Ctrl-C saves and exits with 128 + the signal number.
"""

import math
import os
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from rlhf_jax import checkpoint, loop, metrics, sharding
from rlhf_jax import config as config_lib
from rlhf_jax.labeling.human import HumanTeacher

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, logs and plots.")
_MULTIHOST = flags.DEFINE_bool(
  "multihost", False, "One process per host: call jax.distributed.initialize() first."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "With --multihost: host:port of process 0 (default: detected)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "With --multihost (default: detected)."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost (default: detected).")
_BASELINE = flags.DEFINE_string(
  "baseline",
  None,
  "Workdir of a true-reward run (e.g. of the same task's config without _pref): its true "
  "return is drawn in return.png beside this run's.",
)


class TrainResult(NamedTuple):
  records: list[dict]  # the rows of metrics.jsonl
  state: loop.TrainState  # the final state (policy, value, normalizer, envs, ...)
  trainer: Any  # loop.Trainer: the networks and functions the run used


class Interrupted(Exception):
  """SIGTERM or SIGINT stopped the run after a chunk; a checkpoint was saved."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


class NonFiniteError(Exception):
  """A loss or a learned quantity became NaN or Inf; the last good checkpoint is kept."""


class _StopSignals:
  """While active (main thread only): SIGTERM or SIGINT asks the run to stop after the
  current chunk; a second SIGINT ends the process at once (the default action)."""

  def __init__(self, stream):
    self.received = None
    self._stream = stream
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    self.received = signum
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    print(
      f"\n{signal.Signals(signum).name}: finishing this chunk, then saving a checkpoint "
      "(Ctrl-C again exits at once)",
      file=self._stream,
      flush=True,
    )

  def shared(self) -> int | None:
    """The signal any process received (all processes of a multi-host run must stop at
    the same chunk, since saving takes all of them)."""
    if jax.process_count() == 1:
      return self.received
    from jax.experimental import multihost_utils

    received = multihost_utils.process_allgather(np.int32(self.received or 0))
    return int(np.max(received)) or None

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def train(config, workdir: str, stream=sys.stdout, baseline: str | None = None) -> TrainResult:
  """Runs the experiment described by `config`, writing its outputs to `workdir`.

  If `workdir` holds checkpoints of the same experiment, continues from the newest one.
  `baseline`: the workdir of a true-reward run, whose true return `return.png` shows too.
  Raises Interrupted after saving when SIGTERM/SIGINT arrives, NonFiniteError when a loss
  or parameter goes NaN/Inf (without saving), ValueError for a bad or changed config.
  """
  # Validates the config (before anything is written) and builds the mesh, once.
  trainer = loop.make_trainer(config)
  baseline_records = _baseline_records(baseline)
  primary = jax.process_index() == 0  # with --multihost, only process 0 logs and writes
  if not primary:
    stream = open(os.devnull, "w")  # noqa: SIM115 -- lives as long as the process
  os.makedirs(workdir, exist_ok=True)
  checkpoints = checkpoint.Checkpointer(workdir, config.checkpoint.keep)
  _check_resumable(config, workdir, checkpoints)
  checkpoint.barrier("checked the workdir")  # before process 0 writes into it
  if primary:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  num_chunks = config_lib.num_chunks(config)
  steps_per_chunk = trainer.env_steps_per_iteration * config.iterations_per_chunk
  total_env_steps = trainer.initial_env_steps + num_chunks * steps_per_chunk
  print(_header(config, trainer, num_chunks, steps_per_chunk, total_env_steps), file=stream)
  log = lambda text: print(text, file=stream, flush=True)

  start = time.perf_counter()
  key = loop.seed_keys(config)
  restored = checkpoints.restore_latest(trainer.abstract_state, log)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if restored is None:
    state, first_chunk, elapsed_before, records = trainer.init(key), 0, 0.0, []
  else:
    state, meta = restored
    first_chunk, elapsed_before = meta["chunk"], meta["elapsed_seconds"]
    records = metrics.keep_records_until(metrics_path, meta["env_steps"]) if primary else []
    log(f"resuming from checkpoint {first_chunk} of {num_chunks} ({meta['env_steps']:,} env steps)")
  human = None
  if config.reward.source == "learned" and config.teacher == "human" and first_chunk < num_chunks:
    if jax.process_count() > 1:
      raise ValueError("config.teacher='human' runs in one process; drop --multihost.")
    human = HumanTeacher(config, trainer, workdir, log)
  if first_chunk < num_chunks:
    chunk = trainer.chunk.lower(state).compile()
    compile_seconds = time.perf_counter() - start
    log(f"initialized and compiled one chunk in {compile_seconds:.1f} s")
  else:
    log(f"the run in {workdir} is complete; nothing left to train")

  def env_steps(chunks_done: int) -> int:
    return trainer.initial_env_steps + chunks_done * steps_per_chunk

  writer = metrics.NoWriter()
  if primary:
    resumed_at = env_steps(first_chunk) if restored else None
    writer = metrics.MetricsWriter(workdir, total_env_steps, stream, resumed_at=resumed_at)
  try:
    with _StopSignals(stream) as signals:
      if human is not None:  # a signal ends its waiting for labels
        human.stop_requested = lambda: signals.received is not None
        state = human.start(state, first_chunk, resumed=restored is not None)
        stop = signals.shared()
        if stop:  # stopped while waiting for labels: nothing trained, nothing to save
          raise Interrupted(
            stop,
            f"stopped by {signal.Signals(stop).name} before chunk {first_chunk + 1} of "
            f"{num_chunks}; the labels are kept in {human.store.path}. Rerun the same "
            "command to resume.",
          )
      for index in range(first_chunk, num_chunks):
        chunk_start = time.perf_counter()
        state, chunk_metrics = chunk(state)
        _wait_for(chunk_metrics)
        record = loop.chunk_summary(chunk_metrics)
        seconds = time.perf_counter() - chunk_start
        bad_iteration = record.pop("nonfinite_iteration")
        if bad_iteration >= 0:
          iteration = index * config.iterations_per_chunk + bad_iteration
          env_step = trainer.initial_env_steps + (iteration + 1) * trainer.env_steps_per_iteration
          raise NonFiniteError(_nonfinite_message(record, state, iteration, env_step, checkpoints))
        elapsed = elapsed_before + time.perf_counter() - start
        record.update(
          env_steps=env_steps(index + 1),
          steps_per_second=steps_per_chunk / seconds,
          elapsed_seconds=elapsed,
          compile_seconds=compile_seconds,
        )
        writer.write(record)
        records.append(record)
        done = index + 1
        if human is not None:  # before the save: the checkpoint holds what was ingested
          state = human.after_chunk(state, done, last=done == num_chunks)
        stop = signals.shared()  # read once: the same answer for the save and the exit
        if done % config.checkpoint.every_chunks == 0 or done == num_chunks or stop:
          meta = {"env_steps": env_steps(done), "elapsed_seconds": elapsed}
          checkpoints.save(done, state, dict(meta, config=checkpoint.config_dict(config)))
        if stop and done < num_chunks:  # in the last chunk, a signal lets the run finish
          checkpoints.wait()
          name = signal.Signals(stop).name
          raise Interrupted(
            stop,
            f"stopped by {name} after chunk {done} of {num_chunks} ({env_steps(done):,} env "
            f"steps); checkpoint saved in {checkpoints.directory}. Rerun the same command "
            "to resume.",
          )
  finally:
    # Each step runs even if one before it fails; the first failure is reported, and an
    # exception already on its way out (Interrupted, NonFiniteError) is not replaced.
    cleanup = [checkpoints.wait, checkpoints.close, writer.close]
    if records and primary:
      plot = os.path.join(workdir, "return.png")

      def plot_and_say_where():
        metrics.plot_returns(records, plot, config.env.name, baseline_records)
        log(f"metrics in {os.path.join(workdir, 'metrics.jsonl')}, their plot in {plot}")

      cleanup.append(plot_and_say_where)
    _run_all(cleanup, log)
  return TrainResult(records, state, trainer)


def _baseline_records(workdir: str | None) -> list[dict] | None:
  if workdir is None:
    return None
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--baseline={workdir} holds no metrics.jsonl: train that run first.")
  return metrics.read_jsonl(path)


def _wait_for(tree) -> None:
  """Waits for a chunk in short sleeps, not in one blocking call, so that a signal's
  handler runs at once (and a second Ctrl-C can end the process mid-chunk)."""
  leaves = jax.tree.leaves(tree)
  while not all(leaf.is_ready() for leaf in leaves):
    time.sleep(0.01)


def _run_all(steps, log) -> None:
  for step in steps:
    try:
      step()
    except Exception as error:  # noqa: BLE001 -- logged; the run's own outcome stands
      log(f"warning: {getattr(step, '__name__', 'cleanup')} failed: {error!r}")


def _check_resumable(config, workdir: str, checkpoints: checkpoint.Checkpointer) -> None:
  """Refuses a workdir whose run cannot be continued with this config."""
  saved = checkpoints.saved_config()
  if saved is None:
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
      raise FileExistsError(
        f"{workdir} already holds a run's metrics.jsonl but no checkpoint to resume from; "
        "choose a new --workdir."
      )
    return
  changes = checkpoint.config_changes(saved, config)
  if changes:
    raise ValueError(
      f"{workdir} holds checkpoints of a run with a different config, which they do not "
      f"fit: {', '.join(changes)}. Rerun with the checkpointed values, or choose a new "
      "--workdir."
    )


def _header(config, trainer, num_chunks, steps_per_chunk, total_env_steps) -> str:
  reward = "the true reward"
  if trainer.preferences is not None:
    teacher = "a person" if config.teacher == "human" else f"a simulated {config.teacher} teacher"
    reward = (
      f"a reward learned from {config.queries.total_labels} labels of {teacher} "
      f"(segments of {trainer.preferences.segment_length} steps)"
    )
  return (
    f"rlhf_jax: {config.env.name} ({trainer.env.backend}) on {jax.devices()[0].platform}, "
    f"{total_env_steps:,} env steps in {num_chunks} chunks of {steps_per_chunk:,}; "
    f"{config.learner.upper()} optimizes {reward}"
  )


def _nonfinite_message(record, state, iteration, env_step, checkpoints) -> str:
  """Names what went bad: the chunk's non-finite metrics and learned parts of the state."""
  bad_metrics = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
  bad_parts = [name for name, bad in jax.device_get(loop.nonfinite_parts(state)).items() if bad]
  last = max(checkpoints.steps(), default=None)
  kept = f"checkpoint {last} in {checkpoints.directory} is kept" if last else "no checkpoint yet"
  return (
    f"NaN or Inf in {', '.join(bad_metrics + bad_parts)} at iteration {iteration} "
    f"(env step {env_step:,}); stopping without saving: {kept}."
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required.")
  if _MULTIHOST.value:
    sharding.initialize_multihost(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.set_verbosity(logging.WARNING)  # keep the console for our progress lines
  try:
    train(_CONFIG.value, _WORKDIR.value, baseline=_BASELINE.value)
  except (ValueError, FileExistsError, FileNotFoundError, NonFiniteError) as error:
    sys.exit(f"error: {error}")
  except Interrupted as interrupted:
    print(interrupted, file=sys.stderr)
    sys.exit(128 + interrupted.signum)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
